"""Read queries of experiments: exposure counts and per-arm sufficient statistics."""

from dataclasses import dataclass

from django.db.models import Count, F, Q, Sum

from rollout.models import Exposure, Rollout

from .models import Analysis, DeviceOutcome


@dataclass(frozen=True)
class ExposureCounts:
    comparable: dict[str, int]  # arm → comparable exposed devices
    # SDK version → arm → devices first exposed in the current stage (for the SRM check).
    this_stage: dict[str, dict[str, int]]


def exposure_counts(*, rollout: Rollout) -> ExposureCounts:
    """Exposed devices per arm, and per SDK version and arm in the current stage: one scan.

    Only devices first exposed in the current stage were assigned under the current shares;
    devices from earlier stages keep the arm they had, so counting them in the SRM check would
    raise a false alarm after every stage change.
    """
    since = rollout.stage_started_at or rollout.started_at
    this_stage = Q(first_exposed_at__gte=since) if since is not None else Q(pk__isnull=False)
    rows = (
        Exposure.objects.filter(rollout=rollout)
        .values("sdk_version", "arm")
        .annotate(
            comparable_n=Count("pk", filter=Q(comparable=True)),
            this_stage_n=Count("pk", filter=this_stage),
        )
    )
    comparable: dict[str, int] = {}
    by_sdk: dict[str, dict[str, int]] = {}
    for row in rows:
        arm = row["arm"]
        if row["comparable_n"]:
            comparable[arm] = comparable.get(arm, 0) + row["comparable_n"]
        if row["this_stage_n"]:
            by_sdk.setdefault(row["sdk_version"], {})[arm] = row["this_stage_n"]
    return ExposureCounts(comparable=comparable, this_stage=by_sdk)


def arm_sufficient_statistics(
    *, rollout: Rollout, exposed: dict[str, int], outcome_labels: tuple[str, ...] = ()
) -> dict:
    """Per arm: comparable exposed devices (`exposed`, from `exposure_counts`) and sums over
    their per-device outcomes.

    A device that never reported anything counts as exposed with zero outcomes (intention to
    treat: a model that crashes cannot hide by going silent). Reads one row per reporting
    device, never raw events or polls: an outcome row exists only while its device is
    comparable and in the arm it names (see experiments.attribution).
    """
    label_counts = {
        f"label_{index}": Count("pk", filter=Q(outcome_counts__has_key=label))
        for index, label in enumerate(outcome_labels)
    }
    rows = (
        DeviceOutcome.objects.filter(rollout=rollout)
        .values("arm")
        .annotate(
            reporting=Count("pk"),
            converted=Count("pk", filter=Q(conversions__gt=0)),
            errored=Count("pk", filter=Q(model_errors__gt=0)),
            adopted=Count("pk", filter=Q(ran_assigned_model=True)),
            value_total=Sum("value_sum"),
            value_squares=Sum(F("value_sum") * F("value_sum")),
            **label_counts,
        )
    )
    result = {
        arm: {
            "n": n,
            "reporting": 0,
            "converted": 0,
            "errored": 0,
            "adopted": 0,
            "value_total": 0.0,
            "value_squares": 0.0,
            "labels": dict.fromkeys(outcome_labels, 0),
        }
        for arm, n in exposed.items()
    }
    for row in rows:
        stats = result.get(row["arm"])
        if stats is None:
            continue
        stats.update(
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
