"""
Which model a device runs, decided from a cached snapshot of the app (no Django, no queries).

Contract:
- A device is *eligible* for a rollout when its SDK version can run every model in it (the
  baseline and every challenger). An eligible device is hashed into the rollout's bucket space
  and gets its arm's model: `rollout = (id, arm)`.
- Any other device is not in the experiment: it gets the newest model of the flow's baseline
  history that its SDK can run, or none (`None`: run the model bundled in the app).
- A rolled-back or completed rollout is simply absent from the snapshot, so every device is
  back on the (new) baseline on its next poll.
"""

from dataclasses import dataclass, field
from datetime import datetime

from . import hashing
from .allocation import ArmAllocation, arm_for_bucket
from .arms import BASELINE

SdkVersion = tuple[int, int, int]


@dataclass(frozen=True)
class ModelEntry:
    model_id: str
    storage_key: str
    sha256: str
    size: int
    format: str
    min_sdk: SdkVersion
    max_sdk: SdkVersion | None = None

    def runs_on(self, sdk: SdkVersion) -> bool:
        return self.min_sdk <= sdk and (self.max_sdk is None or sdk <= self.max_sdk)


@dataclass(frozen=True)
class ArmDoc:
    allocation: ArmAllocation
    model: ModelEntry


@dataclass(frozen=True)
class RolloutDoc:
    id: str
    state: str
    salt: str
    baseline: ModelEntry | None
    arms: tuple[ArmDoc, ...]
    started_at: datetime | None = None

    def placement(self, device_id: str) -> tuple[int, str | None]:
        """The device's bucket in this rollout, and the challenger arm it falls in (None: the
        baseline). The only place the server hashes a device."""
        bucket = hashing.bucket(self.salt, device_id)
        return bucket, arm_for_bucket(bucket, [arm.allocation for arm in self.arms])

    def runs_on(self, sdk: SdkVersion) -> bool:
        models = [arm.model for arm in self.arms]
        if self.baseline is not None:
            models.append(self.baseline)
        return all(model.runs_on(sdk) for model in models)


@dataclass(frozen=True)
class FlowDoc:
    name: str
    flow_id: int
    baseline: ModelEntry | None
    # Earlier baselines, newest first: what a device too old for the current one falls back to.
    fallbacks: tuple[ModelEntry, ...] = ()
    rollout: RolloutDoc | None = None
    # Rollouts rolled back recently: polls confirm that their devices have the baseline again.
    rolled_back: tuple[RolloutDoc, ...] = field(default=())
    # When the flow's latest rollout ended (completed or rolled back): events that happened
    # before then may still count for it, however late they arrive.
    last_ended_at: datetime | None = None
    # How outcomes count (see experiments.events.attribution): the label of a conversion, and the
    # hours after entering an arm within which an outcome counts for it.
    positive_label: str = ""
    attribution_window_hours: int = 72


@dataclass(frozen=True)
class Assignment:
    flow: FlowDoc
    model: ModelEntry | None
    rollout_id: str | None = None
    arm: str | None = None
    bucket: int | None = None


def baseline_for(flow: FlowDoc, sdk: SdkVersion) -> ModelEntry | None:
    """Return the newest baseline-or-earlier model the SDK can run, or None (bundled model)."""
    for candidate in (flow.baseline, *flow.fallbacks):
        if candidate is not None and candidate.runs_on(sdk):
            return candidate
    return None


def assign(flow: FlowDoc, device_id: str, sdk: SdkVersion) -> Assignment:
    rollout = flow.rollout
    if rollout is not None and rollout.runs_on(sdk):
        bucket, arm_name = rollout.placement(device_id)
        if arm_name is None:
            return Assignment(flow, rollout.baseline, rollout.id, BASELINE, bucket)
        model = next(arm.model for arm in rollout.arms if arm.allocation.name == arm_name)
        return Assignment(flow, model, rollout.id, arm_name, bucket)
    return Assignment(flow, baseline_for(flow, sdk))
