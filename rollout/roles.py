"""Who may do what to a rollout (enforced by the API and the admin alike)."""

from controlplane.roles import Role

EDITORS = frozenset({Role.ADMIN, Role.DATA_SCIENTIST, Role.PRODUCT_MANAGER})
RUNNERS = frozenset({Role.ADMIN, Role.PRODUCT_MANAGER})

# Anyone who may edit may also stop: pausing and rolling back must never wait for a permission.
ACTION_ROLES = {
    "create": EDITORS,
    "start": EDITORS,
    "advance": RUNNERS,
    "pause": EDITORS,
    "resume": RUNNERS,
    "rollback": EDITORS,
    "promote": RUNNERS,
    "share": RUNNERS,
}
