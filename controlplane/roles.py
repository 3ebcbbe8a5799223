"""
Roles of people and API tokens, enforced on the server.

A role is a Django group of the same name, so the admin assigns roles and Django's model
permissions follow them. Superusers hold every role.

- viewer: reads everything.
- data_scientist: creates flows, uploads models, drafts and starts rollouts (training pipelines).
- product_manager: sets baselines and runs rollouts (advance, pause, resume, promote).
- admin: everything, including apps and SDK keys.
Anyone but a viewer may pause or roll back: stopping harm must never wait for a permission.
"""

from django.db.models import TextChoices


class Role(TextChoices):
    VIEWER = "viewer", "Viewer"
    DATA_SCIENTIST = "data_scientist", "Data scientist"
    PRODUCT_MANAGER = "product_manager", "Product manager"
    ADMIN = "admin", "Admin"


# Who may do what, one set per capability; the API and the admin both enforce these.
ANY_ROLE = frozenset(Role)
ADMINS = frozenset({Role.ADMIN})
MODEL_AUTHORS = frozenset({Role.ADMIN, Role.DATA_SCIENTIST})  # create flows, upload models
BASELINE_SETTERS = frozenset({Role.ADMIN, Role.PRODUCT_MANAGER})
EDITORS = frozenset({Role.ADMIN, Role.DATA_SCIENTIST, Role.PRODUCT_MANAGER})
RUNNERS = frozenset({Role.ADMIN, Role.PRODUCT_MANAGER})
# Whose home page in the admin is the flows overview (when these are all the roles they hold).
LAND_ON_OVERVIEW = frozenset({Role.PRODUCT_MANAGER, Role.VIEWER})

# Rollout actions. Anyone who may edit may also stop: pausing and rolling back must never
# wait for a permission. Analysing now does only what the judge does every 5 minutes.
ROLLOUT_ACTION_ROLES: dict[str, frozenset[Role]] = {
    "create": EDITORS,
    "start": EDITORS,
    "advance": RUNNERS,
    "pause": EDITORS,
    "resume": RUNNERS,
    "rollback": EDITORS,
    "promote": RUNNERS,
    "share": RUNNERS,
    "analyze": EDITORS,
}

# Django model permissions each role's group carries, for the admin site: "app.model", else
# "app.*", else "*". Periodic tasks and login lockouts (axes) are the admins' alone: the
# sidebar shows them no one else.
_VIEW = ("view",)
_ADMINS_ONLY = {"django_celery_beat.*": (), "axes.*": ()}
GROUP_PERMISSIONS: dict[Role, dict[str, tuple[str, ...]]] = {
    Role.VIEWER: {"*": _VIEW, **_ADMINS_ONLY},
    Role.DATA_SCIENTIST: {
        "*": _VIEW,
        **_ADMINS_ONLY,
        "registry.flow": ("view", "add", "change"),
        "registry.modelversion": ("view", "add", "change"),
        "rollout.rollout": ("view", "add", "change"),
        "rollout.rolloutarm": ("view", "add", "change"),
    },
    Role.PRODUCT_MANAGER: {
        "*": _VIEW,
        **_ADMINS_ONLY,
        "registry.flow": ("view", "change"),
        "rollout.rollout": ("view", "add", "change"),
        "rollout.rolloutarm": ("view", "add", "change"),
        "experiments.alertchannel": ("view", "add", "change", "delete"),
    },
    Role.ADMIN: {"*": ("view", "add", "change", "delete")},
}
_OWN_APPS = ("registry", "rollout", "experiments", "controlplane", "django_celery_beat", "axes")


def user_roles(user) -> frozenset[Role]:
    """Return the roles a user holds (none for an anonymous or inactive user)."""
    if not user or not user.is_authenticated or not user.is_active:
        return frozenset()
    if user.is_superuser:
        return frozenset(Role)
    cached = getattr(user, "_cohort_roles", None)
    if cached is None:
        names = set(user.groups.values_list("name", flat=True))
        cached = frozenset(role for role in Role if role.value in names)
        user._cohort_roles = cached
    return cached


def user_has_role(user, allowed: frozenset[Role]) -> bool:
    return bool(user_roles(user) & allowed)


def role_groups_sync(*, using: str = "default") -> None:
    """Create the role groups and give each the model permissions it carries."""
    from django.contrib.auth.models import Group, Permission

    perms = list(
        Permission.objects.using(using)
        .filter(content_type__app_label__in=_OWN_APPS)
        .select_related("content_type")
    )
    for role, grants in GROUP_PERMISSIONS.items():
        group, _ = Group.objects.using(using).get_or_create(name=role.value)
        chosen = []
        for perm in perms:
            app_label = perm.content_type.app_label
            label = f"{app_label}.{perm.content_type.model}"
            actions = grants.get(label, grants.get(f"{app_label}.*", grants["*"]))
            if perm.codename.split("_", 1)[0] in actions:
                chosen.append(perm)
        group.permissions.set(chosen)
