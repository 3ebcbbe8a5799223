"""`POST /api/v1/sdk/events`: partial acceptance, exactly-once storage, bounds, never a 500."""

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connections
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.models import DeviceOutcome, OutcomeEvent
from registry import services as registry_services
from rollout import services as rollout_services
from rollout.cache import assignment_cache
from rollout.exposures import exposure_buffer_flush
from rollout.models import Exposure

pytestmark = pytest.mark.django_db

URL = "/api/v1/sdk/events"
FLOW = "onboarding_upsell"


def an_event(**fields) -> dict:
    event = {
        "id": str(uuid.uuid4()),
        "flow": FLOW,
        "model_id": None,
        "outcome": "Purchased",
        "value": 4.99,
        "ts": (timezone.now() - timedelta(minutes=5)).isoformat(),
        "signals": {"battery_level": 0.9, "charging": False},
    }
    event.update(fields)
    return event


def post_body(client, key, body, **headers):
    assignment_cache.clear()
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    return client.post(URL, data=data, content_type="application/json", **auth, **headers)


def post(client, key, events, *, device_id="IDFV-1", sdk_version="1.5.0"):
    body = {"device_id": device_id, "sdk_version": sdk_version, "events": events}
    return post_body(client, key, body)


def start_rollout(setup, stages=(50,)):
    rollout = rollout_services.rollout_create(
        flow=setup["flow"],
        challengers=[{"model_id": str(setup["challenger"].pk), "stages": list(stages)}],
        actor="test",
    )
    return rollout_services.rollout_start(rollout=rollout, actor="test")


# --------------------------------------------------------------------------- happy path


def test_events__valid_batch__accepted_stored_and_answered_with_assignments(
    client, sdk_setup, poll
):
    model_id = str(sdk_setup["baseline"].pk)
    events = [
        an_event(model_id=model_id, ts="2026-11-28T01:00:00Z"),
        an_event(outcome="Dismissed", value=None, signals=None),
        an_event(outcome="Purchased", value=0, signals={"label": "wifi", "n": 3}),
    ]
    before = timezone.now()

    response = post(client, sdk_setup["key"], events)

    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (3, 0, [])
    assert body["assignments"] == poll(sdk_setup["key"], "IDFV-1").json()
    stored = {str(e.event_id): e for e in OutcomeEvent.objects.all()}
    assert set(stored) == {e["id"] for e in events}
    first = stored[events[0]["id"]]
    assert first.app_id == sdk_setup["flow"].app_id
    assert first.flow_id == sdk_setup["flow"].pk
    assert (first.device_id, first.sdk_version) == ("IDFV-1", "1.5.0")
    assert str(first.model_id) == model_id
    assert (first.outcome, first.value) == ("Purchased", 4.99)
    assert first.occurred_at == datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
    assert first.signals == {"battery_level": 0.9, "charging": False}
    assert before <= first.received_at <= timezone.now()
    second = stored[events[1]["id"]]
    assert (second.outcome, second.value, second.signals, second.model_id) == (
        "Dismissed",
        None,
        None,
        None,
    )
    assert stored[events[2]["id"]].signals == {"label": "wifi", "n": 3}
    assert stored[events[2]["id"]].value == 0.0


def test_events__empty_list__200_nothing_stored(client, sdk_setup):
    response = post(client, sdk_setup["key"], [])

    assert response.status_code == 200
    assert (response.json()["accepted"], response.json()["duplicates"]) == (0, 0)
    assert response.json()["assignments"]["models"][0]["flow"] == FLOW
    assert OutcomeEvent.objects.count() == 0


def test_events__model_error__accepted_as_an_outcome(client, sdk_setup):
    event = an_event(outcome="model_error", model_id=str(sdk_setup["challenger"].pk), value=None)

    response = post(client, sdk_setup["key"], [event])

    assert response.json()["accepted"] == 1
    stored = OutcomeEvent.objects.get()
    assert stored.outcome == "model_error"
    assert stored.model_id == sdk_setup["challenger"].pk


def test_events__ts_less_than_a_day_ahead__accepted(client, sdk_setup):
    ahead = (timezone.now() + timedelta(hours=23)).isoformat()

    response = post(client, sdk_setup["key"], [an_event(ts=ahead)])

    assert response.json()["accepted"] == 1
    assert OutcomeEvent.objects.get().occurred_at == datetime.fromisoformat(ahead)


def test_events__offset_time_zone__stored_in_utc(client, sdk_setup):
    response = post(client, sdk_setup["key"], [an_event(ts="2026-11-28T03:30:00+02:00")])

    assert response.json()["accepted"] == 1
    assert OutcomeEvent.objects.get().occurred_at == datetime(2026, 11, 28, 1, 30, tzinfo=UTC)


# --------------------------------------------------------------------------- partial acceptance


def test_events__one_invalid_among_valid__valid_kept_invalid_reported(client, sdk_setup):
    events = [an_event(), an_event(outcome=""), an_event()]

    response = post(client, sdk_setup["key"], events)

    body = response.json()
    assert response.status_code == 200
    assert (body["accepted"], body["duplicates"]) == (2, 0)
    assert len(body["rejected"]) == 1
    assert body["rejected"][0]["index"] == 1
    assert body["rejected"][0]["error"] == "invalid_outcome"
    assert "outcome is required" in body["rejected"][0]["detail"]
    assert {str(i) for i in OutcomeEvent.objects.values_list("event_id", flat=True)} == {
        events[0]["id"],
        events[2]["id"],
    }


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"id": "not-a-uuid"}, "invalid_id"),
        ({"id": None}, "invalid_id"),
        ({"id": 12}, "invalid_id"),
        ({"flow": "no_such_flow"}, "unknown_flow"),
        ({"flow": None}, "invalid_flow"),
        ({"flow": ["onboarding_upsell"]}, "invalid_flow"),
        ({"outcome": None}, "invalid_outcome"),
        ({"outcome": "x" * 101}, "invalid_outcome"),
        ({"outcome": "   "}, "invalid_outcome"),
        ({"outcome": 1}, "invalid_outcome"),
        ({"outcome": "Pur\x00chased"}, "invalid_outcome"),
        ({"ts": "2026-11-28T10:00:00"}, "invalid_ts"),
        ({"ts": "yesterday"}, "invalid_ts"),
        ({"ts": "2026-13-40T10:00:00Z"}, "invalid_ts"),
        ({"ts": 1764324000}, "invalid_ts"),
        ({"ts": "0001-01-01T00:00:00+23:59"}, "invalid_ts"),
        ({"ts": "9999-12-31T23:59:59-23:59"}, "invalid_ts"),
        ("future", "ts_in_future"),
        ("old", "ts_too_old"),
        ({"model_id": "model-1"}, "invalid_model_id"),
        ({"model_id": 5}, "invalid_model_id"),
        ({"value": "4.99"}, "invalid_value"),
        ({"value": True}, "invalid_value"),
        ({"value": float("nan")}, "invalid_value"),
        ({"value": 10**400}, "invalid_value"),
        ({"signals": [1, 2]}, "invalid_signals"),
        ({"signals": {f"s{i}": i for i in range(101)}}, "invalid_signals"),
        ({"signals": {"a": None}}, "invalid_signals"),
        ({"signals": {"a": {"nested": 1}}}, "invalid_signals"),
        ({"signals": {"a": "x" * 201}}, "invalid_signals"),
        ({"signals": {"": 1}}, "invalid_signals"),
        ({"signals": {"a": float("inf")}}, "invalid_signals"),
        ({"signals": {"a": "\ud800"}}, "invalid_signals"),
    ],
)
def test_events__invalid_field__rejected_with_code_and_neighbour_kept(
    client, sdk_setup, fields, error
):
    if fields == "future":
        fields = {"ts": (timezone.now() + timedelta(days=1, minutes=5)).isoformat()}
    elif fields == "old":
        fields = {"ts": (timezone.now() - timedelta(days=90, minutes=5)).isoformat()}
    bad = an_event(**fields)
    good = an_event()

    response = post(client, sdk_setup["key"], [good, bad])

    body = response.json()
    assert response.status_code == 200
    assert body["accepted"] == 1
    assert [(r["index"], r["error"]) for r in body["rejected"]] == [(1, error)]
    assert body["rejected"][0]["detail"]
    assert [str(i) for i in OutcomeEvent.objects.values_list("event_id", flat=True)] == [good["id"]]


@pytest.mark.parametrize("bad", [None, 1, "event", [an_event()]])
def test_events__event_not_an_object__rejected(client, sdk_setup, bad):
    response = post(client, sdk_setup["key"], [bad, an_event()])

    assert response.json()["accepted"] == 1
    assert response.json()["rejected"][0]["index"] == 0
    assert response.json()["rejected"][0]["error"] == "invalid_event"


def test_events__another_apps_flow__rejected_and_nothing_stored(client, sdk_setup):
    other = registry_services.app_create(name="Other app")
    registry_services.flow_create(app=other, name="their_flow", flow_id=1)
    _, other_key = registry_services.sdk_key_create(app=other)

    response = post(client, other_key, [an_event(flow=FLOW)])

    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (0, 0)
    assert [(r["index"], r["error"]) for r in body["rejected"]] == [(0, "unknown_flow")]
    assert OutcomeEvent.objects.count() == 0
    assert [m["flow"] for m in body["assignments"]["models"]] == ["their_flow"]


# --------------------------------------------------------------------------- duplicates


def test_events__same_id_twice_in_a_batch__stored_once_second_is_duplicate(client, sdk_setup):
    event = an_event()
    copy = {**event, "outcome": "Dismissed"}

    response = post(client, sdk_setup["key"], [event, copy, an_event()])

    assert (response.json()["accepted"], response.json()["duplicates"]) == (2, 1)
    assert OutcomeEvent.objects.count() == 2
    assert OutcomeEvent.objects.get(event_id=event["id"]).outcome == "Purchased"


def test_events__batch_sent_again__all_duplicates_nothing_new(client, sdk_setup):
    events = [an_event() for _ in range(5)]
    first = post(client, sdk_setup["key"], events)

    again = post(client, sdk_setup["key"], [*events, an_event()])

    assert (first.json()["accepted"], first.json()["duplicates"]) == (5, 0)
    assert (again.json()["accepted"], again.json()["duplicates"]) == (1, 5)
    assert OutcomeEvent.objects.count() == 6


def test_events__same_event_id_in_two_apps__both_kept(client, sdk_setup):
    other = registry_services.app_create(name="Other app")
    registry_services.flow_create(app=other, name=FLOW, flow_id=1)
    _, other_key = registry_services.sdk_key_create(app=other)
    event = an_event()

    mine = post(client, sdk_setup["key"], [event])
    theirs = post(client, other_key, [event])

    assert (mine.json()["accepted"], theirs.json()["accepted"]) == (1, 1)
    assert OutcomeEvent.objects.filter(event_id=event["id"]).count() == 2


@pytest.mark.django_db(transaction=True)
def test_events__concurrent_resends__each_event_counted_once(sdk_setup):
    assert connections["default"].vendor == "postgresql"
    events = [an_event() for _ in range(120)]
    # Eight devices' retries overlap: each sends a window of the same events, all at once.
    batches = [events[i * 10 : i * 10 + 50] for i in range(8)] + [events] * 4
    barrier = threading.Barrier(len(batches))
    results: list[dict] = [{} for _ in batches]

    def send(index, batch):
        try:
            client = Client()
            barrier.wait(10)
            response = client.post(
                URL,
                data=json.dumps({"device_id": "IDFV-1", "sdk_version": "1.5.0", "events": batch}),
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {sdk_setup['key']}",
            )
            results[index] = {"status": response.status_code, **response.json()}
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=item) for item in enumerate(batches)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert {r["status"] for r in results} == {200}
    assert sum(r["accepted"] for r in results) == len(events)
    assert sum(r["accepted"] + r["duplicates"] for r in results) == sum(map(len, batches))
    assert OutcomeEvent.objects.count() == len(events)


# --------------------------------------------------------------------------- attribution hints


def test_events__flow_without_rollout__stored_as_attributed(client, sdk_setup):
    post(client, sdk_setup["key"], [an_event()])

    assert OutcomeEvent.objects.get().attributed is True


def test_events__running_rollout_exposure_in_ledger__counted_as_they_arrive(client, sdk_setup):
    rollout = start_rollout(sdk_setup)
    arm = post(client, sdk_setup["key"], [], device_id="IDFV-7").json()["assignments"]
    arm = arm["models"][0]["rollout"]["arm"]
    exposure_buffer_flush()
    events = [an_event(), an_event(outcome="Dismissed", value=None)]

    first = post(client, sdk_setup["key"], events, device_id="IDFV-7")
    again = post(client, sdk_setup["key"], [*events, an_event(value=1.0)], device_id="IDFV-7")

    assert (first.json()["accepted"], again.json()["accepted"]) == (2, 1)
    stored = OutcomeEvent.objects.values_list("attributed", "rollout_id", "arm").distinct()
    assert list(stored) == [(True, rollout.pk, arm)]
    row = DeviceOutcome.objects.get(rollout=rollout, device_id="IDFV-7")
    assert (row.arm, row.events, row.conversions, row.value_sum) == (arm, 3, 2, 5.99)
    assert row.outcome_counts == {"Purchased": 2, "Dismissed": 1}


def test_events__running_rollout__left_for_attribution_and_exposure_noted(client, sdk_setup):
    rollout = start_rollout(sdk_setup)

    response = post(client, sdk_setup["key"], [an_event()], device_id="IDFV-7")
    exposure_buffer_flush()

    assert OutcomeEvent.objects.get().attributed is False
    entry = response.json()["assignments"]["models"][0]
    assert entry["rollout"]["id"] == str(rollout.pk)
    assert Exposure.objects.get(device_id="IDFV-7").arm == entry["rollout"]["arm"]


def test_events__two_flows_in_a_batch__each_stored_with_its_flow(client, sdk_setup):
    other = registry_services.flow_create(app=sdk_setup["flow"].app, name="checkout", flow_id=2)
    start_rollout(sdk_setup)
    events = [an_event(), an_event(flow="checkout"), an_event(flow="checkout", value=None)]

    response = post(client, sdk_setup["key"], events)

    assert response.json()["accepted"] == 3
    stored = {str(e.event_id): (e.flow_id, e.attributed) for e in OutcomeEvent.objects.all()}
    assert stored == {
        events[0]["id"]: (sdk_setup["flow"].pk, False),  # a rollout runs: left for attribution
        events[1]["id"]: (other.pk, True),
        events[2]["id"]: (other.pk, True),
    }


def test_events__sdk_too_old_for_rollout__stored_as_attributed(client, sdk_setup):
    start_rollout(sdk_setup)

    response = post(client, sdk_setup["key"], [an_event()], sdk_version="1.3.0")

    assert response.json()["assignments"]["models"][0]["rollout"] is None
    assert OutcomeEvent.objects.get().attributed is True


@pytest.mark.parametrize("end", ["promote", "rollback"])
def test_events__rollout_ended__events_before_the_end_left_for_attribution(client, sdk_setup, end):
    rollout = start_rollout(sdk_setup)
    post(client, sdk_setup["key"], [])  # exposed while it ran
    ended = getattr(rollout_services, f"rollout_{end}")(rollout=rollout, actor="test").ended_at
    skew = timedelta(seconds=300)  # EVENT_CLOCK_SKEW_SECONDS
    before = an_event(ts=(ended - timedelta(hours=2)).isoformat())
    within_skew = an_event(ts=(ended + skew - timedelta(seconds=5)).isoformat())
    after = an_event(ts=(ended + skew + timedelta(seconds=5)).isoformat())

    post(client, sdk_setup["key"], [before, within_skew, after])

    attributed = dict(OutcomeEvent.objects.values_list("event_id", "attributed"))
    assert attributed == {
        uuid.UUID(before["id"]): False,
        uuid.UUID(within_skew["id"]): False,
        uuid.UUID(after["id"]): True,
    }


def test_events__steady_state__two_statements_per_batch(
    client, sdk_setup, django_assert_num_queries
):
    start_rollout(sdk_setup)
    post(client, sdk_setup["key"], [an_event()])  # warm-up: snapshot, flow ids, exposure noted
    exposure_buffer_flush()
    post(client, sdk_setup["key"], [an_event()])  # the device's outcome row exists
    body = {
        "device_id": "IDFV-1",
        "sdk_version": "1.5.0",
        "events": [an_event() for _ in range(50)],
    }

    with django_assert_num_queries(2) as captured:
        response = client.post(
            URL, data=json.dumps(body), content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {sdk_setup['key']}",
        )  # fmt: skip

    assert response.json()["accepted"] == 50
    exposure, write = (q["sql"] for q in captured.captured_queries)
    assert exposure.startswith("SELECT") and "FROM rollout_exposure" in exposure
    assert "FOR NO KEY UPDATE" in write
    assert "INSERT INTO experiments_outcomeevent" in write and "ON CONFLICT" in write
    assert "INSERT INTO experiments_deviceoutcome" in write
    # The warm-up's event came before the exposure was in the ledger: left to the job.
    assert DeviceOutcome.objects.get(device_id="IDFV-1").events == 51


# --------------------------------------------------------------------------- bounds and errors


def test_events__1001_events__413_nothing_stored(client, sdk_setup):
    events = [{"id": str(uuid.uuid4())} for _ in range(1001)]

    response = post(client, sdk_setup["key"], events)

    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert "1000 events" in response.json()["detail"]
    assert OutcomeEvent.objects.count() == 0


def test_events__1000_events__all_accepted(client, sdk_setup):
    events = [an_event(signals=None) for _ in range(1000)]

    response = post(client, sdk_setup["key"], events)

    assert response.json()["accepted"] == 1000
    assert OutcomeEvent.objects.count() == 1000


@pytest.mark.parametrize("size", [1024 * 1024 + 1, 3 * 1024 * 1024])
def test_events__body_over_1_mib__413(client, sdk_setup, size):
    body = {"device_id": "IDFV-1", "sdk_version": "1.5.0", "events": [an_event()], "pad": ""}
    body["pad"] = "x" * (size - len(json.dumps(body)))
    data = json.dumps(body)
    assert len(data) == size

    response = post_body(client, sdk_setup["key"], data)

    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert OutcomeEvent.objects.count() == 0


def test_events__body_exactly_1_mib__accepted(client, sdk_setup):
    body = {"device_id": "IDFV-1", "sdk_version": "1.5.0", "events": [an_event()], "pad": ""}
    body["pad"] = "x" * (1024 * 1024 - len(json.dumps(body)))

    response = post_body(client, sdk_setup["key"], json.dumps(body))

    assert response.status_code == 200
    assert response.json()["accepted"] == 1


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "not_authenticated"),
        ({"HTTP_AUTHORIZATION": "Bearer cohort_sdk_nope"}, "authentication_failed"),
        ({"HTTP_AUTHORIZATION": "Token abc"}, "authentication_failed"),
    ],
)
def test_events__missing_or_unknown_key__401_nothing_stored(client, sdk_setup, headers, code):
    body = {"device_id": "IDFV-1", "sdk_version": "1.5.0", "events": [an_event()]}

    response = post_body(client, None, body, **headers)

    assert response.status_code == 401
    assert response.json()["error"] == code
    assert response["WWW-Authenticate"] == "Bearer"
    assert OutcomeEvent.objects.count() == 0


def test_events__key_as_query_parameter__accepted(client, sdk_setup):
    body = {"device_id": "IDFV-1", "sdk_version": "1.5.0", "events": [an_event()]}

    response = client.post(
        f"{URL}?key={sdk_setup['key']}", data=json.dumps(body), content_type="application/json"
    )

    assert response.status_code == 200
    assert response.json()["accepted"] == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("not json", "invalid_json"),
        (b"\xff\xfe\x00garbage", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ('"text"', "invalid_json"),
        ("[" * 100_000 + "]" * 100_000, "invalid_json"),
        ({"sdk_version": "1.5.0", "events": []}, "invalid_device_id"),
        ({"device_id": 42, "sdk_version": "1.5.0", "events": []}, "invalid_device_id"),
        ({"device_id": "caf\u00e9", "sdk_version": "1.5.0", "events": []}, "invalid_device_id"),
        ({"device_id": "IDFV-1", "events": []}, "invalid_sdk_version"),
        ({"device_id": "IDFV-1", "sdk_version": 1.5, "events": []}, "invalid_sdk_version"),
        ({"device_id": "IDFV-1", "sdk_version": "1.5.0"}, "invalid_events"),
        ({"device_id": "IDFV-1", "sdk_version": "1.5.0", "events": {"a": 1}}, "invalid_events"),
    ],
)
def test_events__bad_body__400_with_code(client, sdk_setup, body, code):
    response = post_body(client, sdk_setup["key"], body)

    assert response.status_code == 400
    assert response.json()["error"] == code
    assert response.json()["detail"]


def test_events__get__405_with_error_body(client, sdk_setup):
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {sdk_setup['key']}")

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json()["error"] == "method_not_allowed"


def test_events__bad_content_length__400(client, sdk_setup):
    response = client.generic(
        "POST",
        URL,
        data=b"{}",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {sdk_setup['key']}",
        CONTENT_LENGTH="lots",
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_content_length"


# --------------------------------------------------------------------------- never a 500

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
_json = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def mostly(valid, garbage=_json):
    """About nine times in ten a valid value, else `garbage` (any JSON value by default).

    Hypothesis favours the ends of a range, so the garbage band sits in the middle.
    """
    return st.integers(0, 99).flatmap(lambda n: garbage if 45 <= n < 55 else valid)


_recent = st.datetimes(
    min_value=datetime(2026, 9, 1), max_value=datetime(2026, 11, 29), timezones=st.timezones()
).map(lambda moment: moment.isoformat())
_required = {
    "id": mostly(st.uuids().map(str)),
    "flow": mostly(st.just(FLOW), st.sampled_from(["their_flow", ""]) | _json),
    "outcome": mostly(
        st.sampled_from(["Purchased", "Dismissed", "model_error"]),
        st.text(max_size=120) | _json,
    ),
    "ts": mostly(_recent),
}
_optional = {
    "model_id": mostly(st.none() | st.uuids().map(str)),
    "value": mostly(st.none() | st.floats(allow_nan=False, allow_infinity=False)),
    "signals": mostly(st.none() | st.dictionaries(st.text(max_size=10), _json_scalars, max_size=5)),
}
_events_strategy = st.lists(
    mostly(st.fixed_dictionaries(_required, optional=_optional)), min_size=1, max_size=8
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=_events_strategy)
def test_events__random_events__200_and_each_event_accounted_for(client, sdk_setup, events):
    OutcomeEvent.objects.all().delete()  # examples share the test's transaction

    response = post(client, sdk_setup["key"], events)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["accepted"] + body["duplicates"] + len(body["rejected"]) == len(events)
    assert [r["index"] for r in body["rejected"]] == sorted({r["index"] for r in body["rejected"]})
    assert OutcomeEvent.objects.count() == body["accepted"]
    for rejection in body["rejected"]:
        assert rejection["error"] and rejection["detail"]


_bodies = (
    st.fixed_dictionaries(
        {},
        optional={
            "device_id": mostly(st.sampled_from(["IDFV-1", "IDFV-2"])),
            "sdk_version": mostly(st.sampled_from(["1.5.0", "1.3.0"])),
            "events": mostly(_events_strategy),
        },
    ).map(json.dumps)
    | _json.map(json.dumps)
    | st.binary(max_size=200)
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_bodies)
def test_events__any_body__never_a_server_error(client, sdk_setup, body):
    response = client.post(
        URL, data=body, content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {sdk_setup['key']}",
    )  # fmt: skip

    assert response.status_code in {200, 400}, (response.status_code, body)
    payload = response.json()
    if response.status_code == 200:
        sent = json.loads(body)["events"]
        assert payload["accepted"] + payload["duplicates"] + len(payload["rejected"]) == len(sent)
        assert payload["assignments"]["models"][0]["flow"] == FLOW
    else:
        assert set(payload) == {"error", "detail"}
        assert payload["detail"]
