"""
Who may call each management endpoint: every endpoint under /api/v1/ (the SDK's aside), for
every kind of caller, on the objects of two apps, each cell its own test.

docs/api.md is the specification: its endpoint table's *who* column names the roles each
endpoint allows, and its conventions say the rest: no token or a revoked one is a 401, a role
that isn't allowed a 403 (a user with no role included, even for a read), superusers hold every
role, and a role holds for every app (there is no per-app membership, so app B's objects answer
exactly as app A's). Three things must agree, and a test pins each pair:

- ENDPOINTS below and the URLconf: an endpoint added without a row here fails;
- ENDPOINTS and the docs' table: a role changed on one side only fails;
- ENDPOINTS and the running code: every cell is a real request with real objects.

An allowed write sends a valid request and must succeed (2xx): a 400 would hide whether the
role was checked at all. The objects are built once for the module inside one transaction
that is rolled back at its end; each cell runs in a savepoint of its own (pytest-django's
`db`), so every cell starts from the same draft, running and paused rollouts.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import override_settings
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from controlplane.roles import Role

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"

ADMIN, DATA_SCIENTIST = Role.ADMIN, Role.DATA_SCIENTIST
PRODUCT_MANAGER, VIEWER = Role.PRODUCT_MANAGER, Role.VIEWER
ANY_ROLE = frozenset(Role)
ADMIN_ONLY = frozenset({ADMIN})
ADMIN_DS = frozenset({ADMIN, DATA_SCIENTIST})
ADMIN_PM = frozenset({ADMIN, PRODUCT_MANAGER})
EDITORS = frozenset({ADMIN, DATA_SCIENTIST, PRODUCT_MANAGER})

# What each kind of caller holds; None: refused as unauthenticated before roles are looked at.
CALLER_ROLES: dict[str, frozenset[Role] | None] = {
    "anonymous": None,
    "revoked_token": None,  # an admin's token, revoked
    "no_role": frozenset(),
    "viewer": frozenset({VIEWER}),
    "data_scientist": frozenset({DATA_SCIENTIST}),
    "product_manager": frozenset({PRODUCT_MANAGER}),
    "admin": frozenset({ADMIN}),
    "superuser": ANY_ROLE,  # in no group: holds every role by being a superuser
}
APPS = ("app_a", "app_b")


@dataclass(frozen=True)
class Call:
    """One request: the URL, its body, and which field of the answer names the target object."""

    url: str
    body: dict | None = None
    multipart: bool = False
    about: tuple[str, object] | None = None


@dataclass(frozen=True)
class AppObjects:
    """One app's objects, in the states the endpoints need to succeed."""

    app: object
    drafted: object  # a flow with a baseline, a challenger and a draft rollout
    draft: object
    running: object  # a running rollout at its first of two stages, analysed once
    paused: object
    challenger: object  # the running rollout's challenger
    drafted_challenger: object
    empty: object  # a flow with no model yet
    model_bytes: bytes


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # as the URLconf spells it
    allowed: frozenset[Role]  # as docs/api.md's table says
    success: int
    call: Callable[[AppObjects | None], Call]
    per_app: bool = True

    def __str__(self):
        return f"{self.method} {self.path.removeprefix('/api/v1')}"


def _rollout_action(action: str, rollout: str, **body):
    def call(objs):
        target = getattr(objs, rollout)
        return Call(
            f"/api/v1/rollouts/{target.pk}/{action}",
            {"reason": "matrix", **body},
            about=("id", str(target.pk)),
        )

    return call


ENDPOINTS = [
    Endpoint("GET", "/api/v1/apps", ANY_ROLE, 200, lambda o: Call("/api/v1/apps"), per_app=False),
    Endpoint(
        "POST",
        "/api/v1/apps",
        ADMIN_ONLY,
        201,
        lambda o: Call("/api/v1/apps", {"name": "Matrix New App"}, about=("name", "Matrix New App")),
        per_app=False,
    ),
    Endpoint(
        "POST",
        "/api/v1/apps/<app_id>/sdk-keys",
        ADMIN_ONLY,
        201,
        lambda o: Call(
            f"/api/v1/apps/{o.app.pk}/sdk-keys", {"name": "ios"}, about=("app_id", str(o.app.pk))
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/apps/<app_id>/bundle-manifest",
        ANY_ROLE,
        200,
        lambda o: Call(f"/api/v1/apps/{o.app.pk}/bundle-manifest", about=("app_id", str(o.app.pk))),
    ),
    Endpoint("GET", "/api/v1/apps/<app_id>/flows", ANY_ROLE, 200, lambda o: Call(f"/api/v1/apps/{o.app.pk}/flows")),
    Endpoint(
        "POST",
        "/api/v1/apps/<app_id>/flows",
        ADMIN_DS,
        201,
        lambda o: Call(
            f"/api/v1/apps/{o.app.pk}/flows",
            {"name": "matrix_new_flow", "flow_id": 4242, "positive_label": "Purchased"},
            about=("app_id", str(o.app.pk)),
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/flows/<flow_id>",
        ANY_ROLE,
        200,
        lambda o: Call(f"/api/v1/flows/{o.drafted.pk}", about=("id", str(o.drafted.pk))),
    ),
    Endpoint("GET", "/api/v1/flows/<flow_id>/models", ANY_ROLE, 200, lambda o: Call(f"/api/v1/flows/{o.drafted.pk}/models")),
    Endpoint(
        "POST",
        "/api/v1/flows/<flow_id>/models",
        ADMIN_DS,
        201,
        lambda o: Call(
            f"/api/v1/flows/{o.empty.pk}/models",
            {"file": SimpleUploadedFile("baseline.mlmodel", o.model_bytes), "notes": "matrix"},
            multipart=True,
            about=("flow", str(o.empty.pk)),
        ),
    ),
    Endpoint(
        "POST",
        "/api/v1/flows/<flow_id>/baseline",
        ADMIN_PM,
        200,
        lambda o: Call(
            f"/api/v1/flows/{o.drafted.pk}/baseline",
            {"model_id": str(o.drafted_challenger.pk), "reason": "matrix"},
            about=("baseline_model_id", str(o.drafted_challenger.pk)),
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/models/<model_id>",
        ANY_ROLE,
        200,
        lambda o: Call(
            f"/api/v1/models/{o.challenger.pk}", about=("model_id", str(o.challenger.pk))
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/rollouts",
        ANY_ROLE,
        200,
        lambda o: Call(f"/api/v1/rollouts?flow={o.running.flow_id}"),
    ),
    Endpoint(
        "POST",
        "/api/v1/rollouts",
        EDITORS,
        201,
        lambda o: Call(
            "/api/v1/rollouts",
            {"flow": str(o.drafted.pk), "challengers": [{"model_id": str(o.drafted_challenger.pk)}]},
            about=("flow", str(o.drafted.pk)),
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/rollouts/<rollout_id>",
        ANY_ROLE,
        200,
        lambda o: Call(f"/api/v1/rollouts/{o.running.pk}", about=("id", str(o.running.pk))),
    ),
    Endpoint("POST", "/api/v1/rollouts/<rollout_id>/start", EDITORS, 200, _rollout_action("start", "draft")),
    Endpoint("POST", "/api/v1/rollouts/<rollout_id>/advance", ADMIN_PM, 200, _rollout_action("advance", "running")),
    Endpoint("POST", "/api/v1/rollouts/<rollout_id>/pause", EDITORS, 200, _rollout_action("pause", "running")),
    Endpoint("POST", "/api/v1/rollouts/<rollout_id>/resume", ADMIN_PM, 200, _rollout_action("resume", "paused")),
    Endpoint("POST", "/api/v1/rollouts/<rollout_id>/rollback", EDITORS, 200, _rollout_action("rollback", "running")),
    Endpoint("POST", "/api/v1/rollouts/<rollout_id>/promote", ADMIN_PM, 200, _rollout_action("promote", "running")),
    Endpoint(
        "POST",
        "/api/v1/rollouts/<rollout_id>/share",
        ADMIN_PM,
        200,
        _rollout_action("share", "running", arm="challenger-1", share=2),
    ),
    Endpoint(
        "POST",
        "/api/v1/rollouts/<rollout_id>/analyze",
        EDITORS,
        200,
        lambda o: Call(
            f"/api/v1/rollouts/{o.running.pk}/analyze", about=("rollout_id", str(o.running.pk))
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/rollouts/<rollout_id>/analysis",
        ANY_ROLE,
        200,
        lambda o: Call(
            f"/api/v1/rollouts/{o.running.pk}/analysis", about=("rollout_id", str(o.running.pk))
        ),
    ),
]  # fmt: skip


def _blank_parameters(path: str) -> str:
    """`/flows/<flow id>/models` and `/flows/<str:flow_id>/models` name the same endpoint."""
    return re.sub(r"<[^>]+>", "<>", path)


def _urlconf_endpoints() -> set[tuple[str, str]]:
    """Every (method, path) the URLconf serves under /api/v1/, the SDK's endpoints aside."""
    found = set()

    def walk(patterns, prefix):
        for entry in patterns:
            route = prefix + str(entry.pattern)
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, route)
            elif isinstance(entry, URLPattern) and route.startswith("api/v1/"):
                if route.startswith("api/v1/sdk/"):
                    continue
                view_class = entry.callback.view_class
                path = "/" + re.sub(r"<\w+:(\w+)>", r"<\1>", route)
                for method in ("get", "post", "put", "patch", "delete"):
                    if hasattr(view_class, method):
                        found.add((method.upper(), path))

    walk(get_resolver().url_patterns, "")
    return found


_ROLE_WORDS = {
    "admin": ADMIN,
    "data scientist": DATA_SCIENTIST,
    "product manager": PRODUCT_MANAGER,
    "viewer": VIEWER,
}


def _documented_roles() -> dict[tuple[str, str], frozenset[Role]]:
    """The endpoint table of docs/api.md: (method, path with blank parameters) -> roles."""
    rows = {}
    for line in API_DOC.read_text().splitlines():
        row = re.match(r"\| `(GET|POST|PUT|PATCH|DELETE) (/api/v1/[^`]*)` \| ([^|]+) \|", line)
        if not row or row[2].startswith("/api/v1/sdk/"):
            continue
        who = row[3].strip()
        if who == "any role":
            roles = ANY_ROLE
        else:
            roles = frozenset(_ROLE_WORDS[word.strip()] for word in who.split(","))
        rows[(row[1], _blank_parameters(row[2]))] = roles
    return rows


def test_matrix__has_one_row_per_management_endpoint_of_the_urlconf():
    rows = [(e.method, e.path) for e in ENDPOINTS]

    assert len(rows) == len(set(rows))
    assert set(rows) == _urlconf_endpoints()


def test_matrix__allows_the_roles_the_docs_table_names():
    matrix = {(e.method, _blank_parameters(e.path)): e.allowed for e in ENDPOINTS}

    assert matrix == _documented_roles()


# --- the objects, built once ---------------------------------------------------------------


def _callers() -> dict[str, str | None]:
    """A token's plaintext for each kind of caller (None: no Authorization header)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from controlplane.roles import role_groups_sync
    from controlplane.services import api_token_create, api_token_revoke

    role_groups_sync()
    users = get_user_model().objects
    tokens: dict[str, str | None] = {"anonymous": None}
    for caller in ("no_role", "viewer", "data_scientist", "product_manager", "admin"):
        user = users.create_user(username=f"matrix_{caller}", is_staff=True)
        if caller != "no_role":
            user.groups.add(Group.objects.get(name=caller))
        tokens[caller] = api_token_create(user=user, name="matrix")[1]
    superuser = users.create_user(username="matrix_superuser", is_staff=True, is_superuser=True)
    tokens["superuser"] = api_token_create(user=superuser, name="matrix")[1]
    revoked_admin = users.create_user(username="matrix_revoked", is_staff=True)
    revoked_admin.groups.add(Group.objects.get(name="admin"))
    token, tokens["revoked_token"] = api_token_create(user=revoked_admin, name="matrix")
    api_token_revoke(token=token)
    return tokens


def _app_objects(name: str, models: dict[str, Path]) -> AppObjects:
    from registry import services as registry
    from rollout import services as rollouts

    app = registry.app_create(name=name)
    flows, challengers = {}, {}
    for number, flow_name in enumerate(("drafted", "running", "paused", "empty"), start=1):
        flow = registry.flow_create(
            app=app, name=flow_name, flow_id=number, positive_label="Purchased"
        )
        flows[flow_name] = flow
        if flow_name == "empty":
            continue
        uploaded = {}
        for model in ("baseline", "challenger"):
            with models[model].open("rb") as file:
                uploaded[model], _ = registry.model_version_upload(
                    flow=flow, file=file, filename=f"{model}.mlmodel"
                )
        registry.flow_baseline_set(flow=flow, model_version=uploaded["baseline"], actor="matrix")
        challengers[flow_name] = uploaded["challenger"]

    def drafted_rollout(flow_name):
        return rollouts.rollout_create(
            flow=flows[flow_name],
            challengers=[{"model_id": str(challengers[flow_name].pk), "stages": [5, 50]}],
            actor="matrix",
        )

    running = rollouts.rollout_start(rollout=drafted_rollout("running"), actor="matrix")
    paused = rollouts.rollout_start(rollout=drafted_rollout("paused"), actor="matrix")
    paused = rollouts.rollout_pause(rollout=paused, actor="matrix")
    return AppObjects(
        app=app,
        drafted=flows["drafted"],
        draft=drafted_rollout("drafted"),
        running=running,
        paused=paused,
        challenger=challengers["running"],
        drafted_challenger=challengers["drafted"],
        empty=flows["empty"],
        model_bytes=models["baseline"].read_bytes(),
    )


@dataclass(frozen=True)
class World:
    tokens: dict[str, str | None]
    apps: dict[str, AppObjects]

    def client(self, caller: str) -> APIClient:
        client = APIClient()
        if self.tokens[caller] is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {self.tokens[caller]}")
        return client


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, trained_models, tmp_path_factory):
    """Callers and two apps' objects, in one transaction rolled back after the module."""
    media = tmp_path_factory.mktemp("matrix-media")
    from django.conf import settings

    storages = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(media)},
        },
    }
    with (
        django_db_blocker.unblock(),
        override_settings(STORAGES=storages, MODEL_FILES_BASE_URL="", S3_BUCKET=""),
        transaction.atomic(),
    ):
        built = World(
            tokens=_callers(),
            apps={
                "app_a": _app_objects("Matrix App A", trained_models),
                "app_b": _app_objects("Matrix App B", trained_models),
            },
        )
        for objs in built.apps.values():
            # The analysis GET …/analysis reads; analysing a rollout with no data changes nothing.
            response = built.client("admin").post(f"/api/v1/rollouts/{objs.running.pk}/analyze")
            assert response.status_code == 200, response.content
            objs.running.refresh_from_db()
            assert objs.running.state == "running"
        yield built
        transaction.set_rollback(True)


# --- the cells -----------------------------------------------------------------------------


def _expected_status(endpoint: Endpoint, caller: str) -> int:
    roles = CALLER_ROLES[caller]
    if roles is None:
        return 401
    return endpoint.success if roles & endpoint.allowed else 403


CELLS = [
    pytest.param(endpoint, caller, app, id=f"{endpoint} | {caller} | {app or 'no app'}")
    for endpoint in ENDPOINTS
    for caller in CALLER_ROLES
    for app in (APPS if endpoint.per_app else (None,))
]


@pytest.mark.parametrize(("endpoint", "caller", "app"), CELLS)
def test_access(world, db, endpoint, caller, app):
    call = endpoint.call(world.apps[app] if app else None)
    client = world.client(caller)
    if endpoint.method == "GET":
        response = client.get(call.url)
    else:
        response = client.post(
            call.url, call.body or {}, format="multipart" if call.multipart else "json"
        )

    expected = _expected_status(endpoint, caller)
    assert response.status_code == expected, response.content
    body = response.json()
    if expected == 401:
        assert body["error"] == (
            "not_authenticated" if caller == "anonymous" else "authentication_failed"
        )
        assert response["WWW-Authenticate"] == "Bearer"
    elif expected == 403:
        assert body["error"] == "permission_denied"
    elif call.about is not None:
        field, value = call.about
        assert body[field] == value
