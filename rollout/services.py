"""State changes of rollouts. Every change is serialised by a row lock and written to the audit log."""

import uuid
from collections.abc import Callable
from datetime import datetime

from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from controlplane.actors import SYSTEM
from controlplane.config_version import config_version_bump
from controlplane.errors import Conflict, InvalidInput, NotFound
from registry.models import Flow, ModelVersion
from registry.services import flow_baseline_set

from .allocation import DEFAULT_STAGES, AllocationError, plan_segments, validate_stages
from .arms import BASELINE, challenger_name, is_challenger_name
from .exposures import ExposureBufferUnavailable, device_lock_order, exposure_buffer_flush
from .guardrails import InvalidGuardrail, guardrails_parse
from .hashing import new_salt
from .models import (
    ACTIVE_STATES,
    Exposure,
    Rollout,
    RolloutArm,
    RolloutConclusion,
    RolloutEvent,
    RolloutState,
)
from .shares import percent_text
from .signals import exposures_changed

# How long lowering a share (a request) waits for a worker that is flushing the exposure buffer.
SHARE_FLUSH_WAIT_SECONDS = 5.0


def _snapshot(rollout: Rollout) -> dict:
    return {
        "state": rollout.state,
        "revision": rollout.revision,
        "arms": {
            arm.name: {"stage_index": arm.stage_index, "share": arm.share}
            for arm in rollout.arms.all()
        },
    }


def _event(rollout, *, action, actor, reason="", before=None, evidence=None) -> RolloutEvent:
    return RolloutEvent.objects.create(
        rollout=rollout,
        action=action,
        actor=actor,
        reason=reason or "",
        before=before or {},
        after=_snapshot(rollout),
        evidence=evidence or {},
    )


def rollout_create(
    *,
    flow: Flow,
    challengers: list[dict],
    actor: str,
    auto_advance: bool = False,
    stage_min_minutes: int = 60,
    min_devices_per_arm: int = 100,
    advance_detectable_lift: float = 0.5,
    planned_sample: int = 5000,
    guardrails: list | None = None,
) -> Rollout:
    """Draft a rollout of one or more challengers of a flow; nothing changes for devices yet."""
    if not challengers:
        raise InvalidInput("A rollout needs at least one challenger.", code="no_challengers")
    arms = []
    seen_models, seen_names = set(), set()
    for position, challenger in enumerate(challengers, start=1):
        model_id = str(challenger.get("model_id", ""))
        version = (
            ModelVersion.objects.filter(flow=flow, pk=model_id).first()
            if _is_uuid(model_id)
            else None
        )
        if version is None:
            raise NotFound(
                f"Challenger {position}: no model '{model_id}' in flow '{flow.name}'.",
                code="model_not_found",
            )
        if version.pk == flow.baseline_id:
            raise InvalidInput(
                f"Challenger {position}: model {version.pk} is the flow's baseline already.",
                code="challenger_is_baseline",
            )
        if version.pk in seen_models:
            raise InvalidInput(
                f"Challenger {position}: model {version.pk} is listed twice.",
                code="duplicate_model",
            )
        seen_models.add(version.pk)
        name = challenger.get("name") or challenger_name(position)
        if not is_challenger_name(name):
            raise InvalidInput(
                f"Challenger {position}: '{name}' is not an arm name (lowercase letters, digits, "
                f"'-' and '_', not '{BASELINE}').",
                code="invalid_arm_name",
            )
        if name in seen_names:
            raise InvalidInput(f"Two challengers are named '{name}'.", code="invalid_arm_name")
        seen_names.add(name)
        try:
            stages = validate_stages(challenger.get("stages") or DEFAULT_STAGES)
        except AllocationError as error:
            raise InvalidInput(f"Challenger {position}: {error}", code="invalid_stages") from None
        arms.append((name, version, stages))
    try:
        segments = plan_segments([stages[-1] for _, _, stages in arms])
    except AllocationError as error:
        raise InvalidInput(str(error), code="invalid_stages") from None
    try:
        guardrails_parse(guardrails)
    except InvalidGuardrail as error:
        raise InvalidInput(str(error), code="invalid_guardrails") from None
    with transaction.atomic():
        rollout = Rollout.objects.create(
            flow=flow,
            salt=new_salt(),
            auto_advance=auto_advance,
            stage_min_minutes=stage_min_minutes,
            min_devices_per_arm=min_devices_per_arm,
            advance_detectable_lift=advance_detectable_lift,
            planned_sample=planned_sample,
            guardrails=guardrails or [],
            created_by=actor,
        )
        RolloutArm.objects.bulk_create(
            RolloutArm(
                rollout=rollout,
                position=position,
                name=name,
                model_version=version,
                stages=list(stages),
                segment_start=segment.start,
                segment_end=segment.end,
            )
            for position, ((name, version, stages), segment) in enumerate(
                zip(arms, segments, strict=True)
            )
        )
        _event(rollout, action="create", actor=actor)
    return rollout


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _locked(rollout_id, expected_revision: int | None) -> Rollout:
    """Lock the rollout row; a concurrent change or a stale revision is a 409, never a wait."""
    try:
        rollout = (
            Rollout.objects.select_for_update(nowait=True)
            .select_related("flow")
            .filter(pk=rollout_id)
            .first()
        )
    except DatabaseError:
        raise Conflict(
            "Another change to this rollout is in progress; reload it and try again.",
            code="concurrent_change",
        ) from None
    if rollout is None:
        raise NotFound(f"No rollout with id '{rollout_id}'.", code="rollout_not_found")
    if expected_revision is not None and expected_revision != rollout.revision:
        raise Conflict(
            f"The rollout changed since you loaded it (revision {rollout.revision}, you sent "
            f"{expected_revision}); reload it and decide again.",
            code="stale_revision",
        )
    return rollout


def _transition(
    rollout: Rollout,
    *,
    action: str,
    verb: str,
    actor: str,
    reason: str,
    allowed_from: tuple[str, ...],
    change: Callable[[Rollout, datetime], None],
    expected_revision: int | None = None,
    evidence: dict | None = None,
) -> Rollout:
    with transaction.atomic():
        locked = _locked(rollout.pk, expected_revision)
        if locked.state not in allowed_from:
            raise Conflict(
                f"Cannot {verb} a rollout that is {locked.get_state_display().lower()}.",
                code="invalid_state",
            )
        before = _snapshot(locked)
        change(locked, timezone.now())
        locked.revision += 1
        locked.save()
        _event(locked, action=action, actor=actor, reason=reason, before=before, evidence=evidence)
        config_version_bump()
    return locked


def rollout_start(*, rollout: Rollout, actor: str, reason: str = "", expected_revision=None):
    """Start at each challenger's first stage, next to the flow's current baseline."""

    def change(locked: Rollout, now):
        flow = Flow.objects.select_for_update().get(pk=locked.flow_id)
        other = Rollout.objects.filter(flow=flow, state__in=ACTIVE_STATES).exclude(pk=locked.pk)
        if other.exists():
            raise Conflict(
                f"Flow '{flow.name}' has an active rollout already ({other.first().pk}); "
                "finish it first.",
                code="rollout_active",
            )
        arms = list(locked.arms.all())
        if any(arm.model_version_id == flow.baseline_id for arm in arms):
            raise Conflict(
                "A challenger has become the flow's baseline since the rollout was drafted.",
                code="challenger_is_baseline",
            )
        locked.baseline_id = flow.baseline_id
        locked.state = RolloutState.RUNNING
        locked.started_at = locked.stage_started_at = now
        for arm in arms:
            arm.stage_index, arm.share = 0, arm.stages[0]
            arm.save(update_fields=["stage_index", "share"])

    try:
        return _transition(
            rollout, action="start", verb="start", actor=actor, reason=reason,
            allowed_from=(RolloutState.DRAFT,), change=change, expected_revision=expected_revision,
        )  # fmt: skip
    except IntegrityError:
        raise Conflict("The flow has an active rollout already.", code="rollout_active") from None


def rollout_advance(
    *, rollout: Rollout, actor: str, reason: str = "", expected_revision=None, evidence=None
):
    """Move every challenger that is not at its last stage to its next stage."""

    def change(locked: Rollout, now):
        arms = [arm for arm in locked.arms.all() if arm.stage_index < len(arm.stages) - 1]
        if not arms:
            raise Conflict(
                "Every challenger is at its final stage; promote the winner or roll back.",
                code="final_stage",
            )
        for arm in arms:
            arm.stage_index += 1
            arm.share = arm.stages[arm.stage_index]
            arm.save(update_fields=["stage_index", "share"])
        locked.stage_started_at = now

    return _transition(
        rollout, action="advance", verb="advance", actor=actor, reason=reason,
        allowed_from=(RolloutState.RUNNING,), change=change,
        expected_revision=expected_revision, evidence=evidence,
    )  # fmt: skip


def rollout_pause(*, rollout: Rollout, actor: str, reason: str = "", expected_revision=None):
    """Freeze who has what: shares stop moving, automatic advancing stops."""

    def change(locked: Rollout, now):
        locked.state = RolloutState.PAUSED

    return _transition(
        rollout, action="pause", verb="pause", actor=actor, reason=reason,
        allowed_from=(RolloutState.RUNNING,), change=change, expected_revision=expected_revision,
    )  # fmt: skip


def rollout_resume(
    *, rollout: Rollout, actor: str, reason: str = "", expected_revision=None, evidence=None
):
    def change(locked: Rollout, now):
        locked.state = RolloutState.RUNNING

    return _transition(
        rollout, action="resume", verb="resume", actor=actor, reason=reason,
        allowed_from=(RolloutState.PAUSED,), change=change,
        expected_revision=expected_revision, evidence=evidence,
    )  # fmt: skip


def _conclusion_checked(conclusion: str | None, default: str) -> str:
    if conclusion in (None, ""):
        return default
    if conclusion not in RolloutConclusion.values:
        choices = ", ".join(RolloutConclusion.values)
        raise InvalidInput(
            f"'{conclusion}' is not a conclusion; use one of {choices}.",
            code="invalid_conclusion",
            fields={"conclusion": [f"One of {choices}."]},
        )
    return conclusion


def _conclusion_evidence(evidence: dict | None, conclusion: str, note: str) -> dict:
    # The audit row says what was concluded, next to whatever justified the action.
    return {**(evidence or {}), "conclusion": conclusion, "conclusion_note": note}


def rollout_rollback(
    *, rollout: Rollout, actor: str, reason: str = "", expected_revision=None, evidence=None,
    conclusion: str | None = None, conclusion_note: str = "",
):  # fmt: skip
    """Send every device back to the baseline on its next poll, and record what was concluded.

    Without a conclusion, the judge's rollback (actor `system`, on harm) concluded "lost";
    a person's, "stopped early" (they may say more).
    """
    default = RolloutConclusion.LOST if actor == SYSTEM else RolloutConclusion.STOPPED_EARLY
    conclusion = _conclusion_checked(conclusion, default)
    conclusion_note = conclusion_note or ""

    def change(locked: Rollout, now):
        locked.state = RolloutState.ROLLED_BACK
        locked.ended_at = now
        locked.conclusion, locked.conclusion_note = conclusion, conclusion_note

    return _transition(
        rollout, action="rollback", verb="roll back", actor=actor, reason=reason,
        allowed_from=ACTIVE_STATES, change=change, expected_revision=expected_revision,
        evidence=_conclusion_evidence(evidence, conclusion, conclusion_note),
    )  # fmt: skip


def rollout_promote(
    *, rollout: Rollout, actor: str, arm: str | None = None, reason: str = "",
    expected_revision=None, evidence=None, conclusion: str | None = None,
    conclusion_note: str = "",
):  # fmt: skip
    """Make a challenger the flow's baseline and complete the rollout; the conclusion is "won"
    unless said otherwise (a promotion may also end an inconclusive test, for instance)."""
    conclusion = _conclusion_checked(conclusion, RolloutConclusion.WON)
    conclusion_note = conclusion_note or ""

    def change(locked: Rollout, now):
        arms = {a.name: a for a in locked.arms.all()}
        if arm is None and len(arms) > 1:
            raise InvalidInput(
                f"This rollout has {len(arms)} challengers; say which arm to promote.",
                code="arm_required",
            )
        winner = arms.get(arm) if arm is not None else next(iter(arms.values()))
        if winner is None:
            raise NotFound(f"This rollout has no arm '{arm}'.", code="arm_not_found")
        flow_baseline_set(
            flow=locked.flow,
            model_version=winner.model_version,
            actor=actor,
            reason=f"promoted from rollout {locked.pk} ({winner.name})"
            + (f": {reason}" if reason else ""),
        )
        locked.state = RolloutState.COMPLETED
        locked.ended_at = now
        locked.conclusion, locked.conclusion_note = conclusion, conclusion_note

    return _transition(
        rollout, action="promote", verb="promote", actor=actor, reason=reason,
        allowed_from=ACTIVE_STATES, change=change, expected_revision=expected_revision,
        evidence=_conclusion_evidence(evidence, conclusion, conclusion_note),
    )  # fmt: skip


def _exposures_mark_not_comparable(exposures) -> None:
    """Mark exposures as no longer comparable, locking them in the ledger's lock order first
    (device, then rollout; see rollout.exposures) so that attribution, which locks the same
    rows in that order, never deadlocks with this."""
    rollout_ids = set(
        exposures.order_by(device_lock_order(), "rollout_id")
        .select_for_update(no_key=True)
        .values_list("rollout_id", flat=True)
    )
    exposures.update(comparable=False)
    for rollout_id in rollout_ids:
        exposures_changed.send(sender=Exposure, rollout_id=str(rollout_id), device_ids=None)


def rollout_set_share(
    *, rollout: Rollout, arm: str, share: int, actor: str, reason: str = "", expected_revision=None
):
    """Set one challenger's share (basis points), e.g. to ramp it down gradually.

    Lowering a share moves the devices above it back to the baseline; they are marked as no
    longer comparable, because their outcomes mix both models. Devices below keep their arm.
    """

    def change(locked: Rollout, now):
        target = locked.arms.filter(name=arm).first()
        if target is None:
            raise NotFound(f"This rollout has no arm '{arm}'.", code="arm_not_found")
        length = target.segment_end - target.segment_start
        if not 0 <= share <= length:
            raise InvalidInput(
                f"Arm '{arm}' can take a share from 0 to {length} basis points "
                f"({percent_text(length)}); got {share}.",
                code="invalid_share",
            )
        if share < target.share:
            # Exposures still buffered in Redis must be in the ledger to be marked. A request
            # waits for a flusher only briefly: its lease is renewed per batch of seconds.
            try:
                exposure_buffer_flush(wait=SHARE_FLUSH_WAIT_SECONDS)
            except ExposureBufferUnavailable:
                raise Conflict(
                    "The exposure buffer is being flushed, or Redis is unreachable, so the "
                    "devices to move cannot all be found yet. Try again in a few seconds; to "
                    "stop a challenger at once, pause or roll back, which never wait.",
                    code="ledger_busy",
                ) from None
            _exposures_mark_not_comparable(
                Exposure.objects.filter(
                    rollout=locked,
                    bucket__gte=target.segment_start + share,
                    bucket__lt=target.segment_start + target.share,
                    comparable=True,
                )
            )
        target.share = share
        target.stage_index = max(
            (i for i, stage in enumerate(target.stages) if stage <= share), default=-1
        )
        target.save(update_fields=["share", "stage_index"])
        # Devices exposed before the change were assigned under other shares.
        locked.stage_started_at = now

    return _transition(
        rollout, action="set_share", verb="change the share of", actor=actor, reason=reason,
        allowed_from=ACTIVE_STATES, change=change, expected_revision=expected_revision,
    )  # fmt: skip
