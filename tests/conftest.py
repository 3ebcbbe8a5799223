"""Fixtures shared by the whole suite: users with roles and tokens, API clients, real Core ML models."""

from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "coreml"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not CORPUS.is_dir():
        pytest.fail(f"The Core ML corpus is missing: expected it at {CORPUS}")
    return CORPUS


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory):
    """Real .mlmodel files trained with scikit-learn and converted with coremltools, once per run.

    `baseline` and `challenger` share the demo interface (input: MultiArray double [2]);
    `three_signals` reads a third signal, so it does not fit a demo flow.
    """
    from registry import training

    folder = tmp_path_factory.mktemp("trained")
    models = {}
    for name, columns, seed, bias in (
        ("baseline", None, 0, 0.0),
        ("challenger", None, 1, -0.2),
    ):
        rows = training.demo_rows(300, seed=seed, purchase_bias=bias)
        names, x, y = _columns(rows, columns)
        result = training.train_outcome_classifier(names, x, y, seed=seed, n_estimators=10)
        path = folder / f"{name}.mlmodel"
        path.write_bytes(result.model_bytes)
        models[name] = path
    rows = training.demo_rows(300, seed=2)
    for index, row in enumerate(rows):
        row["Screen Brightness"] = (index % 10) / 10
    names, x, y = _columns(rows, None)
    result = training.train_outcome_classifier(names, x, y, seed=2, n_estimators=10)
    models["three_signals"] = folder / "three_signals.mlmodel"
    models["three_signals"].write_bytes(result.model_bytes)
    return models


def _columns(rows, columns):
    columns = columns or [c for c in rows[0] if c != "Outcome"]
    x = [[float(row[c]) for c in columns] for row in rows]
    y = [row["Outcome"] for row in rows]
    return columns, x, y


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """Model files of one test go to a folder of its own (Django resets storages on the change)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }
    settings.MODEL_FILES_BASE_URL = ""
    settings.S3_BUCKET = ""
    return tmp_path / "media"


def _user_with_role(django_user_model, role: str):
    from django.contrib.auth.models import Group

    from controlplane.roles import role_groups_sync

    role_groups_sync()
    user = django_user_model.objects.create_user(
        username=role, password="pw-" + role, is_staff=True
    )
    user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def make_api_client(django_user_model):
    """Return a DRF client authenticated with a fresh token of a user holding the given role."""
    from rest_framework.test import APIClient

    from controlplane.services import api_token_create

    def make(role: str | None):
        client = APIClient()
        if role is None:
            return client
        user = django_user_model.objects.filter(username=role).first() or _user_with_role(
            django_user_model, role
        )
        token, plaintext = api_token_create(user=user, name="test")
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
        client.user, client.token = user, token
        return client

    return make


@pytest.fixture
def admin_api(make_api_client):
    return make_api_client("admin")


@pytest.fixture
def ds_api(make_api_client):
    return make_api_client("data_scientist")


@pytest.fixture
def pm_api(make_api_client):
    return make_api_client("product_manager")


@pytest.fixture
def viewer_api(make_api_client):
    return make_api_client("viewer")


@pytest.fixture
def demo_app(db):
    from registry import services

    return services.app_create(name="Demo Shop", bundle_identifiers=["com.example.shop"])


@pytest.fixture
def demo_flow(demo_app):
    from registry import services

    return services.flow_create(
        app=demo_app, name="onboarding_upsell", flow_id=8362, positive_label="Purchased"
    )


@pytest.fixture(autouse=True)
def fresh_process_state(settings):
    """Each test starts with empty in-process caches and an empty test Redis database."""
    from django.core.cache import cache

    from rollout.cache import assignment_cache
    from rollout.exposures import direct, remembered

    assignment_cache.clear()
    remembered.clear()
    direct.clear()
    if settings.REDIS_URL:
        cache.clear()  # the test Redis database (15): buffers and the config version included
    yield
    assignment_cache.clear()
    remembered.clear()
    direct.clear()


@pytest.fixture
def sdk_setup(demo_flow, trained_models):
    """An app with an SDK key, a flow with a baseline and a challenger model uploaded."""
    from registry import services

    baseline, _ = services.model_version_upload(
        flow=demo_flow, file=trained_models["baseline"].open("rb"), filename="b.mlmodel"
    )
    challenger, _ = services.model_version_upload(
        flow=demo_flow,
        file=trained_models["challenger"].open("rb"),
        filename="c.mlmodel",
        min_sdk_version="1.4.0",
    )
    services.flow_baseline_set(flow=demo_flow, model_version=baseline, actor="test")
    _, key = services.sdk_key_create(app=demo_flow.app)
    demo_flow.refresh_from_db()
    return {"flow": demo_flow, "baseline": baseline, "challenger": challenger, "key": key}


@pytest.fixture
def poll(client):
    """GET the assignments of a device, as the SDK does; `fresh` drops the process cache first.

    Tests in a rolled-back transaction never commit, so the config version's copy in Redis,
    made on commit, does not move, and the database row is read only every few seconds: they
    drop the cache instead. The bump itself is tested in test_config_version.py.
    """
    from rollout.cache import assignment_cache

    def get(key, device_id, sdk_version="1.5.0", *, fresh=True, path=None, **params):
        if fresh:
            assignment_cache.clear()
        headers = {name: params.pop(name) for name in list(params) if name.startswith("HTTP_")}
        return client.get(
            path or "/api/v1/sdk/assignments",
            {"device_id": device_id, "sdk_version": sdk_version, **params},
            HTTP_AUTHORIZATION=f"Bearer {key}",
            **headers,
        )

    return get


@pytest.fixture
def webhook_receiver():
    """A local HTTP server that records the JSON bodies POSTed to it (an alert receiver)."""
    import json as jsonlib
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            received.append(jsonlib.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.received = received
    yield server
    server.shutdown()
