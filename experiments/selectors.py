"""Read queries of experiments: exposure counts and per-arm, per-stratum sufficient statistics.

Both aggregates apply the counting rule of `experiments.counting` in SQL: a device counts when
its exposure is comparable and its bucket still maps to the exposure's arm (`_counted`), in
the stratum of the phase in which it entered the arm (`_stratum`). A test pins these queries to
the pure functions on random ledgers.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Case, Count, F, FloatField, Q, Sum, Value, When
from django.db.models.functions import Greatest, Least

from rollout.allocation import BASELINE
from rollout.models import Exposure, Rollout, RolloutArm
from rollout.selectors import rollout_phase_starts

from .models import Analysis, DeviceOutcome

#: A device's value sum is clipped to this magnitude in the aggregates, so that no stored
#: value can overflow the sum of squares (events are limited far below it on the way in).
VALUE_SUM_CLIP = 1e12


@dataclass(frozen=True)
class ExposureCounts:
    # arm → stratum → devices that count in the analysis (experiments.counting.device_counts)
    counted: dict[str, dict[int, int]]
    # SDK version → arm → devices first exposed in the current stage (for the SRM check).
    this_stage: dict[str, dict[str, int]]

    @property
    def counted_per_arm(self) -> dict[str, int]:
        return {arm: sum(by_stratum.values()) for arm, by_stratum in self.counted.items()}


def _counted(arms: Sequence[RolloutArm]) -> Q:
    """SQL of `device_counts` for comparable rows: the bucket still maps to the row's arm."""
    held = Q(pk__in=[])
    counted = Q(pk__in=[])
    for arm in arms:
        current = Q(bucket__gte=arm.segment_start, bucket__lt=arm.segment_start + arm.share)
        counted |= Q(arm=arm.name) & current
        held |= current
    return counted | (Q(arm=BASELINE, bucket__isnull=False) & ~held)


def _stratum(phase_starts: Sequence[datetime]) -> Case:
    """SQL of `stratum_of` on the row's `arm_since`."""
    return Case(
        *(
            When(arm_since__lt=start, then=Value(index))
            for index, start in enumerate(phase_starts[1:])
        ),
        default=Value(max(len(phase_starts) - 1, 0)),
    )


def _placement(rollout, arms, phase_starts) -> tuple[list[RolloutArm], list[datetime]]:
    arms = list(rollout.arms.all()) if arms is None else arms
    if phase_starts is None:
        phase_starts = rollout_phase_starts(rollout=rollout)
    return arms, phase_starts


def exposure_counts(
    *,
    rollout: Rollout,
    arms: Sequence[RolloutArm] | None = None,
    phase_starts: Sequence[datetime] | None = None,
) -> ExposureCounts:
    """Counted devices per arm and stratum, and per SDK version and arm in the current stage:
    one scan of the ledger.

    Only devices first exposed in the current stage were assigned under the current shares;
    devices from earlier stages keep the arm they had, so counting them in the SRM check would
    raise a false alarm after every stage change.
    """
    arms, phase_starts = _placement(rollout, arms, phase_starts)
    since = rollout.stage_started_at or rollout.started_at
    this_stage = Q(first_exposed_at__gte=since) if since is not None else Q(pk__isnull=False)
    rows = (
        Exposure.objects.filter(rollout=rollout)
        .annotate(stratum=_stratum(phase_starts))
        .values("sdk_version", "arm", "stratum")
        .annotate(
            counted_n=Count("pk", filter=Q(comparable=True) & _counted(arms)),
            this_stage_n=Count("pk", filter=this_stage),
        )
    )
    counted: dict[str, dict[int, int]] = {}
    by_sdk: dict[str, dict[str, int]] = {}
    for row in rows:
        arm = row["arm"]
        if row["counted_n"]:
            by_stratum = counted.setdefault(arm, {})
            by_stratum[row["stratum"]] = by_stratum.get(row["stratum"], 0) + row["counted_n"]
        if row["this_stage_n"]:
            slice_ = by_sdk.setdefault(row["sdk_version"], {})
            slice_[arm] = slice_.get(arm, 0) + row["this_stage_n"]
    return ExposureCounts(counted=counted, this_stage=by_sdk)


def empty_sums(outcome_labels: Sequence[str]) -> dict:
    return {
        "n": 0,
        "reporting": 0,
        "converted": 0,
        "errored": 0,
        "adopted": 0,
        "value_total": 0.0,
        "value_squares": 0.0,
        "labels": dict.fromkeys(outcome_labels, 0),
    }


def arm_sufficient_statistics(
    *,
    rollout: Rollout,
    counted: dict[str, dict[int, int]],
    outcome_labels: Sequence[str] = (),
    arms: Sequence[RolloutArm] | None = None,
    phase_starts: Sequence[datetime] | None = None,
) -> dict[str, dict[int, dict]]:
    """Per arm and stratum: devices that count (`counted`, from `exposure_counts`) and sums
    over their per-device outcomes.

    A device that never reported anything counts with zero outcomes (intention to treat: a
    model that crashes cannot hide by going silent). Reads one row per reporting device, never
    raw events or polls: an outcome row exists only while its device is comparable and in the
    arm it names (see experiments.attribution), and carries the device's bucket and arm entry.
    """
    arms, phase_starts = _placement(rollout, arms, phase_starts)
    label_counts = {
        f"label_{index}": Count("pk", filter=Q(outcome_counts__has_key=label))
        for index, label in enumerate(outcome_labels)
    }
    clipped = Least(
        Greatest(F("value_sum"), Value(-VALUE_SUM_CLIP)),
        Value(VALUE_SUM_CLIP),
        output_field=FloatField(),
    )
    rows = (
        DeviceOutcome.objects.filter(Q(rollout=rollout) & _counted(arms))
        .annotate(stratum=_stratum(phase_starts))
        .values("arm", "stratum")
        .annotate(
            reporting=Count("pk"),
            converted=Count("pk", filter=Q(conversions__gt=0)),
            errored=Count("pk", filter=Q(model_errors__gt=0)),
            adopted=Count("pk", filter=Q(ran_assigned_model=True)),
            value_total=Sum(clipped),
            value_squares=Sum(clipped * clipped),
            **label_counts,
        )
    )
    result = {
        arm: {stratum: {**empty_sums(outcome_labels), "n": n} for stratum, n in strata.items()}
        for arm, strata in counted.items()
    }
    for row in rows:
        sums = result.get(row["arm"], {}).get(row["stratum"])
        if sums is None:
            continue  # the exposure changed since it was counted: the next look has it right
        sums.update(
            reporting=row["reporting"],
            converted=row["converted"],
            errored=row["errored"],
            adopted=row["adopted"],
            value_total=float(row["value_total"] or 0.0),
            value_squares=float(row["value_squares"] or 0.0),
            labels={label: row[f"label_{index}"] for index, label in enumerate(outcome_labels)},
        )
    return result


def analysis_latest(*, rollout: Rollout) -> Analysis | None:
    return rollout.analyses.order_by("-computed_at", "-id").first()
