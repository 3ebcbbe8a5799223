"""
Schemathesis over the whole OpenAPI document (`/api/schema/`): every operation, management and
SDK, is called with generated valid and invalid input on real data (an app with an SDK key, a
flow with two trained models, a running rollout and its analysis). Every answer must be no 5xx,
a documented status with a documented content type, a body that fits the documented schema, and
carry the documented headers.

In process, through the WSGI application, on a fixed budget and seed, so a CI run is
reproducible. Each request runs in a savepoint rolled back after it, so every example meets the
same world (the rollout is still running for each `…/rollback`). The refusals that valid
credentials never meet (401, 403, 429) are called once per operation and held to the document
the same way.
"""

import collections
import re
import uuid

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.fuzz, pytest.mark.django_db]

# Per operation: up to this many drawn examples, plus the coverage phase's fixed cases (each
# parameter's boundaries and wrong types, other methods).
MAX_EXAMPLES = 30

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 13,
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
            # Credentials are the test's (a real token or SDK key), not generated.
            "with-security-parameters": False,
        },
        "checks": {
            "enabled": False,
            "not_a_server_error": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
            "response_headers_conformance": {"enabled": True},
        },
    }
)


class _InTestTransaction:
    """The WSGI application, each request in a savepoint rolled back after it.

    Outside Django's test client, the start and end of a request would close the database
    connection (`close_old_connections`), and the test's transaction with it.
    """

    def __init__(self):
        self.application = WSGIHandler()

    def __call__(self, environ, start_response):
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            with transaction.atomic():
                response = self.application(environ, start_response)
                try:
                    body = b"".join(response)
                finally:
                    response.close()
                transaction.set_rollback(True)
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)
        return [body]


# The document as the server serves it; the calls then go through the savepoints.
schema = schemathesis.openapi.from_wsgi("/api/schema/", WSGIHandler(), config=CONFIG)
schema.app = _InTestTransaction()

# Ids and names of the `world` fixture's objects. Generated values are swapped for these in
# half of the examples, so that they get past the 404 into the views' own checks.
REAL: dict = {}
ANSWERS: collections.Counter = collections.Counter()  # status of every call


def _is_uuid(value) -> bool:
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


def _real_path(parameters: dict) -> dict:
    return {name: REAL.get(name, value) for name, value in parameters.items()}


def _real_body(path: str, body: dict) -> dict:
    """The body with the objects it names made real ones (a malformed id stays malformed)."""
    body = dict(body)
    if path == "/api/v1/sdk/events" and isinstance(body.get("events"), list):
        body["events"] = [
            {
                **event,
                "flow": REAL["flow_name"],
                **({"model_id": REAL["model_id"]} if _is_uuid(event.get("model_id")) else {}),
            }
            if isinstance(event, dict)
            else event
            for event in body["events"]
        ]
        return body
    if _is_uuid(body.get("flow")):
        body["flow"] = REAL["flow_id"]
    if _is_uuid(body.get("model_id")):
        body["model_id"] = REAL["model_id"]
    if isinstance(body.get("challengers"), list):
        body["challengers"] = [
            {**c, "model_id": REAL["challenger"]}
            if isinstance(c, dict) and _is_uuid(c.get("model_id"))
            else c
            for c in body["challengers"]
        ]
    if isinstance(body.get("arm"), str):
        body["arm"] = REAL["arm"]
    if isinstance(body.get("file"), bytes | str):
        body["file"] = REAL["model_file"]  # a real Core ML file (the flow has it already: 200)
    return body


def _real_query(query: dict) -> dict:
    real = {"flow": REAL["flow_name"], "current": REAL["model_id"]}
    return {name: real.get(name, value) for name, value in query.items()}


def _either(generated, real) -> st.SearchStrategy:
    return st.sampled_from([generated, real]) if REAL else st.just(generated)


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    if not isinstance(path_parameters, dict) or not REAL:
        return st.just(path_parameters)
    return _either(path_parameters, _real_path(path_parameters))


@schema.hook
def flatmap_query(context, query):
    if not isinstance(query, dict) or not REAL:
        return st.just(query)
    return _either(query, _real_query(query))


@schema.hook
def flatmap_body(context, body):
    if not isinstance(body, dict) or not REAL:
        return st.just(body)
    return _either(body, _real_body(context.operation.path, body))


def _coverage_on_real_objects(case) -> None:
    """The coverage phase's cases are fixed, not drawn through the hooks above: each gets the
    real objects, except in the parameter it is about."""
    phase = case.meta.phase if case.meta else None
    if phase is None or phase.name != "coverage":
        return
    if case.path_parameters and phase.data.parameter_location != "path":
        case.path_parameters = _real_path(case.path_parameters)
    if isinstance(case.body, dict):
        case.body = _real_body(case.operation.path, case.body)


@schema.hook
def after_call(context, case, response):
    ANSWERS[response.status_code] += 1


@pytest.fixture(scope="module")
def answers_summary(request):
    """One line at the end: how many calls, by status (the fuzz's reach, for the CI log)."""
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None or capture is None or not ANSWERS:
        return
    counts = ", ".join(f"{status}: {n}" for status, n in sorted(ANSWERS.items()))
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"\nAPI fuzz: {sum(ANSWERS.values())} calls ({counts})")


@pytest.fixture
def world(sdk_setup, running, trained_models, django_user_model, answers_summary):
    """The app, flow, models, SDK key and running rollout; an admin's token; one analysis."""
    from controlplane.services import api_token_create
    from experiments.services import rollout_analyze

    flow, baseline, challenger = sdk_setup["flow"], sdk_setup["baseline"], sdk_setup["challenger"]
    admin = django_user_model.objects.create_superuser("fuzz-admin", password="pw-fuzz-admin")
    _, token = api_token_create(user=admin, name="fuzz")
    rollout_analyze(rollout=running, act=False)
    _, sha256, file_name = baseline.storage_key.split("/")
    REAL.update(
        app_id=str(flow.app_id),
        flow_id=str(flow.pk),
        flow_name=flow.name,
        model_id=str(baseline.pk),
        challenger=str(challenger.pk),
        rollout_id=str(running.pk),
        arm=running.arms.get().name,
        sha256=sha256,
        file_name=file_name,
        model_file=trained_models["baseline"].read_bytes(),
    )
    yield {"token": token, "sdk_key": sdk_setup["key"]}
    REAL.clear()


def _credentials(case, world) -> dict[str, dict]:
    """The admin's token, or the app's SDK key: as a bearer token, or as the `key` parameter
    for the coverage phase's polls (the document's other SDK scheme)."""
    path = case.operation.path
    if path.startswith("/api/v1/sdk/"):
        phase = case.meta.phase.name if case.meta else None
        if case.method.upper() == "GET" and phase == "coverage":
            return {"params": {"key": world["sdk_key"]}}
        return {"headers": {"Authorization": f"Bearer {world['sdk_key']}"}}
    if path.startswith("/api/"):
        return {"headers": {"Authorization": f"Bearer {world['token']}"}}
    return {}  # the model files need none


@schema.parametrize()
# `world` is meant to be shared by the examples: each request is rolled back after it.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_api_answers_as_documented(case, world):
    _coverage_on_real_objects(case)
    case.call_and_validate(**_credentials(case, world))


def _operations():
    return [result.ok() for result in schema.get_all_operations()]


def _plain_case(operation, world, *, device_id="fuzz-device"):
    """A well-formed request of the operation on the world's objects."""
    names = re.findall(r"{(\w+)}", operation.path)
    kwargs = {"path_parameters": _real_path({name: "" for name in names})} if names else {}
    if operation.path.startswith("/api/v1/sdk/"):
        device = {"device_id": device_id, "sdk_version": "1.5.0"}
        if operation.method.upper() == "POST":
            kwargs["body"] = {**device, "events": []}
        else:
            kwargs["query"] = device
    return operation.Case(**kwargs)


def _refusals(case, headers: dict, expected: int) -> list[str]:
    """Call; a different status than `expected`, or an answer off the document, is a refusal
    the document does not describe."""
    response = case.call(headers=headers)
    if response.status_code != expected:
        return [f"{case.operation.label}: {response.status_code}, expected {expected}"]
    case.validate_response(response)
    return []


def test_refusals_answer_as_documented(world, make_api_client, settings):
    """The refusals the fuzz does not reach with its valid credentials: no credentials (401),
    a role that may not write (403), and rate limits (429, with Retry-After)."""
    from controlplane.services import api_token_create

    viewer = {"Authorization": f"Bearer {api_token_create(user=make_api_client('viewer').user)[1]}"}
    operations = [op for op in _operations() if op.path.startswith("/api/")]
    wrong = []
    for operation in operations:
        wrong += _refusals(_plain_case(operation, world), {}, 401)
        if operation.method.upper() == "POST" and not operation.path.startswith("/api/v1/sdk/"):
            wrong += _refusals(_plain_case(operation, world), viewer, 403)

    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"api": "1/min", "anon": "1/min"},
    }
    settings.SDK_RATE_LIMIT_PER_DEVICE_PER_MINUTE = 1
    for operation in operations:
        case = _plain_case(operation, world, device_id="limited-device")
        headers = _credentials(case, world)["headers"]
        case.call(headers=headers)  # the minute's one request (of the token, or of the device)
        wrong += _refusals(case, headers, 429)
    assert wrong == []
