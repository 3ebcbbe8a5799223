"""Checking a device's batch, event by event (experiments.events.validation; no database)."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from experiments.events.validation import MAX_EVENT_VALUE_ABS, events_validate
from rollout.assignment import FlowDoc

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
FLOWS = {"onboarding_upsell": FlowDoc(name="onboarding_upsell", flow_id=8362, baseline=None)}


def event(**fields) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "flow": "onboarding_upsell",
        "outcome": "Purchased",
        "ts": (NOW - timedelta(minutes=5)).isoformat(),
        **fields,
    }


def rejection_of(raw) -> str:
    validated = events_validate([raw], flows=FLOWS, now=NOW)
    assert validated.events == []
    [rejected] = validated.rejected
    assert rejected.index == 0 and rejected.detail
    return rejected.error


def test_validate__valid_event__kept_with_canonical_id_and_utc_time():
    raw = event(id=str(uuid.uuid4()).upper(), value=4.99, signals={"battery": 0.5, "ok": True})

    [kept] = events_validate([raw], flows=FLOWS, now=NOW).events

    assert kept.event_id == raw["id"].lower()
    assert kept.occurred_at == NOW - timedelta(minutes=5)
    assert (kept.value, kept.signals) == (4.99, {"battery": 0.5, "ok": True})


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"id": "not-a-uuid"}, "invalid_id"),
        ({"flow": "nope"}, "unknown_flow"),
        ({"flow": 3}, "invalid_flow"),
        ({"outcome": "Pur\x00chased"}, "invalid_outcome"),
        ({"outcome": " "}, "invalid_outcome"),
        ({"ts": "2026-12-01T10:00:00"}, "invalid_ts"),
        ({"ts": (NOW + timedelta(days=2)).isoformat()}, "ts_in_future"),
        ({"ts": (NOW - timedelta(days=91)).isoformat()}, "ts_too_old"),
        ({"model_id": "abc"}, "invalid_model_id"),
        ({"value": True}, "invalid_value"),
        ({"value": MAX_EVENT_VALUE_ABS * 2}, "value_out_of_range"),
        ({"signals": {"a": [1]}}, "invalid_signals"),
        ({"signals": {"a": "\ud800"}}, "invalid_signals"),
    ],
)
def test_validate__one_thing_wrong__rejected_with_its_code(change, code):
    assert rejection_of(event(**change)) == code


def test_validate__bad_neighbour_and_repeated_id__valid_ones_kept_once():
    first = event()
    validated = events_validate([first, "junk", dict(first), event()], flows=FLOWS, now=NOW)

    assert [e.index for e in validated.events] == [0, 3]
    assert [(r.index, r.error) for r in validated.rejected] == [(1, "invalid_event")]
    assert validated.repeated == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(st.lists(json_values | st.fixed_dictionaries({}, optional={
    "id": json_values, "flow": st.sampled_from(["onboarding_upsell", "x"]) | json_values,
    "outcome": json_values, "ts": json_values, "value": json_values, "signals": json_values,
}), max_size=5))  # fmt: skip
def test_validate__any_json__never_raises_and_accounts_for_every_event(raw_events):
    validated = events_validate(raw_events, flows=FLOWS, now=NOW)

    assert len(validated.events) + len(validated.rejected) + validated.repeated == len(raw_events)
