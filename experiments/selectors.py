"""Read queries of experiments: per-arm sufficient statistics from per-device outcomes."""

from django.db.models import Count, Exists, F, OuterRef, Q, Sum

from rollout.models import Exposure, Rollout

from .models import Analysis, DeviceOutcome


def _comparable_exposure(rollout: Rollout):
    return Exposure.objects.filter(
        rollout=rollout, device_id=OuterRef("device_id"), arm=OuterRef("arm"), comparable=True
    )


def arm_sufficient_statistics(*, rollout: Rollout, outcome_labels: tuple[str, ...] = ()) -> dict:
    """Per arm: comparable exposed devices and sums over their per-device outcomes.

    A device that never reported anything counts as exposed with zero outcomes (intention to
    treat: a model that crashes cannot hide by going silent). Reads one row per device, never
    raw events or polls.
    """
    exposed = dict(
        Exposure.objects.filter(rollout=rollout, comparable=True)
        .values_list("arm")
        .annotate(n=Count("id"))
        .values_list("arm", "n")
    )
    label_counts = {
        f"label_{index}": Count("id", filter=Q(outcome_counts__has_key=label))
        for index, label in enumerate(outcome_labels)
    }
    rows = (
        DeviceOutcome.objects.filter(rollout=rollout)
        .filter(Exists(_comparable_exposure(rollout)))
        .values("arm")
        .annotate(
            reporting=Count("id"),
            converted=Count("id", filter=Q(conversions__gt=0)),
            errored=Count("id", filter=Q(model_errors__gt=0)),
            adopted=Count("id", filter=Q(ran_assigned_model=True)),
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


def exposure_counts_for_srm(*, rollout: Rollout) -> dict[str, dict[str, int]]:
    """Devices first exposed in the current stage, per SDK version and arm.

    Only those were assigned under the current shares; devices from earlier stages keep the
    arm they had, so counting them would raise a false alarm after every stage change.
    """
    since = rollout.stage_started_at or rollout.started_at
    rows = (
        Exposure.objects.filter(rollout=rollout, first_exposed_at__gte=since)
        .values("sdk_version", "arm")
        .annotate(n=Count("id"))
    )
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(row["sdk_version"], {})[row["arm"]] = row["n"]
    return counts


def analysis_latest(*, rollout: Rollout) -> Analysis | None:
    return rollout.analyses.order_by("-computed_at", "-id").first()
