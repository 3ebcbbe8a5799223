"""
What the flows overview (CONSOLE.md, page 1) shows for each flow, read in a fixed number of
queries whatever the number of flows: the flow's current rollout (the active one, else the
latest), its arms, its first and latest analyses and its audit log's last entries.

Every result text comes from `experiments.readout` over the latest stored analysis, so a row
says what the rollout page, the alerts and the API say.
"""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Case, IntegerField, OuterRef, QuerySet, Subquery, Value, When

from registry.models import Flow
from rollout.arms import BASELINE
from rollout.metrics import PRIMARY
from rollout.models import ACTIVE_STATES, Rollout, RolloutEvent, RolloutState
from rollout.shares import percent_text

from .. import readout
from ..models import Analysis

# The audit log's actions that put a rollout in the state its badge names.
_STATE_ACTIONS = {RolloutState.PAUSED: "pause", RolloutState.ROLLED_BACK: "rollback"}


@dataclass(frozen=True)
class PrimaryLift:
    text: str  # the difference with its interval, "Collecting data: …", or a dash
    comparison: dict | None  # shown as an interval bar when it has an interval
    chip: readout.Chip | None
    note: str  # how it was computed, or why it is not shown


@dataclass(frozen=True)
class FlowRow:
    rollout: Rollout | None
    badge: readout.Badge
    stage: str
    lift: PrimaryLift
    guardrails: tuple[str, str]  # (symbol, sentence)
    days_left: str
    last_action: RolloutEvent | None


def with_current_rollout(flows: QuerySet) -> QuerySet:
    """Annotate each flow with `current_rollout_id`: its active rollout, else its latest one."""
    current = (
        Rollout.objects.filter(flow=OuterRef("pk"))
        .annotate(
            active_first=Case(
                When(state__in=ACTIVE_STATES, then=Value(0)),
                default=Value(1),
                output_field=IntegerField(),
            )
        )
        .order_by("active_first", "-created_at")
        .values("pk")[:1]
    )
    return flows.annotate(current_rollout_id=Subquery(current))


def _analyses(order: tuple[str, ...]) -> Subquery:
    return Subquery(
        Analysis.objects.filter(rollout=OuterRef("pk")).order_by(*order).values("pk")[:1]
    )


def _events(**filters) -> Subquery:
    return Subquery(
        RolloutEvent.objects.filter(rollout=OuterRef("pk"), **filters)
        .order_by("-at", "-pk")
        .values("pk")[:1]
    )


def flow_rows(flows: list[Flow]) -> dict:
    """The overview row of each flow (annotated by `with_current_rollout`), by flow id.

    Four queries: the rollouts with their arms, the analyses, the audit entries.
    """
    rollout_ids = [f.current_rollout_id for f in flows if f.current_rollout_id is not None]
    rollouts = {}
    if rollout_ids:
        rollouts = {
            r.pk: r
            for r in Rollout.objects.filter(pk__in=rollout_ids)
            .annotate(
                latest_analysis_id=_analyses(("-computed_at", "-id")),
                first_analysis_id=_analyses(("computed_at", "id")),
                last_event_id=_events(),
                pause_event_id=_events(action="pause"),
                rollback_event_id=_events(action="rollback"),
            )
            .prefetch_related("arms")
        }
    analysis_ids = {
        pk
        for r in rollouts.values()
        for pk in (r.latest_analysis_id, r.first_analysis_id)
        if pk is not None
    }
    bodies = (
        dict(Analysis.objects.filter(pk__in=analysis_ids).values_list("pk", "body"))
        if analysis_ids
        else {}
    )
    event_ids = {
        pk
        for r in rollouts.values()
        for pk in (r.last_event_id, r.pause_event_id, r.rollback_event_id)
        if pk is not None
    }
    events = RolloutEvent.objects.in_bulk(event_ids) if event_ids else {}
    return {flow.pk: _row(rollouts.get(flow.current_rollout_id), bodies, events) for flow in flows}


def _row(rollout: Rollout | None, bodies: dict, events: dict) -> FlowRow:
    if rollout is None:
        return FlowRow(
            rollout=None,
            badge=readout.state_badge(None, None),
            stage="\u2014",
            lift=PrimaryLift("\u2014", None, None, "No rollout."),
            guardrails=("\u2014", "No rollout."),
            days_left="\u2014",
            last_action=None,
        )
    body = bodies.get(rollout.latest_analysis_id)
    state_event = None
    if rollout.state in _STATE_ACTIONS:
        action = _STATE_ACTIONS[rollout.state]
        state_event = events.get(
            rollout.pause_event_id if action == "pause" else rollout.rollback_event_id
        )
    actor = state_event.actor if state_event else None
    badge = readout.state_badge(
        rollout.state,
        body,
        paused_by=actor if rollout.state == RolloutState.PAUSED else None,
        rolled_back_by=actor if rollout.state == RolloutState.ROLLED_BACK else None,
        reason=state_event.reason if state_event else None,
    )
    active = rollout.state in ACTIVE_STATES
    days = (
        readout.days_left(bodies.get(rollout.first_analysis_id), body) if active and body else None
    )
    return FlowRow(
        rollout=rollout,
        badge=badge,
        stage=_stage(rollout),
        lift=_lift(body),
        guardrails=_guardrails(body),
        days_left=readout.days_left_text(days) if active else "\u2014",
        last_action=events.get(rollout.last_event_id),
    )


def _stage(rollout: Rollout) -> str:
    """ "2/5 · 20 %": the first challenger's stage of its plan and its current share."""
    arms = list(rollout.arms.all())
    if not arms:
        return "\u2014"
    arm = arms[0]
    if rollout.state == RolloutState.DRAFT:
        return f"not started \u00b7 {len(arm.stages)} stages"
    if rollout.state not in ACTIVE_STATES:
        return "\u2014"
    return f"{arm.stage_index + 1}/{len(arm.stages)} \u00b7 {percent_text(arm.share)}"


def _primary(body: dict) -> dict | None:
    for arm in body.get("arms", []):
        if arm.get("arm") != BASELINE:
            return arm.get("metrics", {}).get(PRIMARY)
    return None


def _lift(body: dict | None) -> PrimaryLift:
    if body is None:
        return PrimaryLift("\u2014", None, None, "Not analysed yet.")
    banner = readout.health(body)
    if banner is not None and banner.blocks_results:
        return PrimaryLift("\u2014", None, None, f"Hidden: {banner.title}.")
    comparison = _primary(body)
    if not comparison:
        return PrimaryLift("\u2014", None, None, "No primary metric.")
    chip = readout.chip(comparison)
    if chip is None:
        progress = readout.collecting(body)
        text = (
            f"Collecting data: {progress[0]:,} / {progress[1]:,}" if progress else "Not enough data"
        )
        return PrimaryLift(text, None, None, comparison.get("insufficient") or text)
    proportion = readout.is_proportion(comparison)
    level = readout.interval_level(body) * 100
    note = (
        f"{readout.metric_title(PRIMARY)}: challenger minus baseline, always-valid "
        f"{level:.4g} % interval; n = {comparison.get('n', 0):,}; data up to "
        f"{_watermark(body)}."
    )
    return PrimaryLift(
        readout.difference_text(comparison, proportion=proportion),
        comparison if comparison.get("sequential_ci") else None,
        chip,
        note,
    )


def _watermark(body: dict) -> str:
    value = body.get("watermark")
    if not value:
        return "\u2014"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M %Z").strip()


def _guardrails(body: dict | None) -> tuple[str, str]:
    if body is None:
        return ("\u2014", "Not analysed yet.")
    worse = readout.guardrails_worse(body)
    if worse:
        names = ", ".join(sorted({readout.metric_title(metric) for _, metric in worse}))
        return ("\u26a0", f"Worse: {names}.")
    banner = readout.health(body)
    if banner is not None and banner.blocks_results:
        return ("\u2014", f"Hidden: {banner.title}.")
    judged = [
        comparison
        for arm in body.get("arms", [])
        if arm.get("arm") != BASELINE
        for metric, comparison in arm.get("metrics", {}).items()
        if metric != PRIMARY and readout.chip(comparison) is not None
    ]
    if not judged:
        return ("\u2014", "Collecting data: no guardrail can be judged yet.")
    return ("\u2713", "No guardrail is worse.")
