"""The judge: analyse a rollout, store the analysis, and act on it through the rollout services.

The computation is `experiments.analysis` (pure); this module reads its input from the
database, stores its result, and carries out its decision once.
"""

import logging
from contextlib import nullcontext

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane.actors import SYSTEM
from controlplane.db import statement_deadline
from controlplane.errors import Conflict
from rollout import services as rollout_services
from rollout.allocation import ArmAllocation, Segment, expected_shares
from rollout.guardrails import InvalidGuardrail, guardrails_parse
from rollout.metrics import VALUE
from rollout.models import ACTIVE_STATES, Rollout, RolloutState
from rollout.selectors import rollout_phase_starts
from rollout.shares import percent_text

from . import decisions, readout, stats
from .alerts import alert_raise
from .analysis import (
    PRIMARY_SPEC,
    AnalysisInput,
    ArmPlan,
    analyze,
    at_last_comparable_stage,
    sequential_state_read,
)
from .events.attribution import ledger_catch_up, ledger_complete_through
from .models import Analysis
from .selectors import analysis_latest, arm_sufficient_statistics, exposure_counts

logger = logging.getLogger(__name__)


def _previous_states(rollout: Rollout) -> tuple[dict, dict]:
    latest = analysis_latest(rollout=rollout)
    return sequential_state_read(latest.sequential_state if latest else None)


def _shares(arms) -> dict[str, float]:
    """The configured share of every arm, the baseline included."""
    return expected_shares(
        [ArmAllocation(a.name, Segment(a.segment_start, a.segment_end), a.share) for a in arms]
    )


def analysis_input(rollout: Rollout, *, watermark, now, notes: list[str]) -> AnalysisInput:
    """Read what one look at the rollout needs from the database."""
    arms = list(rollout.arms.all())
    try:
        guardrails = guardrails_parse(rollout.guardrails)
    except InvalidGuardrail as error:
        notes.append(f"guardrails ignored: {error}")
        guardrails = guardrails_parse([])
    specs = (
        PRIMARY_SPEC,
        *(stats.MetricSpec(g.metric, g.kind, g.higher_is_better, g.margin) for g in guardrails),
    )
    labels = tuple(g.outcome_label for g in guardrails if g.outcome_label)
    phase_starts = rollout_phase_starts(rollout=rollout)
    exposure = exposure_counts(rollout=rollout, arms=arms, phase_starts=phase_starts)
    sums = arm_sufficient_statistics(
        rollout=rollout,
        arms=arms,
        phase_starts=phase_starts,
        counted=exposure.counted,
        outcome_labels=labels,
        with_values=any(spec.name == VALUE for spec in specs),
    )
    shares = _shares(arms)
    last = at_last_comparable_stage({a.name: (a.stage_index, a.stages) for a in arms})
    previous, previous_srm = _previous_states(rollout)
    stage_start = rollout.stage_started_at or rollout.started_at
    return AnalysisInput(
        rollout_id=str(rollout.pk),
        rollout_state=rollout.state,
        baseline_model_id=str(rollout.baseline_id) if rollout.baseline_id else None,
        arms=tuple(
            ArmPlan(
                name=a.name,
                model_id=str(a.model_version_id),
                share=shares.get(a.name, 0.0),
                final_stage=last[a.name],
            )
            for a in arms
        ),
        sums=sums,
        specs=specs,
        alpha=settings.EXPERIMENT_ALPHA,
        planned_sample=rollout.planned_sample,
        min_devices_per_arm=rollout.min_devices_per_arm,
        advance_detectable_lift=rollout.advance_detectable_lift,
        min_detectable_lift=settings.EXPERIMENT_MIN_DETECTABLE_LIFT,
        running=rollout.state == RolloutState.RUNNING,
        auto_advance=rollout.auto_advance,
        minutes_in_stage=(now - rollout.stage_started_at).total_seconds() / 60
        if rollout.stage_started_at
        else 0.0,
        stage_min_minutes=rollout.stage_min_minutes,
        previous=previous,
        srm_counts=exposure.this_stage,
        srm_epoch=stage_start.isoformat() if stage_start else "",
        previous_srm=previous_srm,
        computed_at=now.isoformat(),
        watermark=watermark.isoformat(),
        notes=tuple(notes),
    )


# Decisions that wait for fresh data. A rollback does not: harm seen in the data up to the
# watermark is harm (the always-valid tests hold at any look), and stopping it never waits.
# Advancing, and alerting a person, on data that misses the latest devices could be wrong.
_NEED_FRESH_DATA = (decisions.ADVANCE, decisions.SRM_ALERT, decisions.PROMOTE_RECOMMENDED)


def _watermark(rollout: Rollout, started, notes: list[str]):
    """The time the analysis' data is complete up to, and whether that is fresh enough to act."""
    complete_through = ledger_complete_through()
    if complete_through is None:
        # Nothing has been caught up yet: only what preceded the rollout is known complete.
        complete_through = rollout.started_at or rollout.created_at
    watermark = min(complete_through, started)
    age = (started - watermark).total_seconds()
    if age > 1:
        notes.append(
            f"data complete up to {watermark.isoformat()}, {age:.0f} s before this look: "
            "exposures and events since may be missing"
        )
    return watermark, age <= settings.JUDGE_MAX_DATA_AGE_SECONDS


def rollout_analyze(
    *, rollout: Rollout, act: bool = True, catch_up: bool = True, within: float | None = None
) -> Analysis:
    """Analyse a rollout now: the same analysis and actions as the periodic job.

    With `catch_up` (the periodic job), exposures still buffered and events not yet attributed
    are taken in first. Without it (a web request), the analysis reads the ledger as it is. The
    watermark is always what the data is known complete up to (`ledger_complete_through`).
    When it is more than `JUDGE_MAX_DATA_AGE_SECONDS` old, the look still rolls back on harm,
    but holds advancing and alerts (action `decisions.HELD`) for a look on fresh data.

    `within` bounds the database time of the whole look (a request): past it, `Unavailable`.
    """
    started = timezone.now()
    notes = []
    if catch_up:
        ledger_catch_up()
    watermark, fresh = _watermark(rollout, started, notes)
    bounded = (
        statement_deadline(
            within,
            code="analysis_timeout",
            detail=f"The analysis did not finish within {within:g} s. The periodic judge "
            "analyses this rollout every 5 minutes; read it with GET …/analysis, or try "
            "again later.",
        )
        if within is not None
        else nullcontext()
    )
    with bounded:
        rollout = (
            Rollout.objects.select_related("flow", "flow__app")
            .prefetch_related("arms")
            .get(pk=rollout.pk)
        )
        now = timezone.now()
        result = analyze(analysis_input(rollout, watermark=watermark, now=now, notes=notes))
        with transaction.atomic():
            analysis = Analysis.objects.create(
                rollout=rollout,
                computed_at=now,
                watermark=watermark,
                decision=result.decision,
                srm_p_value=result.srm_p_value,
                body=dict(result.body),
                inputs=dict(result.inputs),
                sequential_state=result.sequential_state,
            )
            if act:
                if not fresh and result.verdict.decision in _NEED_FRESH_DATA:
                    analysis.action = decisions.HELD
                    analysis.body["notes"] = [
                        *analysis.body.get("notes", []),
                        f"{result.verdict.decision} held: the data is older than "
                        f"{settings.JUDGE_MAX_DATA_AGE_SECONDS} s; a look on fresh data decides",
                    ]
                else:
                    analysis.action = _act(rollout, result.verdict, analysis)
                analysis.body = {**analysis.body, "action": analysis.action}
                analysis.save(update_fields=["action", "body"])
    return analysis


def _alert_payload(rollout: Rollout, verdict, analysis: Analysis) -> dict:
    return {
        "rollout_id": str(rollout.pk),
        "app": rollout.flow.app.name,
        "flow": rollout.flow.name,
        "decision": verdict.decision,
        "arms": list(verdict.harmful_arms or verdict.winning_arms),
        "reasons": list(verdict.reasons),
        # The console's own sentence for this analysis (experiments.readout), word for word.
        "summary": readout.recommendation(analysis.body).sentence,
        "analysis_id": analysis.pk,
    }


def _act(rollout: Rollout, verdict: decisions.Verdict, analysis: Analysis) -> str:
    """Carry out the decision once; return what was done. Runs in the analysis' transaction."""
    evidence = {
        "analysis_id": analysis.pk,
        "decision": verdict.decision,
        "reasons": list(verdict.reasons),
    }
    where = f"{rollout.flow.app.name} / {rollout.flow.name}"
    reason = "; ".join(verdict.reasons)
    summary = readout.recommendation(analysis.body).sentence
    try:
        if verdict.decision == decisions.ROLLBACK and rollout.state in ACTIVE_STATES:
            rollout_services.rollout_rollback(
                rollout=rollout,
                actor=SYSTEM,
                reason=reason,
                expected_revision=rollout.revision,
                evidence=evidence,
            )
            alert_raise(
                rollout=rollout,
                key=f"{rollout.pk}:{decisions.ROLLBACK}",
                kind=verdict.decision,
                title=f"Rolled back {', '.join(verdict.harmful_arms)} on {where}",
                text=f"{summary} Cohort rolled the rollout back automatically: {reason}. Every "
                "device gets the baseline on its next poll.",
                payload=_alert_payload(rollout, verdict, analysis),
                analysis=analysis,
            )
            return decisions.ROLLED_BACK
        if verdict.decision == decisions.ADVANCE and rollout.state == RolloutState.RUNNING:
            advanced = rollout_services.rollout_advance(
                rollout=rollout,
                actor=SYSTEM,
                reason=reason,
                expected_revision=rollout.revision,
                evidence=evidence,
            )
            shares = ", ".join(f"{a.name} {percent_text(a.share)}" for a in advanced.arms.all())
            alert_raise(
                rollout=rollout,
                key=f"{rollout.pk}:{decisions.ADVANCE}:{advanced.revision}",
                kind=verdict.decision,
                title=f"Advanced the rollout on {where} to {shares}",
                text=f"Cohort advanced the rollout automatically: {reason}.",
                payload=_alert_payload(rollout, verdict, analysis),
                analysis=analysis,
            )
            return decisions.ADVANCED
    except Conflict as error:
        # Someone (a person, or a concurrent run of the judge) changed the rollout first.
        logger.info("judge.action_skipped rollout=%s reason=%s", rollout.pk, error.detail)
        analysis.body["notes"] = [
            *analysis.body.get("notes", []),
            f"action skipped: {error.detail}",
        ]
        return decisions.SKIPPED
    if verdict.decision == decisions.SRM_ALERT:
        alert_raise(
            rollout=rollout,
            key=f"{rollout.pk}:srm:{rollout.stage_started_at:%Y%m%dT%H%M%S}",
            kind=verdict.decision,
            title=f"Sample-ratio mismatch on {where}",
            text=f"{summary} The devices exposed do not match the configured shares: {reason}. "
            "Automatic advancing and promotion are held until a person looks.",
            payload=_alert_payload(rollout, verdict, analysis),
            analysis=analysis,
        )
        return decisions.ALERTED
    if verdict.decision == decisions.PROMOTE_RECOMMENDED:
        arms = ",".join(verdict.winning_arms)
        alert_raise(
            rollout=rollout,
            key=f"{rollout.pk}:{decisions.PROMOTE_RECOMMENDED}:{arms}",
            kind=verdict.decision,
            title=f"Promotion recommended on {where}: {arms}",
            text=f"{summary} Promote it in the admin or with "
            f"POST /api/v1/rollouts/{rollout.pk}/promote.",
            payload=_alert_payload(rollout, verdict, analysis),
            analysis=analysis,
        )
        return decisions.ALERTED
    return ""
