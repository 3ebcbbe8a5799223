"""Build the snapshot of an app that the poll endpoint answers from (a few queries, then cached)."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max, Q
from django.utils import timezone

from controlplane.config_version import config_version_read
from registry.models import BaselineChange, Flow, ModelVersion
from registry.sdk_versions import parse_sdk_version

from .allocation import ArmAllocation, Segment
from .assignment import ArmDoc, FlowDoc, ModelEntry, RolloutDoc
from .models import ACTIVE_STATES, ENDED_STATES, Rollout, RolloutState


@dataclass(frozen=True)
class AppDoc:
    app_id: str
    flows: dict[str, FlowDoc]
    has_active_rollout: bool
    last_rollback_at: datetime | None
    # The config version read before the snapshot (it is at least that new) and when it was
    # built: the `ver` and `iat` of its signed assignments.
    version: int = 0
    built_at: datetime | None = None
    # Encoded answers of this snapshot, by their content (see rollout.poll._encoded).
    encoded_answers: dict = field(default_factory=dict, compare=False, repr=False)

    def poll_after_s(self, now: datetime) -> int:
        """Poll sooner while a rollout runs, and soonest right after a rollback."""
        after = settings.SDK_POLL_AFTER_SECONDS
        if self.has_active_rollout:
            after = min(after, settings.SDK_POLL_AFTER_SECONDS_DURING_ROLLOUT)
        if self.last_rollback_at is not None and now - self.last_rollback_at < timedelta(
            seconds=settings.SDK_FAST_POLL_AFTER_ROLLBACK_WINDOW_SECONDS
        ):
            after = min(after, settings.SDK_POLL_AFTER_SECONDS_AFTER_ROLLBACK)
        return after


def model_entry(version: ModelVersion | None) -> ModelEntry | None:
    if version is None:
        return None
    return ModelEntry(
        model_id=str(version.pk),
        storage_key=version.storage_key,
        sha256=version.sha256,
        size=version.size,
        format=version.format,
        min_sdk=parse_sdk_version(version.min_sdk_version),
        max_sdk=parse_sdk_version(version.max_sdk_version) if version.max_sdk_version else None,
    )


def _rollout_doc(rollout: Rollout) -> RolloutDoc:
    arms = tuple(
        ArmDoc(
            allocation=ArmAllocation(
                name=arm.name,
                segment=Segment(arm.segment_start, arm.segment_end),
                share=arm.share,
            ),
            model=model_entry(arm.model_version),
        )
        for arm in rollout.arms.all()
    )
    return RolloutDoc(
        id=str(rollout.pk),
        state=rollout.state,
        salt=rollout.salt,
        baseline=model_entry(rollout.baseline),
        arms=arms,
        started_at=rollout.started_at,
    )


def app_doc_build(app_id) -> AppDoc:
    config_version = config_version_read()
    now = timezone.now()
    flows = list(Flow.objects.filter(app_id=app_id).select_related("baseline").order_by("name"))
    history: dict = {}
    for change in (
        BaselineChange.objects.filter(flow__app_id=app_id)
        .select_related("model_version")
        .order_by("-changed_at", "-id")
    ):
        history.setdefault(change.flow_id, []).append(change.model_version)
    window = timedelta(seconds=settings.ROLLBACK_CONFIRMATION_WINDOW_SECONDS)
    recent_rollback = Q(state=RolloutState.ROLLED_BACK, ended_at__gte=now - window)
    rollouts = list(
        Rollout.objects.filter(flow__app_id=app_id)
        .filter(Q(state__in=ACTIVE_STATES) | recent_rollback)
        .select_related("baseline")
        .prefetch_related("arms__model_version")
    )
    active = {r.flow_id: r for r in rollouts if r.state in ACTIVE_STATES}
    last_ended = dict(
        Rollout.objects.filter(flow__app_id=app_id, state__in=ENDED_STATES)
        .values("flow_id")
        .annotate(at=Max("ended_at"))
        .values_list("flow_id", "at")
    )
    rolled_back: dict = {}
    for rollout in rollouts:
        if rollout.state == RolloutState.ROLLED_BACK:
            rolled_back.setdefault(rollout.flow_id, []).append(rollout)

    docs = {}
    for flow in flows:
        seen = {flow.baseline_id}
        fallbacks = []
        for version in history.get(flow.pk, []):
            if version.pk not in seen:
                seen.add(version.pk)
                fallbacks.append(model_entry(version))
        docs[flow.name] = FlowDoc(
            name=flow.name,
            flow_id=flow.flow_id,
            baseline=model_entry(flow.baseline),
            fallbacks=tuple(fallbacks),
            rollout=_rollout_doc(active[flow.pk]) if flow.pk in active else None,
            rolled_back=tuple(_rollout_doc(r) for r in rolled_back.get(flow.pk, [])),
            last_ended_at=last_ended.get(flow.pk),
            positive_label=flow.positive_label,
            attribution_window_hours=flow.attribution_window_hours,
        )
    ended = [r.ended_at for r in rollouts if r.state == RolloutState.ROLLED_BACK and r.ended_at]
    return AppDoc(
        app_id=str(app_id),
        flows=docs,
        has_active_rollout=bool(active),
        last_rollback_at=max(ended) if ended else None,
        version=config_version,
        built_at=now,
    )
