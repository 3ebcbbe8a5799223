"""What an event counts for (experiments.events.rules; no database)."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from experiments.events.rules import (
    ExposureView,
    RolloutTerms,
    StoredEvent,
    Tally,
    countable_until,
)
from rollout.assignment import FlowDoc

START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)
TERMS = RolloutTerms(
    id=uuid.uuid4(),
    flow_id=uuid.uuid4(),
    started_at=START,
    ended_at=None,
    window=timedelta(hours=72),
    positive_label="Purchased",
    arm_models={"baseline": "b", "challenger-1": "c"},
)
ENTERED = START + timedelta(hours=1)
EXPOSURE = ExposureView(arm="challenger-1", arm_since=ENTERED, comparable=True, bucket=42)


@pytest.mark.parametrize(
    ("moment", "comparable", "counts"),
    [
        (ENTERED + timedelta(hours=1), True, True),
        (ENTERED - timedelta(minutes=4), True, True),  # within the clock skew
        (ENTERED - timedelta(minutes=6), True, False),  # before the device entered its arm
        (ENTERED + timedelta(hours=73), True, False),  # after the attribution window
        (ENTERED + timedelta(hours=1), False, False),  # the device changed arm
    ],
)
def test_counts__moment_and_comparability__decide(moment, comparable, counts):
    exposure = EXPOSURE._replace(comparable=comparable)

    assert TERMS.counts(moment, exposure, SKEW) is counts


def test_tally__events_of_the_arm__summed_and_merged_with_the_stored_row():
    tally = Tally("challenger-1", ENTERED, 42)
    for outcome, model, value in (("Purchased", "c", 4.5), ("model_error", None, None)):
        tally.add(
            StoredEvent(1, TERMS.flow_id, "d", model, outcome, value, ENTERED, ENTERED), TERMS
        )
    tally.merge(
        {"arm": "challenger-1", "events": 3, "conversions": 1, "value_sum": 1.0,
         "model_errors": 0, "ran_assigned_model": False, "outcome_counts": {"Purchased": 1},
         "last_event_at": ENTERED + timedelta(hours=2)}
    )  # fmt: skip
    tally.merge({"arm": "baseline", "events": 99})  # another arm's row is stale: ignored

    assert (tally.events, tally.conversions, tally.model_errors) == (5, 2, 1)
    assert tally.value_sum == 5.5 and tally.ran_assigned_model
    assert tally.outcome_counts == {"Purchased": 2, "model_error": 1}
    assert tally.last_event_at == ENTERED + timedelta(hours=2)


def test_countable_until__no_rollout_ever__any_time_settles_at_once():
    flow = FlowDoc(name="f", flow_id=1, baseline=None)

    assert countable_until(flow, (1, 5, 0), SKEW) == datetime.min.replace(tzinfo=UTC)


def test_countable_until__ended_rollout__its_end_plus_the_skew():
    flow = FlowDoc(name="f", flow_id=1, baseline=None, last_ended_at=START)

    assert countable_until(flow, (1, 5, 0), SKEW) == START + SKEW
