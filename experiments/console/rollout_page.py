"""
What the rollout page shows (CONSOLE.md, page 3), read in one place: the stage stepper and its
gates, set and exposed shares, the health banner, the results table, the recommendation, the
power, rollback propagation, the audit history and the alerts.

Every result text comes from `experiments.readout` over the latest stored analysis, so the
page, the alerts and the API read the same decision object.
"""

from dataclasses import dataclass, field, replace
from datetime import datetime

from django.utils.safestring import mark_safe

from rollout.arms import BASELINE
from rollout.metrics import PRIMARY
from rollout.models import Rollout, RolloutState
from rollout.selectors import rollout_exposure_counts, rollout_rollback_progress
from rollout.shares import percent_text

from .. import readout
from ..models import Alert, Analysis
from ..selectors import analysis_history, analysis_latest, rollout_stage_changes
from . import charts


@dataclass(frozen=True)
class Step:
    share: str
    status: str  # "done", "current", "next"


@dataclass(frozen=True)
class Gate:
    name: str
    progress: str
    met: bool


@dataclass(frozen=True)
class ResultRow:
    arm: str
    metric: str
    guardrail: bool
    baseline: str
    challenger: str
    difference: str
    comparison: dict
    p_values: str
    chip: readout.Chip | None
    interval_svg: str = ""


@dataclass
class RolloutPage:
    rollout: Rollout
    analysis: Analysis | None
    look: int
    steps: dict[str, list[Step]]
    gates: list[Gate]
    shares: list[dict]
    banner: readout.Banner | None
    recommendation: readout.Recommendation | None
    results: list[ResultRow]
    interval_level: str | None
    power: dict | None
    rollback: dict | None
    history: list[dict]
    alerts: list[Alert] = field(default_factory=list)
    interval_axis: str = ""
    charts: list[dict] = field(default_factory=list)

    @property
    def results_hidden(self) -> bool:
        return self.banner is not None and self.banner.blocks_results


def _steps(rollout: Rollout) -> dict[str, list[Step]]:
    steps = {}
    for arm in rollout.arms.all():
        reached = rollout.state != RolloutState.DRAFT
        current = max((i for i, s in enumerate(arm.stages) if s <= arm.share), default=-1)
        steps[arm.name] = [
            Step(
                percent_text(stage),
                "current" if reached and i == current else "done" if i < current else "next",
            )
            for i, stage in enumerate(arm.stages)
        ]
    return steps


def _metric_text(stats: dict, proportion: bool) -> str:
    n, mean = stats.get("n"), stats.get("mean")
    if n is None:
        return "—"
    if mean is None:
        return f"n = {n:,}"
    return f"{mean * 100:.1f} % (n = {n:,})" if proportion else f"{mean:.3g} (n = {n:,})"


def _p_text(comparison: dict) -> str:
    p, adjusted = comparison.get("sequential_p"), comparison.get("sequential_p_adjusted")
    if p is None:
        return "—"
    shown = readout.p_value_text(p)
    return f"{shown} / {readout.p_value_text(adjusted)}" if adjusted is not None else shown


def _results(body: dict) -> list[ResultRow]:
    baseline = next((a for a in body.get("arms", []) if a["arm"] == BASELINE), {})
    rows = []
    for arm in body.get("arms", []):
        if arm["arm"] == BASELINE:
            continue
        # Guardrails first, the primary metric last (CONSOLE.md, page 3).
        for metric in sorted(arm.get("metrics", {}), key=lambda m: m == PRIMARY):
            comparison = arm["metrics"][metric]
            proportion = readout.is_proportion(comparison)
            rows.append(
                ResultRow(
                    arm=arm["arm"],
                    metric=readout.metric_title(metric),
                    guardrail=metric != PRIMARY,
                    baseline=_metric_text(baseline.get("metrics", {}).get(metric, {}), proportion),
                    challenger=_metric_text(comparison, proportion),
                    difference=readout.difference_text(comparison, proportion=proportion),
                    comparison=comparison,
                    p_values=_p_text(comparison),
                    chip=readout.chip(comparison),
                )
            )
    return rows


def _gates(rollout: Rollout, body: dict | None, now: datetime) -> list[Gate]:
    if rollout.state not in (RolloutState.RUNNING, RolloutState.PAUSED):
        return []
    gates = []
    if rollout.stage_started_at is not None:
        minutes = (now - rollout.stage_started_at).total_seconds() / 60
        gates.append(
            Gate(
                "Minimum time in stage",
                f"{min(minutes, rollout.stage_min_minutes):.0f} / {rollout.stage_min_minutes} min",
                minutes >= rollout.stage_min_minutes,
            )
        )
    if body is not None:
        needed = (body.get("power") or {}).get("devices_per_arm_to_advance") or 0
        smallest = min((a.get("exposed", 0) for a in body.get("arms", [])), default=0)
        gates.append(
            Gate(
                "Devices per arm",
                f"{smallest:,} / {needed:,}",
                smallest >= needed,
            )
        )
        worse = [r for r in _results(body) if r.guardrail and r.chip == readout.WORSE]
        gates.append(
            Gate(
                "Guardrails clean",
                "all clean" if not worse else ", ".join(f"{r.metric} worse" for r in worse),
                not worse,
            )
        )
    return gates


def _shares(rollout: Rollout, exposure: dict) -> list[dict]:
    total = sum(c["exposed"] for c in exposure.values())
    rows = []
    for arm in rollout.arms.all():
        exposed = exposure.get(arm.name, {}).get("exposed", 0)
        rows.append(
            {
                "arm": arm.name,
                "set": percent_text(arm.share_now),
                "exposed": exposed,
                "exposed_share": f"{exposed / total:.1%}" if total else "—",
            }
        )
    baseline = exposure.get(BASELINE, {}).get("exposed", 0)
    rows.append(
        {
            "arm": BASELINE,
            "set": "rest",
            "exposed": baseline,
            "exposed_share": f"{baseline / total:.1%}" if total else "—",
        }
    )
    return rows


def _power(body: dict | None) -> dict | None:
    """Progress toward the devices the power calculation asks for; reaching it reads
    "Enough data", never "Significant"."""
    power = (body or {}).get("power")
    if not power:
        return None
    needed = power.get("devices_per_arm_needed")
    smallest = min((a.get("exposed", 0) for a in body.get("arms", [])), default=0)
    lift = power.get("min_detectable_lift")
    return {
        "needed": needed,
        "have": smallest,
        "percent": min(100, round(100 * smallest / needed)) if needed else None,
        "enough": bool(needed) and smallest >= needed,
        "lift": f"{lift * 100:.3g} %" if lift is not None else None,
    }


def _with_intervals(rows: list[ResultRow]) -> tuple[list[ResultRow], str]:
    """Every row's interval drawn on one zero-centred axis shared by the whole table."""
    if not rows:
        return rows, ""
    axis = charts.interval_cells(
        [charts.interval_row(r.metric, r.comparison) for r in rows], width=180
    )
    drawn = [
        replace(row, interval_svg=mark_safe(cell.svg))
        for row, cell in zip(rows, axis.cells, strict=True)
    ]
    return drawn, mark_safe(axis.axis)


def _charts(rollout: Rollout, body: dict | None) -> list[dict]:
    """Cumulative lift of each challenger on the primary metric, and exposed devices per arm
    against the shares, over the stored looks; each with its summary and table fallback."""
    history = analysis_history(rollout=rollout)
    if not history:
        return []
    changes = rollout_stage_changes(rollout=rollout)
    looks = history[-1]["look"]
    level = history[-1].get("interval_level")
    drawn = []
    for arm in [a["arm"] for a in (body or history[-1])["arms"] if a["arm"] != BASELINE]:
        points = []
        for look in history:
            entry = next((a for a in look["arms"] if a["arm"] == arm), None)
            comparison = (entry or {}).get("metrics", {}).get(PRIMARY)
            if comparison and comparison.get("diff") is not None:
                # Conversion is a share of devices: shown in percentage points.
                low, high = comparison.get("sequential_ci") or (None, None)
                points.append(
                    (
                        look["at"],
                        comparison["diff"] * 100,
                        None if low is None else low * 100,
                        None if high is None else high * 100,
                    )
                )
        chart = charts.lift_over_time(
            points,
            stage_changes=changes,
            arm=arm,
            metric=readout.metric_title(PRIMARY),
            level=level,
            looks=looks,
        )
        drawn.append({"title": f"Lift of {arm} on conversion over time", "chart": chart})
    exposure = charts.exposure_over_time(
        [(look["at"], {a["arm"]: a["exposed"] for a in look["arms"]}) for look in history],
        expected_shares=[{a["arm"]: a.get("share", 0.0) for a in look["arms"]} for look in history],
        stage_changes=changes,
        looks=looks,
    )
    drawn.append({"title": "Devices exposed per arm against the expected split", "chart": exposure})
    for item in drawn:
        item["svg"] = mark_safe(item["chart"].svg)
    return drawn


def _history(rollout: Rollout) -> list[dict]:
    analyses = set(rollout.analyses.values_list("pk", flat=True))
    events = []
    for event in rollout.events.order_by("-at", "-pk"):
        analysis_id = (event.evidence or {}).get("analysis_id")
        events.append(
            {
                "at": event.at,
                "actor": "Cohort (automatic)" if event.actor == "system" else event.actor,
                "action": event.action,
                "reason": event.reason,
                "before": event.before.get("state", "—"),
                "after": event.after.get("state", "—"),
                "analysis_id": analysis_id if analysis_id in analyses else None,
            }
        )
    return events


def rollout_page(rollout: Rollout, *, now: datetime) -> RolloutPage:
    latest = analysis_latest(rollout=rollout)
    body = latest.body if latest is not None else None
    exposure = rollout_exposure_counts(rollout=rollout)
    results, axis = _with_intervals(_results(body) if body else [])
    if body is None:
        banner = readout.Banner(
            "info", "Not analysed yet", "The judge has not looked at this rollout yet."
        )
    else:
        banner = readout.health(body)
    return RolloutPage(
        rollout=rollout,
        analysis=latest,
        look=rollout.analyses.count(),
        steps=_steps(rollout),
        gates=_gates(rollout, body, now),
        shares=_shares(rollout, exposure),
        banner=banner,
        recommendation=readout.recommendation(body, look=rollout.analyses.count())
        if body
        else None,
        results=results,
        interval_axis=axis,
        charts=_charts(rollout, body),
        interval_level=readout.interval_level_text(body) if body else None,
        power=_power(body),
        rollback=rollout_rollback_progress(rollout=rollout),
        history=_history(rollout),
        alerts=list(rollout.alerts.prefetch_related("deliveries__channel")),
    )
