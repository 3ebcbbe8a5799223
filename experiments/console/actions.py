"""
What a rollout action will do, shown on its confirmation page before anyone confirms it
(CONSOLE.md, page 4), and what confirming it then takes.

- Roll back is fast: the share now, the devices exposed to a challenger, the model they go
  back to; a reason, and no name to type.
- Advance, promote and resume show each challenger's share now and next, the devices that will
  download its model with how that was estimated, the bytes and their egress cost (at
  `EGRESS_PRICE_PER_GB`, beside the S3 and R2 presets), the gates of the current stage not met,
  and whether the action goes against the recommendation. Going past an unmet gate or against
  the recommendation takes the flow's name typed, and the audit row says so. Promoting always
  takes it: it changes the model of every device, and a rollback does not undo it.

The gates and the recommendation are the rollout page's own (`rollout_page`), so the page and
its confirmations never disagree.
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings

from rollout.admin import ActionCheck
from rollout.arms import BASELINE
from rollout.downloads import (
    BYTES_PER_GB,
    EGRESS_PRESETS,
    bytes_text,
    downloads_estimate,
    money_text,
)
from rollout.models import Rollout
from rollout.selectors import rollout_exposure_counts
from rollout.shares import ALL_DEVICES, percent_text

from .. import decisions
from .rollout_page import Gate, rollout_page

# The actions whose confirmation shows downloads, gates and the recommendation.
RAMP_ACTIONS = ("advance", "promote", "resume")
# Decisions an action that grows or keeps the challenger's share goes against.
_HARM = (decisions.ROLLBACK, decisions.SRM_ALERT)


@dataclass(frozen=True)
class Price:
    label: str  # "configured", "S3", "R2"
    per_gb: float

    @property
    def text(self) -> str:
        return f"${self.per_gb:g}/GB"


@dataclass(frozen=True)
class ShareMove:
    """One challenger's share now and next, and the downloads that takes."""

    arm: str
    now: str
    next: str
    devices: int | None  # None: nothing to estimate from
    how: str  # how the devices were estimated
    total_bytes: int | None
    costs: list[str]  # per price of ActionImpact.prices, in order

    @property
    def devices_text(self) -> str:
        return "\u2014" if self.devices is None else f"{self.devices:,}"

    @property
    def bytes_text(self) -> str:
        return bytes_text(self.total_bytes)


@dataclass
class ActionImpact:
    action: str
    prices: list[Price] = field(default_factory=list)
    moves: list[ShareMove] = field(default_factory=list)
    total: ShareMove | None = None  # several challengers advancing together
    # Roll back:
    shares_now: list[tuple[str, str]] = field(default_factory=list)  # (arm, share)
    exposed_to_challenger: int | None = None
    returns_to: str = ""
    # Advance, promote, resume:
    unmet_gates: list[Gate] = field(default_factory=list)
    recommendation: object = None  # readout.Recommendation
    against_recommendation: bool = False
    analysis_id: int | None = None


def _prices() -> list[Price]:
    return [
        Price("configured", settings.EGRESS_PRICE_PER_GB),
        *(Price(label, per_gb) for label, per_gb in EGRESS_PRESETS),
    ]


def _move(arm, now: int, next_: int, exposure: dict, all_exposed: int, prices) -> ShareMove:
    estimate = downloads_estimate(
        arm=arm.name,
        share_now=now,
        share_next=next_,
        arm_exposed=exposure.get(arm.name, {}).get("exposed", 0),
        all_exposed=all_exposed,
        model_bytes=arm.model_version.size,
    )
    return ShareMove(
        arm=arm.name,
        now=percent_text(now),
        next=percent_text(next_),
        devices=estimate.devices,
        how=estimate.how,
        total_bytes=estimate.total_bytes,
        costs=[money_text(estimate.cost(price.per_gb)) for price in prices],
    )


def _next_share(rollout: Rollout, arm, action: str) -> int:
    if action == "promote":
        return ALL_DEVICES  # the flow's baseline: every device
    if action == "advance" and arm.stage_index < len(arm.stages) - 1:
        return arm.stages[arm.stage_index + 1]
    return arm.share


def _total(moves: list[ShareMove], prices: list[Price]) -> ShareMove | None:
    """Several challengers advancing together: their downloads added up."""
    known = [move for move in moves if move.devices is not None]
    if len(moves) < 2 or not known:
        return None
    total_bytes = sum(move.total_bytes for move in known)
    return ShareMove(
        arm="all challengers",
        now="",
        next="",
        devices=sum(move.devices for move in known),
        how="The challengers' estimates added up.",
        total_bytes=total_bytes,
        costs=[money_text(total_bytes / BYTES_PER_GB * price.per_gb) for price in prices],
    )


def action_impact(rollout: Rollout, action: str, *, now: datetime) -> ActionImpact:
    """What `action` will do to the rollout's devices, and what it goes past."""
    exposure = rollout_exposure_counts(rollout=rollout)
    arms = list(rollout.arms.select_related("model_version"))
    impact = ActionImpact(action=action)
    if action == "rollback":
        impact.shares_now = [(arm.name, percent_text(arm.share)) for arm in arms]
        impact.exposed_to_challenger = sum(
            counts["exposed"] for name, counts in exposure.items() if name != BASELINE
        )
        baseline = rollout.baseline
        if baseline is None:
            impact.returns_to = "the model bundled in the app (the flow had no baseline)"
        else:
            name = f", {baseline.original_filename}" if baseline.original_filename else ""
            impact.returns_to = (
                f"model {baseline.pk}{name} (the flow's baseline when the rollout started)"
            )
        return impact
    if action not in RAMP_ACTIONS:
        return impact
    page = rollout_page(rollout, now=now)
    impact.prices = _prices()
    all_exposed = sum(counts["exposed"] for counts in exposure.values())
    impact.moves = [
        _move(arm, arm.share, _next_share(rollout, arm, action), exposure, all_exposed,
              impact.prices)
        for arm in arms
    ]  # fmt: skip
    if action == "advance":
        impact.total = _total(impact.moves, impact.prices)
    impact.unmet_gates = [gate for gate in page.gates if not gate.met]
    if action == "promote":
        behind = [arm.name for arm in arms if arm.stage_index < len(arm.stages) - 1]
        if behind:
            impact.unmet_gates.append(
                Gate("Final stage reached", f"{', '.join(behind)} not at its last stage", False)
            )
    impact.recommendation = page.recommendation
    impact.analysis_id = page.analysis.pk if page.analysis is not None else None
    decision = page.recommendation.decision if page.recommendation is not None else None
    if action == "promote":
        impact.against_recommendation = (
            decision is not None and decision != decisions.PROMOTE_RECOMMENDED
        )
    else:
        impact.against_recommendation = decision in _HARM
    return impact


def action_check(rollout: Rollout, action: str, *, now: datetime) -> ActionCheck:
    """The impact to show, whether the flow's name must be typed and why, and what the audit
    row records of it."""
    impact = action_impact(rollout, action, now=now)
    if action not in RAMP_ACTIONS:
        evidence = {}
        if action == "rollback":
            latest = rollout.analyses.order_by("-computed_at", "-pk").first()
            evidence = {"analysis_id": latest.pk} if latest is not None else {}
        return ActionCheck(impact=impact, evidence=evidence)
    why, notes = [], []
    if impact.unmet_gates:
        gates = ", ".join(f"{gate.name} ({gate.progress})" for gate in impact.unmet_gates)
        why.append(f"Gates not met: {gates}.")
        notes.append(f"past unmet gates: {', '.join(g.name for g in impact.unmet_gates)}")
    if impact.against_recommendation:
        why.append(f"Against the recommendation: {impact.recommendation.sentence}")
        notes.append(f"against the recommendation ({impact.recommendation.title})")
    if action == "promote":
        why.append("Promoting changes the model of every device; a rollback cannot undo it.")
    evidence = {
        "past_gates": [gate.name for gate in impact.unmet_gates],
        "against_recommendation": impact.against_recommendation,
    }
    if impact.recommendation is not None:
        evidence["recommendation"] = impact.recommendation.decision
    if impact.analysis_id is not None:
        evidence["analysis_id"] = impact.analysis_id
    return ActionCheck(
        impact=impact,
        name_required=bool(why),
        why_name=why,
        evidence=evidence,
        audit_note=f"[{_sentence_case('; '.join(notes))}]" if notes else "",
    )


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]
