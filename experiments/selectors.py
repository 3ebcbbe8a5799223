"""Read queries of experiments: exposure counts and per-arm, per-stratum sufficient statistics.

Both aggregates apply the counting rule of `experiments.counting` in SQL: a device counts when
its exposure is comparable and its bucket still maps to the exposure's arm (`_counted`), in
the stratum of the phase in which it entered the arm (`_entered_before`, `_stratum_of`). A test
pins these queries to the pure functions on random ledgers.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import (
    BooleanField,
    Case,
    Count,
    Exists,
    ExpressionWrapper,
    F,
    FloatField,
    OuterRef,
    Q,
    Sum,
    Value,
    When,
    Window,
)
from django.db.models.functions import Greatest, Least, Mod, NullIf, RowNumber

from rollout.arms import BASELINE
from rollout.metrics import PRIMARY
from rollout.models import ACTIVE_STATES, Exposure, Rollout, RolloutArm, RolloutEvent
from rollout.selectors import PHASE_ACTIONS, rollout_phase_starts
from rollout.shares import percent_text

from .analysis import empty_sums
from .models import Analysis, DeviceOutcome

#: A device's value sum is clipped to this magnitude in the aggregates, so that no stored
#: value can overflow the sum of squares (events are limited far below it on the way in).
VALUE_SUM_CLIP = 1e12
#: ... and counts as 0 below this magnitude: PostgreSQL raises an error ("value out of range:
#: underflow") when a product of nonzero floats rounds to 0, as the square of 5e-324 does.
VALUE_SUM_TINY = 1e-150


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
    counted = Q(pk__in=[])
    held: list[tuple[int, int]] = []
    for arm in sorted(arms, key=lambda a: a.segment_start):
        start, end = arm.segment_start, arm.segment_start + arm.share
        counted |= Q(arm=arm.name, bucket__gte=start, bucket__lt=end)
        if start == end:
            continue
        if held and held[-1][1] == start:  # adjacent: one range tests faster than two
            held[-1] = (held[-1][0], end)
        else:
            held.append((start, end))
    baseline = Q(arm=BASELINE, bucket__isnull=False)
    for start, end in held:
        baseline &= ~Q(bucket__gte=start, bucket__lt=end)
    return counted | baseline


def _entered_before(phase_starts: Sequence[datetime]) -> dict[str, ExpressionWrapper]:
    """SQL of `stratum_of`: one flag per phase start after the first, whether the row's
    `arm_since` is before it; `_stratum_of` reads the stratum off the flags.

    The aggregates group by these flags rather than by one CASE of them: the groups are the
    same, but PostgreSQL estimates a boolean grouping column at 2 values, while it takes a CASE
    on `arm_since` to have as many as `arm_since` has (about one per device). With that
    estimate it sorted every row, on disk, instead of hashing a few dozen groups, and the
    analysis of a million devices took 1.4-1.9 s instead of about 0.5 s (docs/performance.md).
    """
    return {
        f"before_{index}": ExpressionWrapper(Q(arm_since__lt=start), output_field=BooleanField())
        for index, start in enumerate(phase_starts[1:])
    }


def _stratum_of(row: dict, phase_starts: Sequence[datetime]) -> int:
    """The stratum of a row grouped by `_entered_before`: the first phase that ended after the
    device entered its arm, else the last (as `stratum_of`; a NULL `arm_since` is the last)."""
    ends = len(phase_starts) - 1
    return next((index for index in range(ends) if row[f"before_{index}"]), max(ends, 0))


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
    before = _entered_before(phase_starts)
    rows = (
        Exposure.objects.filter(rollout=rollout)
        .annotate(**before)
        .values("sdk_version", "arm", *before)
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
            stratum = _stratum_of(row, phase_starts)
            by_stratum[stratum] = by_stratum.get(stratum, 0) + row["counted_n"]
        if row["this_stage_n"]:
            slice_ = by_sdk.setdefault(row["sdk_version"], {})
            slice_[arm] = slice_.get(arm, 0) + row["this_stage_n"]
    return ExposureCounts(counted=counted, this_stage=by_sdk)


def arm_sufficient_statistics(
    *,
    rollout: Rollout,
    counted: dict[str, dict[int, int]],
    outcome_labels: Sequence[str] = (),
    with_values: bool = True,
    arms: Sequence[RolloutArm] | None = None,
    phase_starts: Sequence[datetime] | None = None,
) -> dict[str, dict[int, dict]]:
    """Per arm and stratum: devices that count (`counted`, from `exposure_counts`) and sums
    over their per-device outcomes.

    A device that never reported anything counts with zero outcomes (intention to treat: a
    model that crashes cannot hide by going silent). Reads one row per reporting device, never
    raw events or polls: an outcome row exists only while its device is comparable and in the
    arm it names (see experiments.events.attribution), and carries the device's bucket and arm entry.
    The value sums are computed only `with_values` (a rollout judged on `value`): they cost a
    third of the query.
    """
    arms, phase_starts = _placement(rollout, arms, phase_starts)
    label_counts = {
        f"label_{index}": Count("pk", filter=Q(outcome_counts__has_key=label))
        for index, label in enumerate(outcome_labels)
    }
    clipped = Case(
        # NaN sorts above every number in PostgreSQL, so the clip would make it +1e12: a
        # device whose value sum is not a number counts as 0, like a device without values.
        # (±Infinity is clipped like any huge value.)
        When(Q(value_sum=math.nan), then=Value(0.0)),
        When(Q(value_sum__gt=-VALUE_SUM_TINY, value_sum__lt=VALUE_SUM_TINY), then=Value(0.0)),
        default=Least(
            Greatest(F("value_sum"), Value(-VALUE_SUM_CLIP)),
            Value(VALUE_SUM_CLIP),
            output_field=FloatField(),
        ),
        output_field=FloatField(),
    )
    before = _entered_before(phase_starts)
    rows = (
        DeviceOutcome.objects.filter(Q(rollout=rollout) & _counted(arms))
        .annotate(**before)
        .values("arm", *before)
        .annotate(
            reporting=Count("pk"),
            converted=Count("pk", filter=Q(conversions__gt=0)),
            errored=Count("pk", filter=Q(model_errors__gt=0)),
            adopted=Count("pk", filter=Q(ran_assigned_model=True)),
            **(
                {"value_total": Sum(clipped), "value_squares": Sum(clipped * clipped)}
                if with_values
                else {}
            ),
            **label_counts,
        )
    )
    result = {
        arm: {stratum: {**empty_sums(outcome_labels), "n": n} for stratum, n in strata.items()}
        for arm, strata in counted.items()
    }
    for row in rows:
        sums = result.get(row["arm"], {}).get(_stratum_of(row, phase_starts))
        if sums is None:
            continue  # the exposure changed since it was counted: the next look has it right
        # Two groups can share a stratum (a NULL `arm_since` is in the last one): add them up.
        for key in ("reporting", "converted", "errored", "adopted"):
            sums[key] += row[key]
        if with_values:
            sums["value_total"] += float(row["value_total"] or 0.0)
            sums["value_squares"] += float(row["value_squares"] or 0.0)
        for index, label in enumerate(outcome_labels):
            sums["labels"][label] += row[f"label_{index}"]
    return result


def rollouts_to_judge() -> list[str]:
    return [
        str(pk)
        for pk in Rollout.objects.filter(state__in=ACTIVE_STATES).values_list("pk", flat=True)
    ]


def analysis_latest(*, rollout: Rollout) -> Analysis | None:
    return rollout.analyses.order_by("-computed_at", "-id").first()


# --- For the console: the create form's power estimate, the rollout page's segments -----------


@dataclass(frozen=True)
class BaselineRate:
    """The baseline's conversion as one analysis measured it."""

    rate: float
    devices: int
    analysis_id: int
    rollout_id: str
    computed_at: datetime


def flow_baseline_rate(*, flow) -> BaselineRate | None:
    """The baseline's conversion in the flow's latest analysis that measured one (of its last
    ten), or None before any."""
    analyses = (
        Analysis.objects.filter(rollout__flow=flow)
        .order_by("-computed_at", "-id")
        .only("pk", "rollout_id", "computed_at", "body")[:10]
    )
    for analysis in analyses:
        arms = analysis.body.get("arms", [])
        baseline = next((arm for arm in arms if arm.get("arm") == BASELINE), {})
        conversion = baseline.get("metrics", {}).get(PRIMARY, {})
        if conversion.get("mean") is not None and conversion.get("n"):
            return BaselineRate(
                rate=conversion["mean"],
                devices=conversion["n"],
                analysis_id=analysis.pk,
                rollout_id=str(analysis.rollout_id),
                computed_at=analysis.computed_at,
            )
    return None


@dataclass(frozen=True)
class ExposureRate:
    """New devices of a flow over a span: devices first exposed in one rollout."""

    devices: int
    since: datetime
    until: datetime
    rollout_id: str

    @property
    def per_day(self) -> float:
        return self.devices / ((self.until - self.since).total_seconds() / 86400)


def flow_exposure_rate(
    *, flow, now: datetime, window: timedelta = timedelta(days=7)
) -> ExposureRate | None:
    """Devices first exposed in the first `window` of the flow's latest started rollout (at
    least an hour of it), or None. While a rollout runs, every eligible device that polls is
    exposed, to the baseline's arm or a challenger's: this is the flow's traffic of devices."""
    rollout = (
        Rollout.objects.filter(flow=flow, started_at__isnull=False).order_by("-started_at").first()
    )
    if rollout is None:
        return None
    since = rollout.started_at
    until = min(rollout.ended_at or now, now, since + window)
    if until - since < timedelta(hours=1):
        return None
    devices = Exposure.objects.filter(
        rollout=rollout, first_exposed_at__gte=since, first_exposed_at__lt=until
    ).count()
    if not devices:
        return None
    return ExposureRate(devices=devices, since=since, until=until, rollout_id=str(rollout.pk))


def exposures_by_sdk(*, rollout: Rollout) -> dict[str, dict[str, dict[str, int]]]:
    """SDK version (at first exposure) → arm → devices `exposed`, how many are still
    `comparable`, and how many of those reported a model error (`errored`): one query.

    A device's outcome row exists only while it is comparable, so `errored` counts among the
    comparable devices."""
    errored = DeviceOutcome.objects.filter(
        rollout=rollout, device_id=OuterRef("device_id"), model_errors__gt=0
    )
    rows = (
        Exposure.objects.filter(rollout=rollout)
        .values("sdk_version", "arm")
        .annotate(
            exposed_n=Count("pk"),
            comparable_n=Count("pk", filter=Q(comparable=True)),
            errored_n=Count("pk", filter=Q(comparable=True) & Q(Exists(errored))),
        )
    )
    result: dict[str, dict[str, dict[str, int]]] = {}
    for row in rows:
        result.setdefault(row["sdk_version"], {})[row["arm"]] = {
            "exposed": row["exposed_n"],
            "comparable": row["comparable_n"],
            "errored": row["errored_n"],
        }
    return result


# --- For the console: the rollout page's charts ------------------------------------------------

#: Audit-log actions the charts mark: every change of shares (`PHASE_ACTIONS`), and the ends.
STAGE_CHANGE_ACTIONS = (*PHASE_ACTIONS, "rollback", "promote")
_HISTORY_METRIC_KEYS = ("diff", "sequential_ci", "direction", "insufficient")


def analysis_history(*, rollout: Rollout, limit: int = 240) -> list[dict]:
    """The rollout's stored analyses, oldest first, thinned evenly to at most `limit` (never
    fewer than 2: the first and the last are always kept). Each is {"look": its number from 1,
    "at", "decision", "interval_level", "arms": [{"arm", "exposed", "share", "metrics": {name:
    {"diff", "sequential_ci", "direction", "insufficient"}}}]}, read from the body.

    One query. The thinning is in SQL, so a rollout judged every 5 minutes for weeks does not
    send every body: look r of n (from 0) is kept when some k/(limit-1) of the way from the
    first to the last falls in (r-1, r], i.e. when (r*(limit-1)) mod (n-1) < limit-1.
    """
    limit = max(2, int(limit))
    order = [F("computed_at").asc(), F("id").asc()]
    rows = (
        Analysis.objects.filter(rollout=rollout)
        .annotate(look=Window(RowNumber(), order_by=order), looks=Window(Count("id")))
        # NULLIF: a lone analysis has n-1 = 0, and is kept by the first condition.
        .annotate(phase=Mod((F("look") - 1) * (limit - 1), NullIf(F("looks") - 1, 0)))
        .filter(Q(looks__lte=limit) | Q(phase__lt=limit - 1))
        .order_by(*order)
        .values_list("look", "computed_at", "body")
    )
    return [_history_point(look, at, body or {}) for look, at, body in rows]


def _history_point(look: int, at: datetime, body: dict) -> dict:
    return {
        "look": look,
        "at": at,
        "decision": body.get("decision"),
        "interval_level": (body.get("thresholds") or {}).get("interval_level"),
        "arms": [
            {
                "arm": arm.get("arm"),
                "exposed": arm.get("exposed", 0),
                "share": arm.get("share"),
                "metrics": {
                    name: {key: (metric or {}).get(key) for key in _HISTORY_METRIC_KEYS}
                    for name, metric in (arm.get("metrics") or {}).items()
                },
            }
            for arm in body.get("arms", [])
        ],
    }


def rollout_stage_changes(*, rollout: Rollout) -> list[tuple[datetime, str]]:
    """When the rollout's shares changed or it ended, from its audit log, oldest first, each
    with a label for a chart: "start 5 %", "→ 20 %", "challenger-2 → 2 %", "rolled back",
    "promoted". (`rollout.selectors.rollout_phase_starts` reads the same rows' times only.)"""
    events = (
        RolloutEvent.objects.filter(rollout=rollout, action__in=STAGE_CHANGE_ACTIONS)
        .order_by("at", "pk")
        .values_list("at", "action", "before", "after")
    )
    return [
        (at, _stage_change_label(action, before, after)) for at, action, before, after in events
    ]


def _stage_change_label(action: str, before: dict, after: dict) -> str:
    if action == "rollback":
        return "rolled back"
    if action == "promote":
        return "promoted"
    arms = (after or {}).get("arms") or {}
    if action == "start":
        return f"start {_shares_text(arms, sorted(arms))}".rstrip()
    previous = (before or {}).get("arms") or {}
    changed = sorted(
        name
        for name, arm in arms.items()
        if arm.get("share") != previous.get(name, {}).get("share")
    ) or sorted(arms)
    text = _shares_text(arms, changed)
    if action == "set_share" and len(arms) > 1 and len(changed) == 1:
        return f"{changed[0]} → {text}"
    return f"→ {text}".rstrip()


def _shares_text(arms: dict, names: list[str]) -> str:
    """The arms' share, "20 %", or each arm's when they differ: "challenger-1 20 %, …"."""
    shares = [arms[name].get("share", 0) for name in names]
    if len(set(shares)) <= 1:
        return percent_text(shares[0]) if shares else ""
    return ", ".join(
        f"{name} {percent_text(share)}" for name, share in zip(names, shares, strict=True)
    )
