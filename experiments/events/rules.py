"""
What an outcome event counts for (pure: no Django).

Both ways events are counted use these rules: as they arrive (`count_on_arrival`, for the
device's batch) and later by the attribution job (`attribution`). `RolloutTerms.counts` is the
one test of whether an event counts for the arm of the device's exposure (it applies
`experiments.counting`); a `Tally` sums one device's events in one arm, to add to its stored
row; `countable_until` says when no rollout can count a device's events of a flow any more, so
they are stored as settled at once.
"""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from rollout.arms import BASELINE
from rollout.assignment import FlowDoc, SdkVersion
from rollout.metrics import MODEL_ERROR

from ..counting import event_counts, rollout_covers


@dataclass(frozen=True)
class StoredEvent:
    """An outcome event as the attribution job reads it from the database."""

    id: int
    flow_id: uuid.UUID
    device_id: str
    model_id: str | None
    outcome: str
    value: float | None
    occurred_at: datetime
    received_at: datetime


class ExposureView(NamedTuple):
    """A device's exposure in one rollout, as attribution reads it."""

    arm: str
    arm_since: datetime
    comparable: bool
    bucket: int


@dataclass(frozen=True)
class RolloutTerms:
    """A rollout as attribution sees it: when it ran, its window, and what counts."""

    id: uuid.UUID
    flow_id: uuid.UUID
    started_at: datetime | None
    ended_at: datetime | None  # None while it runs
    window: timedelta
    positive_label: str
    arm_models: dict[str, str | None]  # arm → the model id it serves (text)

    def covers(self, moment: datetime, skew: timedelta) -> bool:
        return bool(
            rollout_covers(
                moment=moment, started_at=self.started_at, ended_at=self.ended_at, skew=skew
            )
        )

    def counts(self, moment: datetime, exposure: ExposureView, skew) -> bool:
        """Whether an outcome at `moment` counts for the arm of this exposure of the device."""
        return bool(
            event_counts(
                moment=moment,
                arm_since=exposure.arm_since,
                comparable=exposure.comparable,
                started_at=self.started_at,
                ended_at=self.ended_at,
                window=self.window,
                skew=skew,
            )
        )


@dataclass
class Tally:
    """Outcomes of one device in one arm, to add to its stored row."""

    arm: str
    # The exposure's, so the analysis can place the device without reading the ledger.
    arm_since: datetime
    bucket: int
    events: int = 0
    conversions: int = 0
    value_sum: float = 0.0
    model_errors: int = 0
    ran_assigned_model: bool = False
    outcome_counts: dict[str, int] = field(default_factory=dict)
    last_event_at: datetime | None = None

    def add(self, event: StoredEvent, rollout: RolloutTerms) -> None:
        self.events += 1
        if rollout.positive_label and event.outcome == rollout.positive_label:
            self.conversions += 1
        if event.outcome == MODEL_ERROR:
            self.model_errors += 1
        self.value_sum += event.value or 0.0
        if event.model_id == rollout.arm_models.get(self.arm):
            self.ran_assigned_model = True
        self.outcome_counts[event.outcome] = self.outcome_counts.get(event.outcome, 0) + 1
        if self.last_event_at is None or event.occurred_at > self.last_event_at:
            self.last_event_at = event.occurred_at

    def merge(self, row: dict) -> None:
        """Fold in the device's stored totals (same arm only: another arm's are stale)."""
        if row["arm"] != self.arm:
            return
        self.events += row["events"]
        self.conversions += row["conversions"]
        self.value_sum += row["value_sum"]
        self.model_errors += row["model_errors"]
        self.ran_assigned_model = self.ran_assigned_model or row["ran_assigned_model"]
        for outcome, count in (row["outcome_counts"] or {}).items():
            self.outcome_counts[outcome] = self.outcome_counts.get(outcome, 0) + count
        if row["last_event_at"] is not None and (
            self.last_event_at is None or row["last_event_at"] > self.last_event_at
        ):
            self.last_event_at = row["last_event_at"]


def tally_add(
    tallies: dict, key: tuple, exposure: ExposureView, event: StoredEvent, rollout: RolloutTerms
) -> None:
    tally = tallies.get(key)
    if tally is None or tally.arm != exposure.arm:
        tally = tallies[key] = Tally(exposure.arm, exposure.arm_since, exposure.bucket)
    tally.add(event, rollout)


_ANY_TIME = datetime.min.replace(tzinfo=UTC)


def countable_until(flow: FlowDoc, sdk: SdkVersion, skew: timedelta) -> datetime | None:
    """The time after which no rollout can count this device's events of this flow (as of the
    snapshot), or None when any of them may count (a rollout is active and can run here).

    Events after it are stored as attributed already, so the attribution job never looks at
    them. An ended rollout (completed or rolled back) still counts the events that happened
    before its end, give or take the clock skew, however late they arrive.
    """
    if flow.rollout is not None and flow.rollout.runs_on(sdk):
        return None
    if flow.last_ended_at is None:
        return _ANY_TIME
    return flow.last_ended_at + skew


def rollout_terms_of(flow: FlowDoc, flow_id: uuid.UUID) -> RolloutTerms:
    """The flow's active rollout as attribution sees it, from the app's snapshot."""
    rollout = flow.rollout
    arm_models = {BASELINE: rollout.baseline.model_id if rollout.baseline else None}
    arm_models.update((arm.allocation.name, arm.model.model_id) for arm in rollout.arms)
    return RolloutTerms(
        id=uuid.UUID(rollout.id),
        flow_id=flow_id,
        started_at=rollout.started_at,
        ended_at=None,
        window=timedelta(hours=flow.attribution_window_hours),
        positive_label=flow.positive_label,
        arm_models=arm_models,
    )
