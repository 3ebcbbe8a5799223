"""
The decision record (CONSOLE.md, page 7): one printable page per analysis, the judge's
automatic decisions and the ones people made on it alike.

Rendered from the stored `Analysis` alone, its body (what `GET /api/v1/rollouts/<id>/analysis`
answers while it is the latest) and its inputs (the sufficient statistics and thresholds to
recompute it), plus the audit rows that cite it as their evidence: the record says what the
API says, and stays the same however the rollout moves on. Every sentence about the result
comes from `experiments.readout`, like the rollout page's.
"""

from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from rollout.arms import BASELINE
from rollout.metrics import PRIMARY
from rollout.models import RolloutEvent

from .. import decisions, readout
from ..models import Analysis
from ..selectors import analysis_latest

MINUS = readout.MINUS

# What the judge did about its decision, as the record says it (`Analysis.action`).
JUDGE_ACTIONS = {
    decisions.ROLLED_BACK: "Cohort rolled the rollout back automatically.",
    decisions.ADVANCED: "Cohort advanced the rollout to its next stage automatically.",
    decisions.ALERTED: "Cohort alerted people; a person decides.",
    decisions.HELD: "Cohort held its action: the data was not fresh enough to act on.",
    decisions.SKIPPED: "Cohort skipped its action: the rollout had changed meanwhile.",
    "": "Nothing was to be done automatically.",
}


def number(value, digits: int = 4) -> str:
    """A statistic as the record prints it: 4 significant digits, a true minus; "—" if none."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}".replace("-", MINUS)


def interval(pair) -> str:
    """An interval as the record prints it, e.g. "[0.0082, 0.0341]" (true minus signs)."""
    if not pair:
        return "—"
    return f"[{number(pair[0])}, {number(pair[1])}]"


def percent(value) -> str:
    """A fraction as a percentage, e.g. 0.99 → "99 %"."""
    return "—" if value is None else f"{value * 100:.4g} %"


@dataclass(frozen=True)
class StatisticsRow:
    metric: str  # its title, e.g. "model errors"
    metric_name: str  # as the body names it, e.g. "model_error"
    guardrail: bool
    arm: str
    baseline_n: str
    baseline_mean: str
    n: str
    mean: str
    difference: str
    difference_text: str  # readout's, in percentage points for shares
    sequential_ci: str
    sequential_p: str
    sequential_p_adjusted: str
    p_value: str
    p_value_adjusted: str
    chip: readout.Chip | None
    insufficient: str | None


@dataclass(frozen=True)
class ArmRow:
    arm: str
    model_id: str
    share: str
    exposed: str
    reporting: str
    adoption: str


@dataclass(frozen=True)
class Action:
    at: object
    actor: str
    action: str
    reason: str
    before: str
    after: str


@dataclass(frozen=True)
class DecisionRecord:
    analysis: Analysis
    look: int
    is_latest: bool
    judge_action: str
    recommendation: readout.Recommendation
    interval_level: str
    banner: readout.Banner | None
    arms: list[ArmRow]
    statistics: list[StatisticsRow]
    thresholds: list[tuple[str, str]]
    srm: list[tuple[str, str]]
    srm_findings: list[dict]
    power: list[tuple[str, str]]
    tests: list[tuple[str, str]]
    actions: list[Action]
    reasons: list[str]
    notes: list[str]
    failures: dict
    api_path: str

    @property
    def results_hidden(self) -> bool:
        return self.banner is not None and self.banner.blocks_results


def _statistics(body: dict) -> list[StatisticsRow]:
    baseline = next((a for a in body.get("arms", []) if a.get("arm") == BASELINE), {})
    rows = []
    for arm in body.get("arms", []):
        if arm.get("arm") == BASELINE:
            continue
        # Guardrails first, the primary metric last, as on the rollout page.
        for metric in sorted(arm.get("metrics", {}), key=lambda m: m == PRIMARY):
            c = arm["metrics"][metric]
            base = baseline.get("metrics", {}).get(metric, {})
            rows.append(
                StatisticsRow(
                    metric=readout.metric_title(metric),
                    metric_name=metric,
                    guardrail=metric != PRIMARY,
                    arm=arm["arm"],
                    baseline_n=number(base.get("n")),
                    baseline_mean=number(base.get("mean")),
                    n=number(c.get("n")),
                    mean=number(c.get("mean")),
                    difference=number(c.get("diff")),
                    difference_text=readout.difference_text(c, proportion=readout.is_proportion(c)),
                    sequential_ci=interval(c.get("sequential_ci")),
                    sequential_p=number(c.get("sequential_p"), 3),
                    sequential_p_adjusted=number(c.get("sequential_p_adjusted"), 3),
                    p_value=number(c.get("p_value"), 3),
                    p_value_adjusted=number(c.get("p_value_adjusted"), 3),
                    chip=readout.chip(c),
                    insufficient=c.get("insufficient") or c.get("error"),
                )
            )
    return rows


def _arms(body: dict) -> list[ArmRow]:
    return [
        ArmRow(
            arm=arm.get("arm", "—"),
            model_id=arm.get("model_id") or "bundled model",
            share=percent(arm.get("share")),
            exposed=number(arm.get("exposed")),
            reporting=number(arm.get("reporting")),
            adoption=percent(arm.get("adoption")),
        )
        for arm in body.get("arms", [])
    ]


def _thresholds(body: dict, inputs: dict) -> list[tuple[str, str]]:
    t = body.get("thresholds") or {}
    return [
        (
            "significance level (alpha), shared by every challenger and metric",
            number(t.get("alpha")),
        ),
        ("coverage of each always-valid interval", percent(readout.interval_level(body))),
        ("minimum devices per arm before any result", number(t.get("min_devices_per_arm"))),
        ("planned sample (devices; tunes the always-valid test)", number(t.get("planned_sample"))),
        ("sample-ratio mismatch flagged below p", number(t.get("srm_p_value"))),
        ("metrics judged", ", ".join(_metric_names(inputs)) or "—"),
    ]


def _metric_names(inputs: dict) -> list[str]:
    names = []
    for spec in inputs.get("metrics") or []:
        text = spec.get("name", "?")
        details = ["higher is better" if spec.get("higher_is_better") else "lower is better"]
        if spec.get("margin"):
            details.append(f"margin {number(spec['margin'])}")
        names.append(f"{text} ({', '.join(details)})")
    return names


def _srm(body: dict, inputs: dict) -> list[tuple[str, str]]:
    srm = inputs.get("srm") or {}
    counts = srm.get("counts") or {}
    arms = srm.get("arms") or []
    rows = [
        ("always-valid p-value, all devices", number(body.get("srm_p_value"), 3)),
        ("one-look chi-square p-value, all devices (for people)",
         number(srm.get("fixed_horizon_p_value"), 3)),
        ("set shares", ", ".join(f"{a} {percent(s)}" for a, s in zip(arms, srm.get("shares") or [], strict=False)) or "—"),
    ]  # fmt: skip
    # "all devices" first, then each SDK version (the stored JSON keeps no order).
    for name, values in sorted(counts.items(), key=lambda item: item[0] != "all devices"):
        rows.append(
            (
                f"devices first exposed in this stage, {name}",
                ", ".join(f"{a} {number(v)}" for a, v in zip(arms, values, strict=False)),
            )
        )
    return rows


def _power(body: dict) -> list[tuple[str, str]]:
    p = body.get("power") or {}
    return [
        ("baseline conversion", number(p.get("baseline_rate"))),
        (
            "devices per arm to advance (to see conversion drop by "
            f"{percent(p.get('advance_detectable_lift'))}, never below the minimum)",
            number(p.get("devices_per_arm_to_advance")),
        ),
        (
            f"devices per arm to detect a {percent(p.get('min_detectable_lift'))} change",
            number(p.get("devices_per_arm_needed")),
        ),
        ("power now, smallest arm", percent(p.get("power_now"))),
    ]


def _actions(analysis: Analysis) -> list[Action]:
    events = RolloutEvent.objects.filter(
        rollout_id=analysis.rollout_id, evidence__analysis_id=analysis.pk
    ).order_by("at", "pk")
    return [
        Action(
            at=event.at,
            actor=readout.actor_text(event.actor),
            action=event.action,
            reason=event.reason,
            before=event.before.get("state", "—"),
            after=event.after.get("state", "—"),
        )
        for event in events
    ]


def _look(analysis: Analysis) -> int:
    """Which look at the rollout this analysis was, counting from 1."""
    return Analysis.objects.filter(
        Q(computed_at__lt=analysis.computed_at)
        | Q(computed_at=analysis.computed_at, pk__lte=analysis.pk),
        rollout_id=analysis.rollout_id,
    ).count()


def decision_record(analysis: Analysis) -> DecisionRecord:
    body, inputs = analysis.body or {}, analysis.inputs or {}
    look = _look(analysis)
    latest = analysis_latest(rollout=analysis.rollout)
    return DecisionRecord(
        analysis=analysis,
        look=look,
        is_latest=latest is not None and latest.pk == analysis.pk,
        judge_action=JUDGE_ACTIONS.get(analysis.action, analysis.action),
        recommendation=readout.recommendation(body, look=look),
        interval_level=percent(readout.interval_level(body)),
        banner=readout.health(body),
        arms=_arms(body),
        statistics=_statistics(body),
        thresholds=_thresholds(body, inputs),
        srm=_srm(body, inputs),
        srm_findings=list(body.get("srm") or []),
        power=_power(body),
        tests=sorted((inputs.get("tests") or {}).items()),
        actions=_actions(analysis),
        reasons=list(body.get("reasons") or []),
        notes=list(body.get("notes") or []),
        failures=dict(body.get("metric_failures") or {}),
        api_path=f"/api/v1/rollouts/{analysis.rollout_id}/analysis",
    )


def _analysis_for(model_admin, request, object_id) -> Analysis:
    analysis = (
        Analysis.objects.select_related("rollout", "rollout__flow", "rollout__flow__app")
        .filter(pk=object_id)
        .first()
        if str(object_id).isdigit()
        else None
    )
    if analysis is None:
        raise Http404(f"No analysis {object_id}.")
    if not model_admin.has_view_permission(request, analysis):
        raise PermissionDenied
    return analysis


def decision_record_view(model_admin, request, object_id, extra_context=None):
    """The Analysis admin's change view: the record, printable."""
    analysis = _analysis_for(model_admin, request, object_id)
    record = decision_record(analysis)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Decision record: {record.recommendation.title}",
        "subtitle": f"{analysis.rollout.flow} · look {record.look}",
        "opts": model_admin.opts,
        "original": analysis,
        "record": record,
        "json_url": reverse("admin:experiments_analysis_json", args=[analysis.pk]),
        "rollout_url": reverse("admin:rollout_rollout_change", args=[analysis.rollout_id]),
        **(extra_context or {}),
    }
    return TemplateResponse(request, "admin/experiments/analysis/decision_record.html", context)


def analysis_json_view(model_admin, request, object_id):
    """The stored analysis as JSON: the body the API answers with, and the inputs."""
    analysis = _analysis_for(model_admin, request, object_id)
    return JsonResponse(
        {
            "id": analysis.pk,
            "rollout_id": str(analysis.rollout_id),
            "computed_at": analysis.computed_at.isoformat(),
            "watermark": analysis.watermark.isoformat(),
            "decision": analysis.decision,
            "action": analysis.action,
            "body": analysis.body,
            "inputs": analysis.inputs,
            "sequential_state": analysis.sequential_state,
        },
        json_dumps_params={"indent": 2},
    )
