"""The endpoint every device polls: deterministic cohorts, safe stages, rollback, isolation."""

import math

import pytest

from registry import services as registry_services
from rollout import services
from rollout.assignment import assign
from rollout.cache import assignment_cache
from rollout.exposures import exposure_buffer_flush
from rollout.models import Exposure
from rollout.poll import device_assignments

pytestmark = pytest.mark.django_db


def start_rollout(setup, stages=(1, 5, 20, 50, 100)):
    rollout = services.rollout_create(
        flow=setup["flow"],
        challengers=[{"model_id": str(setup["challenger"].pk), "stages": list(stages)}],
        actor="test",
    )
    return services.rollout_start(rollout=rollout, actor="test")


def arms_of(key, devices, sdk=(1, 5, 0), *, record=True) -> dict[str, str | None]:
    """Answer many devices through the endpoint's own assignment code (no HTTP per device).

    Without `record`, only the decision is computed (the snapshot the endpoint serves from,
    and the same `assign`), skipping the exposure notes: fast enough for 50 000 devices.
    """
    assignment_cache.clear()
    doc = assignment_cache.app_for_key(key)
    if not record:
        flow = doc.flows["onboarding_upsell"]
        return {device: assign(flow, device, sdk).arm for device in devices}
    arms = {}
    for device in devices:
        body = device_assignments(
            doc, device_id=device, sdk=sdk, sdk_text="1.5.0", base_url="http://testserver/"
        )
        rollout = body["models"][0]["rollout"]
        arms[device] = rollout["arm"] if rollout else None
    return arms


def test_poll__baseline_only__contract_shape(poll, sdk_setup):
    response = poll(sdk_setup["key"], "IDFV-1")

    assert response.status_code == 200
    body = response.json()
    assert body["poll_after_s"] == 3600
    baseline = sdk_setup["baseline"]
    assert body["models"] == [
        {
            "flow": "onboarding_upsell",
            "flow_id": 8362,
            "model_id": str(baseline.pk),
            "url": f"http://testserver/models/{baseline.sha256}/{baseline.pk}.mlmodel",
            "sha256": baseline.sha256,
            "size": baseline.size,
            "format": "mlmodel",
            "signature": None,
            "rollout": None,
        }
    ]


def test_poll__announced_url__serves_announced_bytes(poll, sdk_setup, client):
    import hashlib

    entry = poll(sdk_setup["key"], "IDFV-1").json()["models"][0]

    response = client.get(entry["url"])
    data = b"".join(response.streaming_content)

    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert len(data) == entry["size"]


def test_poll__stages_1_5_20_50__earlier_challenger_devices_stay_and_shares_fit(sdk_setup):
    devices = [f"device-{i:05d}" for i in range(50_000)]
    rollout = start_rollout(sdk_setup)
    previous: set[str] = set()

    for target in (0.01, 0.05, 0.20, 0.50):
        arms = arms_of(sdk_setup["key"], devices, record=False)
        on_challenger = {d for d, arm in arms.items() if arm == "challenger-1"}
        share = len(on_challenger) / len(devices)
        standard_error = math.sqrt(target * (1 - target) / len(devices))
        assert abs(share - target) <= 3 * standard_error, (target, share)
        assert previous <= on_challenger
        assert set(arms.values()) == {"challenger-1", "baseline"}
        previous = on_challenger
        if target < 0.5:
            rollout = services.rollout_advance(rollout=rollout, actor="test")


def test_poll__paused__every_answer_frozen(sdk_setup, poll):
    rollout = start_rollout(sdk_setup)
    rollout = services.rollout_advance(rollout=rollout, actor="test")
    devices = [f"device-{i}" for i in range(2000)]
    before = arms_of(sdk_setup["key"], devices)

    services.rollout_pause(rollout=rollout, actor="test")

    assert arms_of(sdk_setup["key"], devices) == before
    assert (
        poll(sdk_setup["key"], "device-1").json()["models"][0]["rollout"]["arm"]
        == before["device-1"]
    )


def test_poll__rolled_back__every_device_gets_baseline_next_poll(sdk_setup, poll):
    rollout = start_rollout(sdk_setup, stages=(50,))
    devices = [f"device-{i}" for i in range(500)]
    assert "challenger-1" in arms_of(sdk_setup["key"], devices).values()

    services.rollout_rollback(rollout=rollout, actor="test")

    for device in devices[:50]:
        entry = poll(sdk_setup["key"], device).json()["models"][0]
        assert entry["model_id"] == str(sdk_setup["baseline"].pk)
        assert entry["rollout"] is None
    assert set(arms_of(sdk_setup["key"], devices).values()) == {None}


def test_poll__sdk_too_old_for_challenger__never_exposed(sdk_setup, poll):
    start_rollout(sdk_setup, stages=(100,))

    entries = [poll(sdk_setup["key"], f"old-{i}", "1.3.9").json()["models"][0] for i in range(30)]

    assert {e["model_id"] for e in entries} == {str(sdk_setup["baseline"].pk)}
    assert {e["rollout"] is None for e in entries} == {True}
    exposure_buffer_flush()
    assert Exposure.objects.count() == 0


def test_poll__sdk_too_old_for_any_model__bundled_model(sdk_setup, poll):
    sdk_setup["baseline"].__class__.objects.filter(pk=sdk_setup["baseline"].pk).update(
        min_sdk_version="2.0.0"
    )

    entry = poll(sdk_setup["key"], "device-1", "1.0.0").json()["models"][0]

    assert entry["model_id"] is None
    assert entry["url"] is None
    assert entry["flow"] == "onboarding_upsell"


def test_poll__exposures__recorded_once_per_device_and_flushed(sdk_setup, poll, settings):
    start_rollout(sdk_setup, stages=(50,))

    for _ in range(3):
        for i in range(20):
            poll(sdk_setup["key"], f"device-{i}", fresh=False)
    exposure_buffer_flush()

    exposures = Exposure.objects.all()
    assert exposures.count() == 20
    assert {e.arm for e in exposures} <= {"baseline", "challenger-1"}
    assert {e.sdk_version for e in exposures} == {"1.5.0"}


def test_poll__share_lowered__devices_above_back_to_baseline_and_not_comparable(sdk_setup):
    rollout = start_rollout(sdk_setup, stages=(50,))
    devices = [f"device-{i}" for i in range(2000)]
    before = arms_of(sdk_setup["key"], devices)
    exposure_buffer_flush()

    services.rollout_set_share(rollout=rollout, arm="challenger-1", share=1000, actor="test")

    after = arms_of(sdk_setup["key"], devices)
    kept = {d for d in devices if after[d] == "challenger-1"}
    moved = {d for d in devices if before[d] == "challenger-1" and after[d] == "baseline"}
    assert kept <= {d for d in devices if before[d] == "challenger-1"}
    assert moved
    not_comparable = set(
        Exposure.objects.filter(comparable=False).values_list("device_id", flat=True)
    )
    assert not_comparable == moved


def test_poll__after_rollback__devices_confirming_baseline_are_counted(sdk_setup, poll):
    from rollout.selectors import rollout_rollback_progress

    rollout = start_rollout(sdk_setup, stages=(50,))
    devices = [f"device-{i}" for i in range(200)]
    arms = arms_of(sdk_setup["key"], devices)
    challenger_devices = [d for d in devices if arms[d] == "challenger-1"]
    exposure_buffer_flush()
    rollout = services.rollout_rollback(rollout=rollout, actor="test")

    baseline_id = str(sdk_setup["baseline"].pk)
    for device in challenger_devices[:10]:
        poll(sdk_setup["key"], device, current=baseline_id)
    for device in challenger_devices[10:20]:
        poll(sdk_setup["key"], device, current=str(sdk_setup["challenger"].pk))
    exposure_buffer_flush()

    progress = rollout_rollback_progress(rollout=rollout)
    assert progress["challenger_devices"] == len(challenger_devices)
    assert progress["confirmed_baseline"] == 10


def test_poll__during_rollout__polls_sooner(sdk_setup, poll):
    start_rollout(sdk_setup)

    assert poll(sdk_setup["key"], "device-1").json()["poll_after_s"] == 900


def test_poll__right_after_rollback__polls_soonest(sdk_setup, poll):
    rollout = start_rollout(sdk_setup)
    services.rollout_rollback(rollout=rollout, actor="test")

    assert poll(sdk_setup["key"], "device-1").json()["poll_after_s"] == 60


def test_poll__another_apps_key__sees_nothing_of_this_app(sdk_setup, poll):
    other = registry_services.app_create(name="Other app")
    registry_services.flow_create(app=other, name="their_flow", flow_id=1)
    _, other_key = registry_services.sdk_key_create(app=other)

    everything = poll(other_key, "device-1").json()
    named = poll(other_key, "device-1", flow="onboarding_upsell")
    latest = poll(other_key, "device-1", path="/api/v1/sdk/flows/onboarding_upsell/latest")

    assert [m["flow"] for m in everything["models"]] == ["their_flow"]
    assert everything["models"][0]["model_id"] is None
    assert named.status_code == 404
    assert latest.status_code == 404
    assert str(sdk_setup["baseline"].pk) not in named.content.decode() + latest.content.decode()


def test_poll__unchanged_answer__304_with_etag(sdk_setup, poll):
    first = poll(sdk_setup["key"], "device-1")

    second = poll(sdk_setup["key"], "device-1", fresh=False, HTTP_IF_NONE_MATCH=first["ETag"])

    assert second.status_code == 304
    assert second.content == b""
    assert second["ETag"] == first["ETag"]


def test_poll__answer_changed__etag_changes(sdk_setup, poll):
    first = poll(sdk_setup["key"], "device-1")
    registry_services.flow_baseline_set(
        flow=sdk_setup["flow"], model_version=sdk_setup["challenger"], actor="test"
    )

    second = poll(sdk_setup["key"], "device-1", HTTP_IF_NONE_MATCH=first["ETag"])

    assert second.status_code == 200
    assert second["ETag"] != first["ETag"]


def test_latest__simple_client__url_last_component_is_model_file(sdk_setup, client):
    baseline = sdk_setup["baseline"]

    response = client.get(
        "/api/v1/sdk/flows/onboarding_upsell/latest",
        {"key": sdk_setup["key"], "device_id": "IDFV-1", "sdk_version": "1.5.0"},
    )

    assert response.status_code == 200
    assert response.json()["url"].rsplit("/", 1)[-1] == f"{baseline.pk}.mlmodel"
    assert response.json()["sha256"] == baseline.sha256


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"device_id": "", "sdk_version": "1.0.0"}, 400, "invalid_device_id"),
        ({"device_id": "x" * 129, "sdk_version": "1.0.0"}, 400, "invalid_device_id"),
        ({"device_id": "caf\u00e9", "sdk_version": "1.0.0"}, 400, "invalid_device_id"),
        ({"device_id": "d", "sdk_version": "1.0"}, 400, "invalid_sdk_version"),
        ({"device_id": "d", "sdk_version": "v1.0.0"}, 400, "invalid_sdk_version"),
        (
            {"device_id": "d", "sdk_version": "1.0.0", "current": "not-a-uuid"},
            400,
            "invalid_current",
        ),
        ({"device_id": "d", "sdk_version": "1.0.0", "flow": "nope"}, 404, "flow_not_found"),
    ],
)
def test_poll__bad_input__4xx_with_detail(sdk_setup, client, params, status, code):
    response = client.get(
        "/api/v1/sdk/assignments", params, HTTP_AUTHORIZATION=f"Bearer {sdk_setup['key']}"
    )

    assert response.status_code == status
    assert response.json()["error"] == code
    assert response.json()["detail"]


@pytest.mark.parametrize(
    ("headers", "params", "code"),
    [
        ({}, {}, "not_authenticated"),
        ({"HTTP_AUTHORIZATION": "Bearer cohort_sdk_nope"}, {}, "authentication_failed"),
        ({"HTTP_AUTHORIZATION": "Basic abc"}, {}, "authentication_failed"),
        ({}, {"key": "cohort_sdk_nope"}, "authentication_failed"),
    ],
)
def test_poll__missing_or_unknown_key__401(sdk_setup, client, headers, params, code):
    response = client.get(
        "/api/v1/sdk/assignments", {"device_id": "d", "sdk_version": "1.0.0", **params}, **headers
    )

    assert response.status_code == 401
    assert response.json()["error"] == code


def test_poll__revoked_key__401(sdk_setup, poll):
    from registry.models import SdkKey

    registry_services.sdk_key_revoke(key=SdkKey.objects.get())

    assert poll(sdk_setup["key"], "device-1").status_code == 401


def test_poll__post__405(sdk_setup, client):
    response = client.post("/api/v1/sdk/assignments")

    assert response.status_code == 405


def test_poll__steady_state__no_database_query(sdk_setup, poll, django_assert_num_queries):
    start_rollout(sdk_setup, stages=(50,))
    poll(sdk_setup["key"], "device-1")  # warm-up: builds the snapshot and notes the exposure

    with django_assert_num_queries(0):
        for _ in range(20):
            response = poll(sdk_setup["key"], "device-1", fresh=False)
            assert response.status_code == 200


def test_poll__redis_unreachable__keeps_answering_from_snapshot(sdk_setup, poll, settings):
    start_rollout(sdk_setup, stages=(50,))
    first = poll(sdk_setup["key"], "device-1")
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    settings.ROLLOUT_CONFIG_CHECK_SECONDS = 0

    again = poll(sdk_setup["key"], "device-1", fresh=False)
    new_device = poll(sdk_setup["key"], "device-2", fresh=False)

    assert again.status_code == 200
    assert again.content == first.content
    assert new_device.status_code == 200


def test_poll__post_from_a_browser_without_csrf_token__json_405():
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post("/api/v1/sdk/assignments")

    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert response["Allow"] == "GET"
