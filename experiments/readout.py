"""
How a stored analysis reads to people (pure: no Django).

One analysis body (`analysis.analyze`'s frozen result, as stored) is the one decision object:
every chip, banner, badge and sentence about a result is derived here from it, so the console,
the alert e-mails and the webhook texts can never disagree (CONSOLE.md, principle 1).

- A chip says "Better", "Worse" or "No detectable difference" from the comparison's
  `direction`, which the judge itself acts on: "Better" exactly when the always-valid interval
  lies wholly on the good side (for a lower-is-better metric, below zero), "Worse" exactly when
  it lies wholly on the harmful side of the margin. No chip before the minimums.
- The health banner hides results that must not be acted on: a sample-ratio mismatch, or no
  data yet.
- The recommendation is the decision with its reason sentence.
"""

import math
from dataclasses import dataclass
from datetime import datetime

from rollout.arms import BASELINE
from rollout.metrics import MODEL_ERROR, OUTCOME_PREFIX, PRIMARY, VALUE

from . import decisions

# A fixed-horizon SRM p-value in this band is worth a look, not a stop (CONSOLE.md, page 3).
SRM_WARNING_P_VALUE = 0.01
MINUS = "\u2212"  # a true minus sign, as wide as the plus


@dataclass(frozen=True)
class Chip:
    label: str  # "Better", "Worse", "No detectable difference"
    symbol: str  # check, cross or dash: colour never carries the meaning alone
    tone: str  # "good", "bad", "neutral": the CSS class


BETTER = Chip("Better", "✓", "good")
WORSE = Chip("Worse", "✗", "bad")
NO_DIFFERENCE = Chip("No detectable difference", "\u2013", "neutral")


@dataclass(frozen=True)
class Banner:
    tone: str  # "bad" (blocking: results hidden), "warning", "info"
    title: str
    sentence: str

    @property
    def blocks_results(self) -> bool:
        return self.tone == "bad"


@dataclass(frozen=True)
class Recommendation:
    decision: str
    title: str
    sentence: str
    tone: str


def chip(comparison: dict) -> Chip | None:
    """The chip of one challenger's comparison on one metric; None while data is lacking."""
    if comparison.get("error") or comparison.get("insufficient"):
        return None
    direction = comparison.get("direction")
    if direction == "better":
        return BETTER
    if direction == "worse":
        return WORSE
    return NO_DIFFERENCE


def metric_title(metric: str) -> str:
    if metric == PRIMARY:
        return "conversion"
    if metric == MODEL_ERROR:
        return "model errors"
    if metric == VALUE:
        return "value per device"
    if metric.startswith(OUTCOME_PREFIX):
        return f"outcome {metric[len(OUTCOME_PREFIX) :]}"
    return metric


def is_proportion(comparison: dict) -> bool:
    """Whether a comparison is of shares of devices (shown in percentage points)."""
    mean, base = comparison.get("mean"), comparison.get("baseline_mean")
    return mean is not None and base is not None and 0 <= mean <= 1 and 0 <= base <= 1


def difference_text(comparison: dict, *, proportion: bool) -> str:
    """The difference with its always-valid interval, e.g. "-2.1 pp (-3.4 … -0.8)" (with
    true minus signs)."""
    diff, ci = comparison.get("diff"), comparison.get("sequential_ci")
    if diff is None:
        return "—"
    if proportion:
        text = f"{_signed(diff * 100)} pp"
        if ci:
            text += f" ({_signed(ci[0] * 100)} … {_signed(ci[1] * 100)})"
        return text
    text = _signed(diff, digits=3)
    if ci:
        text += f" ({_signed(ci[0], digits=3)} … {_signed(ci[1], digits=3)})"
    return text


def _signed(value: float, digits: int = 1) -> str:
    text = f"{value:+.{digits}f}" if abs(value) >= 10**-digits or value == 0 else f"{value:+.2g}"
    return text.replace("-", MINUS)


def interval_level(body: dict) -> float:
    """The coverage of every always-valid interval in the body (Bonferroni across challengers
    and metrics), e.g. 0.99."""
    level = (body.get("thresholds") or {}).get("interval_level")
    if level is not None:
        return level
    alpha = (body.get("thresholds") or {}).get("alpha", 0.05)
    challengers = max(1, len(body.get("arms", [])) - 1)
    metrics = max(1, len(_first_challenger(body).get("metrics", {})))
    return 1 - alpha / (challengers * metrics)


def interval_level_text(body: dict) -> str:
    """The interval level as printed under every results table and in every sentence."""
    return f"{interval_level(body) * 100:.4g} %"


def p_value_text(p: float | None) -> str:
    if p is None:
        return "—"
    return "< 0.0001" if p < 0.0001 else f"{p:.2g}" if p < 0.01 else f"{p:.2f}"


def _first_challenger(body: dict) -> dict:
    return next((a for a in body.get("arms", []) if a.get("arm") != BASELINE), {})


def collecting(body: dict) -> tuple[int, int] | None:
    """(devices in the smallest arm, devices needed per arm) while below the minimum."""
    needed = (body.get("thresholds") or {}).get("min_devices_per_arm") or 0
    exposed = [arm.get("exposed", 0) for arm in body.get("arms", [])]
    if not exposed or min(exposed) >= needed:
        return None
    return min(exposed), needed


def health(body: dict) -> Banner | None:
    """The banner above the results, or None when they may be read as they are."""
    if body.get("srm"):
        p = body.get("srm_p_value")
        shown = f" (p = {p:.2g})" if p is not None else ""
        return Banner(
            "bad",
            "Sample ratio mismatch",
            f"The arms did not get the devices their shares promise{shown}: something other "
            "than the model decides who is counted. Do not act on these results.",
        )
    if not any(arm.get("exposed") for arm in body.get("arms", [])):
        return Banner(
            "bad",
            "No data yet",
            "No device has been counted in any arm. Do not act on these results.",
        )
    p = body.get("srm_p_value")
    if p is not None and p < SRM_WARNING_P_VALUE:
        return Banner(
            "warning",
            "Sample ratio worth a look",
            f"The arms' device counts are somewhat off their shares (p = {p:.2g}); the "
            "sequential check has not flagged them.",
        )
    return None


_TITLES = {
    decisions.ROLLBACK: ("Roll back recommended", "bad"),
    decisions.PROMOTE_RECOMMENDED: ("Ready to promote", "good"),
    decisions.SRM_ALERT: ("Unhealthy: sample ratio mismatch", "bad"),
    decisions.INSUFFICIENT_DATA: ("Collecting data", "info"),
    decisions.ADVANCE: ("Advance", "good"),
    decisions.CONTINUE: ("Keep running", "info"),
}


def recommendation(body: dict, *, look: int | None = None) -> Recommendation:
    """The decision with its reason sentence, e.g. "Roll back recommended: conversion -2.1 pp
    (always-valid 99 % interval -3.4 … -0.8), look 37, 14:05"."""
    decision = body.get("decision", decisions.CONTINUE)
    title, tone = _TITLES.get(decision, (decision, "info"))
    when = _when(body, look)
    if decision in (decisions.ROLLBACK, decisions.PROMOTE_RECOMMENDED):
        wanted = "worse" if decision == decisions.ROLLBACK else "better"
        found = _first_with_direction(body, wanted)
        if found is not None:
            arm, metric, comparison = found
            level = interval_level_text(body)
            return Recommendation(
                decision,
                title,
                f"{title}: {arm} {metric_title(metric)} "
                f"{difference_text(comparison, proportion=is_proportion(comparison))} "
                f"(always-valid {level} interval){when}.",
                tone,
            )
    if decision == decisions.INSUFFICIENT_DATA and (progress := collecting(body)):
        have, need = progress
        return Recommendation(
            decision, title, f"Collecting data: {have:,} / {need:,} devices per arm{when}.", tone
        )
    reasons = body.get("reasons") or []
    reason = reasons[0] if reasons else "no significant difference yet"
    return Recommendation(decision, title, f"{title}: {reason}{when}.", tone)


def _first_with_direction(body: dict, direction: str) -> tuple[str, str, dict] | None:
    for arm in body.get("arms", []):
        if arm.get("arm") == BASELINE:
            continue
        metrics = arm.get("metrics", {})
        # The primary metric first, then guardrails in their order.
        for metric in sorted(metrics, key=lambda m: m != PRIMARY):
            if metrics[metric].get("direction") == direction:
                return arm["arm"], metric, metrics[metric]
    return None


def _when(body: dict, look: int | None) -> str:
    parts = []
    if look is not None:
        parts.append(f"look {look}")
    computed = body.get("computed_at")
    if computed:
        moment = datetime.fromisoformat(computed) if isinstance(computed, str) else computed
        parts.append(moment.strftime("%H:%M UTC"))
    return ", " + ", ".join(parts) if parts else ""


# --- The state badge of a rollout (CONSOLE.md, pages 1 and 2) ---------------------------------


@dataclass(frozen=True)
class Badge:
    label: str  # one of STATE_LEGEND's labels
    sentence: str  # what it means for this rollout, shown on hover
    tone: str  # "good", "bad", "warning", "info", "neutral": the CSS class


NO_ROLLOUT = "No rollout"
DRAFT = "Draft"
RAMPING = "Ramping"
HOLDING = "Holding"
PAUSED = "Paused"
GUARDRAIL_FAILING = "Guardrail failing \u2014 roll back recommended"
ROLLED_BACK = "Rolled back"
READY_TO_PROMOTE = "Ready to promote"
PROMOTED = "Promoted"
UNHEALTHY = "Unhealthy"

# Every state a flow's rollout can be in, with the one sentence the legend gives it, in the
# order a rollout meets them.
STATE_LEGEND: tuple[tuple[str, str, str], ...] = (
    (DRAFT, "neutral", "Set up but not started: no device gets the challenger yet."),
    (RAMPING, "info", "Running at its current stage; it moves on when its gates are met."),
    (HOLDING, "warning", "Running, but a gate is unmet (devices per arm, or data to decide on)."),
    (PAUSED, "warning", "Stopped by someone: shares are frozen and every device keeps its model."),
    (
        GUARDRAIL_FAILING,
        "bad",
        "A challenger is significantly worse on a guardrail or the primary metric.",
    ),
    (
        ROLLED_BACK,
        "bad",
        "Every device was sent back to the baseline, automatically or by someone.",
    ),
    (
        READY_TO_PROMOTE,
        "good",
        "At its final stage, a challenger is significantly better, with no guardrail harm.",
    ),
    (PROMOTED, "good", "The challenger became the flow's baseline; the rollout is over."),
    (
        UNHEALTHY,
        "bad",
        "The data cannot be trusted (sample ratio mismatch) or there is none: do not act on it.",
    ),
)
_LEGEND_TONES = {label: tone for label, tone, _ in STATE_LEGEND}


def actor_text(actor: str | None) -> str:
    """Who, as people read it: the judge is "Cohort (automatic)", a user is their name."""
    if not actor:
        return "someone"
    if actor == "system":
        return "Cohort (automatic)"
    kind, _, name = actor.partition(":")
    if kind == "user" and name:
        return name
    if kind == "token" and name:
        return f"{name.split('/', 1)[0]} (API token)"
    return actor


def state_badge(
    rollout_state: str | None,
    body: dict | None,
    *,
    paused_by: str | None = None,
    rolled_back_by: str | None = None,
    reason: str | None = None,
) -> Badge:
    """The badge of a flow's rollout from its state and its latest analysis body.

    `rollout_state` is the stored state ("draft", "running", "paused", "completed",
    "rolled_back"; None: the flow has no rollout). `paused_by` and `rolled_back_by` are the
    audit log's actors of that change, `reason` its reason. The sentence of a result-driven
    badge is the recommendation's own, so the badge and the rollout page say the same thing.
    """
    because = f" Reason: {reason}" if reason else ""
    if rollout_state is None:
        return Badge(NO_ROLLOUT, "No rollout on this flow yet: every device runs the baseline.",
                     "neutral")  # fmt: skip
    if rollout_state == "draft":
        return _badge(DRAFT, "Set up but not started: no device gets the challenger yet.")
    if rollout_state == "completed":
        return _badge(PROMOTED, "The challenger became the flow's baseline; the rollout is over.")
    if rollout_state == "rolled_back":
        if rolled_back_by == "system":
            who = "automatically by Cohort's judge"
        else:
            who = f"by {actor_text(rolled_back_by)}"
        return _badge(
            ROLLED_BACK, f"Rolled back {who}: every device returns to the baseline.{because}"
        )
    decision = (body or {}).get("decision")
    paused = rollout_state == "paused"
    # Harm outranks a pause: the challenger's devices keep it while paused.
    if body is not None and (decision == decisions.ROLLBACK or guardrails_worse(body)):
        sentence = recommendation(body).sentence
        if paused:
            sentence += f" Paused by {actor_text(paused_by)} meanwhile."
        return _badge(GUARDRAIL_FAILING, sentence)
    if paused:
        return _badge(
            PAUSED,
            f"Paused by {actor_text(paused_by)}: shares are frozen and every device keeps its "
            f"model.{because}",
        )
    if body is None:
        return _badge(RAMPING, "Running at its first stage; the judge has not analysed it yet.")
    banner = health(body)
    if decision == decisions.SRM_ALERT or (banner is not None and banner.blocks_results):
        sentence = banner.sentence if banner is not None else recommendation(body).sentence
        return _badge(UNHEALTHY, sentence)
    if decision == decisions.PROMOTE_RECOMMENDED:
        return _badge(READY_TO_PROMOTE, recommendation(body).sentence)
    if decision == decisions.INSUFFICIENT_DATA:
        return _badge(HOLDING, recommendation(body).sentence)
    smallest = _smallest_arm(body)
    to_advance = (body.get("power") or {}).get("devices_per_arm_to_advance")
    if decision != decisions.ADVANCE and to_advance and smallest < to_advance:
        return _badge(
            HOLDING,
            f"Holding: {smallest:,} / {to_advance:,} devices per arm needed to advance.",
        )
    return _badge(RAMPING, recommendation(body).sentence)


def _badge(label: str, sentence: str) -> Badge:
    return Badge(label, sentence, _LEGEND_TONES[label])


def guardrails_worse(body: dict) -> list[tuple[str, str]]:
    """(arm, metric) of every guardrail (any metric but the primary) whose chip is Worse."""
    return [
        (arm["arm"], metric)
        for arm in body.get("arms", [])
        if arm.get("arm") != BASELINE
        for metric, comparison in arm.get("metrics", {}).items()
        if metric != PRIMARY and chip(comparison) == WORSE
    ]


def _smallest_arm(body: dict) -> int:
    return min((arm.get("exposed", 0) for arm in body.get("arms", [])), default=0)


# --- Time left (CONSOLE.md: stage ETAs from measured traffic and the power calculation) ------


def days_left(first: dict | None, last: dict | None) -> int | None:
    """Whole days until the smallest arm has the devices the power calculation needs.

    Measured, not scheduled: the smallest arm's growth between the first and the last analysis
    of the rollout, carried forward at the same rate. 0 once there are enough devices; None when
    it cannot be known (no power figure, one look only, or no growth).
    """
    if last is None:
        return None
    needed = (last.get("power") or {}).get("devices_per_arm_needed")
    if not needed:
        return None
    have = _smallest_arm(last)
    if have >= needed:
        return 0
    if first is None:
        return None
    start, end = _moment(first.get("computed_at")), _moment(last.get("computed_at"))
    if start is None or end is None:
        return None
    elapsed_days = (end - start).total_seconds() / 86400
    growth = have - _smallest_arm(first)
    if elapsed_days <= 0 or growth <= 0:
        return None
    return max(1, math.ceil((needed - have) / (growth / elapsed_days)))


def days_left_text(days: int | None) -> str:
    if days is None:
        return "\u2014"
    if days == 0:
        return "Enough data"
    return f"~{days} day{'s' if days != 1 else ''} left (estimate)"


def _moment(value) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value) if isinstance(value, str) else value
