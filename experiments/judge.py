"""The judge: analyse a rollout, store the analysis, and act on it through the rollout services."""

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import LockError

from controlplane.actors import SYSTEM
from controlplane.errors import Conflict
from rollout import services as rollout_services
from rollout.allocation import BASELINE, ArmAllocation, Segment, expected_shares
from rollout.guardrails import PRIMARY, InvalidGuardrail, guardrails_parse
from rollout.models import ACTIVE_STATES, Rollout, RolloutState

from . import decisions, stats
from .alerts import alert_raise
from .attribution import ledger_catch_up
from .models import Analysis
from .selectors import analysis_latest, arm_sufficient_statistics, exposure_counts

logger = logging.getLogger(__name__)

PRIMARY_SPEC = stats.MetricSpec(PRIMARY, "proportion", higher_is_better=True)
TESTS = {
    "proportion": "pooled two-proportion z-test",
    "mean": "Welch's t-test",
    "sequential": "normal-mixture mSPRT (always valid), Bonferroni across challengers",
    "srm": "chi-square goodness of fit, per SDK version slice",
}


def _arm_stats(metric: str, kind: str, counts: dict) -> stats.ArmStats:
    n = counts["n"]
    if metric == PRIMARY:
        return stats.ArmStats.proportion(n, min(counts["converted"], n))
    if metric == "model_error":
        return stats.ArmStats.proportion(n, min(counts["errored"], n))
    if metric.startswith("outcome:"):
        return stats.ArmStats.proportion(n, min(counts["labels"].get(metric[8:], 0), n))
    if n == 0:
        return stats.ArmStats(0, 0.0, 0.0)
    # Float sums can round a hair below the Cauchy-Schwarz bound ArmStats checks.
    squares = max(counts["value_squares"], counts["value_total"] ** 2 / n)
    return stats.ArmStats(n, counts["value_total"], squares)


def _empty_counts(labels) -> dict:
    return {
        "n": 0,
        "reporting": 0,
        "converted": 0,
        "errored": 0,
        "adopted": 0,
        "value_total": 0.0,
        "value_squares": 0.0,
        "labels": dict.fromkeys(labels, 0),
    }


def _previous_states(rollout: Rollout) -> dict:
    latest = analysis_latest(rollout=rollout)
    stored = latest.sequential_state if latest else {}
    return {
        metric: {arm: stats.SequentialState.from_dict(s) for arm, s in by_arm.items() if s}
        for metric, by_arm in stored.items()
    }


def _shares(arms) -> dict[str, float]:
    """The configured share of every arm, the baseline included."""
    return expected_shares(
        [ArmAllocation(a.name, Segment(a.segment_start, a.segment_end), a.share) for a in arms]
    )


def _srm(arms, by_sdk: dict) -> tuple[float | None, list[stats.SrmFinding], dict]:
    shares = _shares(arms)
    names = [BASELINE, *(a.name for a in arms)]
    share_list = [shares[name] for name in names]
    total = [sum(counts.get(name, 0) for counts in by_sdk.values()) for name in names]
    slices = {"all devices": (total, share_list)}
    for sdk_version, counts in sorted(by_sdk.items()):
        slices[f"SDK {sdk_version}"] = ([counts.get(name, 0) for name in names], share_list)
    findings = stats.srm_by_slice(slices)
    inputs = {"arms": names, "shares": share_list, "counts": {k: v[0] for k, v in slices.items()}}
    return stats.srm_p_value(total, share_list), findings, inputs


def _planned_devices(rollout: Rollout, baseline_counts: dict) -> int:
    """Devices per arm before advancing: enough to see `advance_detectable_lift` with power 0.8.

    Without a baseline rate to size it on, the configured minimum alone applies (and the
    primary comparison is insufficient anyway, which holds advancing back).
    """
    rate = _arm_stats(PRIMARY, "proportion", baseline_counts).mean
    lift = -abs(rollout.advance_detectable_lift)  # the harm to be able to see: a drop
    if rate is None or not 0 < rate < 1 or rate * (1 + lift) <= 0:
        return rollout.min_devices_per_arm
    needed = stats.devices_per_arm_for_lift(rate, lift, alpha=settings.EXPERIMENT_ALPHA)
    return max(rollout.min_devices_per_arm, needed)


def _extreme_harm(specs, counts, arms, min_devices: int) -> list[tuple[str, str, str]]:
    """Rates worse beyond doubt where the comparison lacks successes or failures to test."""
    found = []
    for spec in specs:
        if spec.kind != "proportion":
            continue
        baseline = _arm_stats(spec.name, spec.kind, counts[BASELINE])
        for arm in arms:
            challenger = _arm_stats(spec.name, spec.kind, counts[arm.name])
            if min(baseline.n, challenger.n) < min_devices:
                continue
            if stats.clearly_worse_rate(
                baseline, challenger, higher_is_better=spec.higher_is_better, margin=spec.margin
            ):
                found.append(
                    (
                        arm.name,
                        spec.name,
                        f"{arm.name} is clearly worse on {spec.name}: {challenger.mean:.2%} of "
                        f"{challenger.n} devices against {baseline.mean:.2%} of {baseline.n} "
                        "(99.9 % Wilson intervals apart)",
                    )
                )
    return found


def _power(baseline_rate: float | None, smallest_arm: int) -> dict:
    lift = settings.EXPERIMENT_MIN_DETECTABLE_LIFT
    if baseline_rate is None or not 0 < baseline_rate < 1 or baseline_rate * (1 + lift) >= 1:
        return {"min_detectable_lift": lift, "devices_per_arm_needed": None, "power_now": None}
    return {
        "min_detectable_lift": lift,
        "baseline_rate": baseline_rate,
        "devices_per_arm_needed": stats.devices_per_arm_for_lift(baseline_rate, lift),
        "power_now": stats.power_for(max(smallest_arm, 1), baseline_rate, lift)
        if smallest_arm >= 2
        else 0.0,
    }


def rollout_analyze(*, rollout: Rollout, act: bool = True) -> Analysis:
    """Analyse a rollout now: the same analysis and actions as the periodic job.

    Exposures still buffered and events not yet attributed are taken in first, so the
    analysis is complete up to its watermark.
    """
    watermark = timezone.now()
    notes = []
    try:
        ledger_catch_up()
    except LockError:
        # Another flusher holds the buffer: what it moves is counted at the next look.
        notes.append("exposure buffer busy: exposures noted in the last seconds may be missing")
    rollout = (
        Rollout.objects.select_related("flow", "flow__app")
        .prefetch_related("arms")
        .get(pk=rollout.pk)
    )
    arms = list(rollout.arms.all())
    try:
        guardrails = guardrails_parse(rollout.guardrails)
    except InvalidGuardrail as error:
        notes.append(f"guardrails ignored: {error}")
        guardrails = guardrails_parse([])
    labels = tuple(g.outcome_label for g in guardrails if g.outcome_label)
    exposure = exposure_counts(rollout=rollout)
    counts = arm_sufficient_statistics(
        rollout=rollout, exposed=exposure.comparable, outcome_labels=labels
    )
    for name in [BASELINE, *(a.name for a in arms)]:
        counts.setdefault(name, _empty_counts(labels))

    specs = [PRIMARY_SPEC] + [
        stats.MetricSpec(g.metric, g.kind, g.higher_is_better, g.margin) for g in guardrails
    ]
    previous = _previous_states(rollout)
    alpha = settings.EXPERIMENT_ALPHA
    comparisons = {}
    for spec in specs:
        baseline = _arm_stats(spec.name, spec.kind, counts[BASELINE])
        challengers = {a.name: _arm_stats(spec.name, spec.kind, counts[a.name]) for a in arms}
        comparisons[spec.name] = stats.compare_arms(
            baseline,
            challengers,
            spec,
            alpha=alpha,
            planned_sample=rollout.planned_sample,
            min_devices=rollout.min_devices_per_arm,
            previous=previous.get(spec.name),
        )
    extreme_harm = _extreme_harm(specs, counts, arms, rollout.min_devices_per_arm)
    srm_p, srm_findings, srm_inputs = _srm(arms, exposure.this_stage)
    now = timezone.now()
    stage = decisions.StageInfo(
        running=rollout.state == RolloutState.RUNNING,
        auto_advance=rollout.auto_advance,
        minutes_in_stage=(now - rollout.stage_started_at).total_seconds() / 60
        if rollout.stage_started_at
        else 0.0,
        stage_min_minutes=rollout.stage_min_minutes,
        min_devices_per_arm=rollout.min_devices_per_arm,
        planned_devices_per_arm=_planned_devices(rollout, counts[BASELINE]),
        exposed={name: c["n"] for name, c in counts.items() if c["n"]},
        final_stage={a.name: a.stage_index == len(a.stages) - 1 for a in arms},
    )
    verdict = decisions.decide(
        comparisons,
        primary=PRIMARY,
        srm_findings=srm_findings,
        stage=stage,
        extreme_harm=extreme_harm,
    )
    body = _body(
        rollout,
        arms,
        counts,
        comparisons,
        guardrails,
        verdict,
        srm_p,
        srm_findings,
        watermark,
        now,
        notes,
    )
    inputs = {
        "arms": counts,
        "watermark": watermark.isoformat(),
        "alpha": alpha,
        "planned_sample": rollout.planned_sample,
        "min_devices": rollout.min_devices_per_arm,
        "metrics": [
            {
                "name": s.name,
                "kind": s.kind,
                "higher_is_better": s.higher_is_better,
                "margin": s.margin,
            }
            for s in specs
        ],
        "tests": TESTS,
        "srm": srm_inputs,
        "previous_sequential_state": {
            m: {a: s.to_dict() for a, s in by_arm.items()} for m, by_arm in previous.items()
        },
    }
    sequential_state = {
        metric: {arm: c.state.to_dict() if c.state else None for arm, c in by_arm.items()}
        for metric, by_arm in comparisons.items()
    }
    with transaction.atomic():
        analysis = Analysis.objects.create(
            rollout=rollout,
            computed_at=now,
            watermark=watermark,
            decision=verdict.decision,
            srm_p_value=srm_p,
            body=body,
            inputs=inputs,
            sequential_state=sequential_state,
        )
        if act:
            analysis.action = _act(rollout, verdict, analysis)
            analysis.body = {**body, "action": analysis.action}
            analysis.save(update_fields=["action", "body"])
    return analysis


def _body(
    rollout,
    arms,
    counts,
    comparisons,
    guardrails,
    verdict,
    srm_p,
    srm_findings,
    watermark,
    now,
    notes,
) -> dict:
    shares = _shares(arms)
    metric_names = [PRIMARY, *(g.metric for g in guardrails)]

    def arm_entry(name, model_id):
        c = counts[name]
        entry = {
            "arm": name,
            "model_id": str(model_id) if model_id else None,
            "share": shares.get(name, 0.0),
            "exposed": c["n"],
            "reporting": c["reporting"],
            "adoption": round(c["adopted"] / c["n"], 4) if c["n"] else None,
            "metrics": {},
        }
        for metric in metric_names:
            if name == BASELINE:
                spec_kind = "mean" if metric == "value" else "proportion"
                entry["metrics"][metric] = _arm_stats(metric, spec_kind, c).to_dict()
            else:
                entry["metrics"][metric] = comparisons[metric][name].to_dict()
        return entry

    baseline_rate = _arm_stats(PRIMARY, "proportion", counts[BASELINE]).mean
    smallest = min(counts[name]["n"] for name in [BASELINE, *(a.name for a in arms)])
    return {
        "rollout_id": str(rollout.pk),
        "computed_at": now.isoformat(),
        "watermark": watermark.isoformat(),
        "rollout_state": rollout.state,
        "srm_p_value": srm_p,
        "srm": [f.to_dict() for f in srm_findings],
        "decision": verdict.decision,
        "reasons": list(verdict.reasons),
        "arms": [
            arm_entry(BASELINE, rollout.baseline_id),
            *(arm_entry(a.name, a.model_version_id) for a in arms),
        ],
        "power": {
            **_power(baseline_rate, smallest),
            "advance_detectable_lift": rollout.advance_detectable_lift,
            "devices_per_arm_to_advance": _planned_devices(rollout, counts[BASELINE]),
        },
        "thresholds": {
            "alpha": settings.EXPERIMENT_ALPHA,
            "planned_sample": rollout.planned_sample,
            "min_devices_per_arm": rollout.min_devices_per_arm,
            "srm_p_value": stats.SRM_P_VALUE_THRESHOLD,
        },
        "notes": notes,
    }


def _alert_payload(rollout: Rollout, verdict, analysis: Analysis) -> dict:
    return {
        "rollout_id": str(rollout.pk),
        "app": rollout.flow.app.name,
        "flow": rollout.flow.name,
        "decision": verdict.decision,
        "arms": list(verdict.harmful_arms or verdict.winning_arms),
        "reasons": list(verdict.reasons),
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
                key=f"{rollout.pk}:rollback",
                kind=verdict.decision,
                title=f"Rolled back {', '.join(verdict.harmful_arms)} on {where}",
                text=f"Cohort rolled the rollout back automatically: {reason}. Every device "
                "gets the baseline on its next poll.",
                payload=_alert_payload(rollout, verdict, analysis),
                analysis=analysis,
            )
            return "rolled_back"
        if verdict.decision == decisions.ADVANCE and rollout.state == RolloutState.RUNNING:
            advanced = rollout_services.rollout_advance(
                rollout=rollout,
                actor=SYSTEM,
                reason=reason,
                expected_revision=rollout.revision,
                evidence=evidence,
            )
            shares = ", ".join(f"{a.name} {a.share / 100:g} %" for a in advanced.arms.all())
            alert_raise(
                rollout=rollout,
                key=f"{rollout.pk}:advance:{advanced.revision}",
                kind=verdict.decision,
                title=f"Advanced the rollout on {where} to {shares}",
                text=f"Cohort advanced the rollout automatically: {reason}.",
                payload=_alert_payload(rollout, verdict, analysis),
                analysis=analysis,
            )
            return "advanced"
    except Conflict as error:
        # Someone (a person, or a concurrent run of the judge) changed the rollout first.
        logger.info("judge.action_skipped rollout=%s reason=%s", rollout.pk, error.detail)
        analysis.body["notes"] = [
            *analysis.body.get("notes", []),
            f"action skipped: {error.detail}",
        ]
        return "skipped"
    if verdict.decision == decisions.SRM_ALERT:
        alert_raise(
            rollout=rollout,
            key=f"{rollout.pk}:srm:{rollout.stage_started_at:%Y%m%dT%H%M%S}",
            kind=verdict.decision,
            title=f"Sample-ratio mismatch on {where}",
            text=f"The devices exposed do not match the configured shares: {reason}. "
            "Automatic advancing and promotion are held until a person looks.",
            payload=_alert_payload(rollout, verdict, analysis),
            analysis=analysis,
        )
        return "alerted"
    if verdict.decision == decisions.PROMOTE_RECOMMENDED:
        arms = ",".join(verdict.winning_arms)
        alert_raise(
            rollout=rollout,
            key=f"{rollout.pk}:promote_recommended:{arms}",
            kind=verdict.decision,
            title=f"Promotion recommended on {where}: {arms}",
            text=f"{reason}. Promote it in the admin or with POST /api/v1/rollouts/{rollout.pk}/promote.",
            payload=_alert_payload(rollout, verdict, analysis),
            analysis=analysis,
        )
        return "alerted"
    return ""


def rollouts_to_judge() -> list[str]:
    return [
        str(pk)
        for pk in Rollout.objects.filter(state__in=ACTIVE_STATES).values_list("pk", flat=True)
    ]
