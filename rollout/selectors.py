"""Read queries of rollouts: details with their audit log, exposure counts and rollback progress."""

import uuid
from datetime import datetime

from django.db.models import Count, Q

from controlplane.errors import NotFound

from .arms import BASELINE
from .models import Exposure, Rollout, RolloutEvent, RolloutState

#: Audit-log actions that change the shares: each starts a new phase of the analysis.
PHASE_ACTIONS = ("start", "advance", "set_share")


def rollout_get(*, rollout_id) -> Rollout:
    try:
        pk = uuid.UUID(str(rollout_id))
    except ValueError:
        raise NotFound(f"No rollout with id '{rollout_id}'.", code="rollout_not_found") from None
    rollout = (
        Rollout.objects.select_related("flow", "flow__app", "baseline")
        .prefetch_related("arms__model_version")
        .filter(pk=pk)
        .first()
    )
    if rollout is None:
        raise NotFound(f"No rollout with id '{rollout_id}'.", code="rollout_not_found")
    return rollout


def rollout_list(*, flow_id=None, state: str | None = None):
    queryset = Rollout.objects.select_related("flow", "flow__app").prefetch_related("arms")
    if flow_id is not None:
        queryset = queryset.filter(flow_id=flow_id)
    if state:
        queryset = queryset.filter(state=state)
    return queryset.order_by("-created_at")


def rollout_exposure_counts(*, rollout: Rollout) -> dict[str, dict[str, int]]:
    """Per arm: devices exposed, and how many of them are still comparable."""
    rows = (
        Exposure.objects.filter(rollout=rollout)
        .values("arm")
        .annotate(exposed=Count("id"), comparable=Count("id", filter=Q(comparable=True)))
    )
    return {
        row["arm"]: {"exposed": row["exposed"], "comparable": row["comparable"]} for row in rows
    }


def rollout_rollback_progress(*, rollout: Rollout) -> dict | None:
    """After a rollback: how many devices that had a challenger have confirmed the baseline."""
    if rollout.state != RolloutState.ROLLED_BACK:
        return None
    challenger = Exposure.objects.filter(rollout=rollout).exclude(arm=BASELINE)
    counts = challenger.aggregate(
        exposed=Count("id"), confirmed=Count("id", filter=Q(baseline_confirmed_at__isnull=False))
    )
    exposed, confirmed = counts["exposed"], counts["confirmed"]
    return {
        "challenger_devices": exposed,
        "confirmed_baseline": confirmed,
        "share_confirmed": round(confirmed / exposed, 4) if exposed else None,
    }


def rollout_phase_starts(*, rollout: Rollout) -> list[datetime]:
    """When each phase of the rollout began: its start and every change of shares since.

    The audit log's time is taken after the change is made and before it commits, so a device
    assigned under the new shares always entered its arm after its phase began.
    """
    starts = list(
        RolloutEvent.objects.filter(rollout=rollout, action__in=PHASE_ACTIONS)
        .order_by("at", "pk")
        .values_list("at", flat=True)
    )
    return starts or [rollout.started_at or rollout.created_at]
