"""`POST /api/v1/sdk/events`: an event's `value` is a finite number within ±1e9."""

import json

import pytest

from experiments.events.validation import MAX_EVENT_VALUE_ABS
from experiments.models import OutcomeEvent

from .test_events import an_event, post, post_body

pytestmark = pytest.mark.django_db


def stored_values() -> dict[str, float | None]:
    return {str(e): v for e, v in OutcomeEvent.objects.values_list("event_id", "value")}


def test_value_bound__is_1e9():
    assert MAX_EVENT_VALUE_ABS == 1e9


@pytest.mark.parametrize(
    "value", [1e9, -1e9, 10**9, -(10**9), 1e-300, -1e-300, 0.1234567890123456789, 999999999.999]
)
def test_value_bounds__within_range__accepted_and_stored(client, sdk_setup, value):
    event = an_event(value=value)

    response = post(client, sdk_setup["key"], [event])

    assert response.status_code == 200
    assert (response.json()["accepted"], response.json()["rejected"]) == (1, [])
    assert stored_values() == {event["id"]: float(value)}


@pytest.mark.parametrize("value", [1e9 * 1.0000001, -1e9 * 1.0000001, 10**9 + 1, 1e154, -1e300])
def test_value_bounds__outside_range__rejected_neighbours_kept(client, sdk_setup, value):
    before, bad, after = an_event(value=1e9), an_event(value=value), an_event(value=-2.5)

    response = post(client, sdk_setup["key"], [before, bad, after])

    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (2, 0)
    assert [(r["index"], r["error"]) for r in body["rejected"]] == [(1, "value_out_of_range")]
    assert "between -1,000,000,000 and 1,000,000,000" in body["rejected"][0]["detail"]
    assert stored_values() == {before["id"]: 1e9, after["id"]: -2.5}


def test_value_bounds__integer_beyond_a_double__invalid_value_never_a_500(client, sdk_setup):
    good, bad = an_event(), an_event(value=0)
    events = json.dumps([good, bad]).replace('"value": 0,', f'"value": {10**400},')
    assert str(10**400) in events
    body = f'{{"device_id": "IDFV-1", "sdk_version": "1.5.0", "events": {events}}}'

    response = post_body(client, sdk_setup["key"], body)

    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert [(r["index"], r["error"]) for r in response.json()["rejected"]] == [(1, "invalid_value")]
    assert stored_values() == {good["id"]: 4.99}


@pytest.mark.parametrize("raw", ["1e400", "-1e400", "NaN", "Infinity", "-Infinity"])
def test_value_bounds__not_finite__keeps_invalid_value(client, sdk_setup, raw):
    good, bad = an_event(), an_event(value=0)
    events = json.dumps([good, bad]).replace('"value": 0,', f'"value": {raw},')
    body = f'{{"device_id": "IDFV-1", "sdk_version": "1.5.0", "events": {events}}}'

    response = post_body(client, sdk_setup["key"], body)

    assert response.status_code == 200
    assert [(r["index"], r["error"]) for r in response.json()["rejected"]] == [(1, "invalid_value")]
    assert stored_values() == {good["id"]: 4.99}


@pytest.mark.parametrize("value", [True, False])
def test_value_bounds__boolean__invalid_value_not_one(client, sdk_setup, value):
    good, bad = an_event(), an_event(value=value)

    response = post(client, sdk_setup["key"], [good, bad])

    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert [(r["index"], r["error"]) for r in response.json()["rejected"]] == [(1, "invalid_value")]
    assert stored_values() == {good["id"]: 4.99}


def test_value_bounds__many_out_of_range_in_one_batch__each_reported(client, sdk_setup):
    events = [an_event(value=v) for v in (1.0, 2e9, -3e9, 4.0, 5e200)]

    response = post(client, sdk_setup["key"], events)

    body = response.json()
    assert body["accepted"] == 2
    assert [(r["index"], r["error"]) for r in body["rejected"]] == [
        (1, "value_out_of_range"),
        (2, "value_out_of_range"),
        (4, "value_out_of_range"),
    ]
    assert stored_values() == {events[0]["id"]: 1.0, events[3]["id"]: 4.0}
