"""
What the judge decides from an analysis (no Django): one of CONTRACT.md's decisions.

Order of precedence, most urgent first:
1. `rollback`: a challenger is significantly worse (its always-valid interval lies wholly on
   the harmful side of the margin) on the primary metric or any guardrail, or its rate is
   worse beyond doubt where the regular tests cannot look yet (e.g. a model failing on every
   device; `stats.clearly_worse_rate`). Harm is acted on even while a sample-ratio mismatch
   stands: stopping is always safe.
2. `srm_alert`: exposed counts do not match the configured shares (overall or in an SDK
   version slice): the data cannot be trusted, so nothing is promoted or advanced.
3. `insufficient_data`: a challenger's primary comparison lacks the minimum data, or the
   primary metric could not be computed.
4. `promote_recommended`: a challenger at its final stage is significantly better on the
   primary metric, with no guardrail harm and no broken sequential guarantee.
5. `advance`: the rollout advances automatically, the stage's minimum time has passed, every
   arm has the planned devices, and nothing above applies.
6. `continue`.

A sequential conflict (a running interval that had to restart: the effect is not stationary)
is named in the reasons of any decision but `rollback`. Such a challenger can still be found
worse, never better (`stats`), so a verdict never flips from worse to better unseen.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rollout.arms import BASELINE

from .stats import Comparison, SrmFinding

CONTINUE = "continue"
ADVANCE = "advance"
ROLLBACK = "rollback"
PROMOTE_RECOMMENDED = "promote_recommended"
SRM_ALERT = "srm_alert"
INSUFFICIENT_DATA = "insufficient_data"

# What the judge did about its decision (`Analysis.action`; "" when nothing was to be done).
# The decision simulator reports ROLLED_BACK for a run the judge stopped.
ROLLED_BACK = "rolled_back"
ADVANCED = "advanced"
ALERTED = "alerted"
HELD = "held"  # the data was not fresh enough to act on
SKIPPED = "skipped"  # the rollout changed meanwhile


@dataclass(frozen=True)
class StageInfo:
    running: bool
    auto_advance: bool
    minutes_in_stage: float
    stage_min_minutes: float
    min_devices_per_arm: int
    # Devices each arm needs before advancing: the power calculation's answer when there is
    # a baseline rate to compute it from, never below min_devices_per_arm.
    planned_devices_per_arm: int
    exposed: Mapping[str, int]  # counted devices per arm, the baseline included
    # Per challenger: at the last stage where it can be compared with the baseline (its plan's
    # last, or the one before a stage that leaves the baseline no devices): promotion is
    # recommended there, and automatic advancing stops there (the step to 100 % is promotion).
    final_stage: Mapping[str, bool]


@dataclass(frozen=True)
class Verdict:
    decision: str
    reasons: tuple[str, ...] = ()
    harmful_arms: tuple[str, ...] = ()
    winning_arms: tuple[str, ...] = ()


def decide(
    comparisons: Mapping[str, Mapping[str, Comparison]],
    *,
    primary: str,
    srm_findings: Sequence[SrmFinding],
    stage: StageInfo,
    extreme_harm: Sequence[tuple[str, str, str]] = (),
    failures: Mapping[str, str] | None = None,
) -> Verdict:
    """Decide from per-metric, per-challenger comparisons (metric -> arm -> Comparison).

    `extreme_harm` lists (arm, metric, sentence) found by the extreme-rate check; `failures`
    the metrics that could not be computed (metric -> sentence), which decide nothing.
    """
    verdict = _decide(
        comparisons,
        primary=primary,
        srm_findings=srm_findings,
        stage=stage,
        extreme_harm=extreme_harm,
        failures=failures or {},
    )
    if verdict.decision == ROLLBACK:
        return verdict
    conflicts = tuple(
        f"{arm}'s always-valid interval on {metric} had to restart (the effect changed over "
        "time): it can still be found worse, not better"
        for metric, by_arm in comparisons.items()
        for arm, c in by_arm.items()
        if c.sequential_conflict
    )
    failed = tuple((failures or {}).values()) if verdict.decision != INSUFFICIENT_DATA else ()
    if not conflicts and not failed:
        return verdict
    return Verdict(
        verdict.decision,
        reasons=verdict.reasons + conflicts + failed,
        harmful_arms=verdict.harmful_arms,
        winning_arms=verdict.winning_arms,
    )


def _decide(
    comparisons: Mapping[str, Mapping[str, Comparison]],
    *,
    primary: str,
    srm_findings: Sequence[SrmFinding],
    stage: StageInfo,
    extreme_harm: Sequence[tuple[str, str, str]],
    failures: Mapping[str, str],
) -> Verdict:
    harm = [
        (arm, metric, comparison)
        for metric, by_arm in comparisons.items()
        for arm, comparison in by_arm.items()
        if comparison.significant and comparison.direction == "worse"
    ]
    if harm or extreme_harm:
        return Verdict(
            ROLLBACK,
            reasons=tuple(
                f"{arm} is significantly worse on {metric}: difference {c.diff:+.4g}, "
                f"always-valid interval [{c.sequential_ci[0]:+.4g}, {c.sequential_ci[1]:+.4g}]"
                for arm, metric, c in harm
            )
            + tuple(sentence for _, _, sentence in extreme_harm),
            harmful_arms=tuple(sorted({arm for arm, _, _ in (*harm, *extreme_harm)})),
        )
    if srm_findings:
        return Verdict(
            SRM_ALERT,
            reasons=tuple(
                f"sample-ratio mismatch in {f.slice}: p = {f.p_value:.2g}, counts "
                f"{list(f.counts)} against shares {[round(s, 4) for s in f.expected_shares]}"
                for f in srm_findings
            ),
        )
    if primary in failures:
        return Verdict(INSUFFICIENT_DATA, reasons=(failures[primary],))
    primary_results = comparisons.get(primary, {})
    lacking = {arm: c.insufficient for arm, c in primary_results.items() if c.insufficient}
    if lacking:
        return Verdict(
            INSUFFICIENT_DATA,
            reasons=tuple(f"{arm}: {why}" for arm, why in lacking.items()),
        )
    winners = tuple(
        arm
        for arm, c in primary_results.items()
        if c.significant
        and c.direction == "better"
        and not c.sequential_conflict
        and stage.final_stage.get(arm, False)
    )
    if winners:
        return Verdict(
            PROMOTE_RECOMMENDED,
            reasons=tuple(
                f"{arm} is significantly better on {primary} at its final stage" for arm in winners
            ),
            winning_arms=winners,
        )
    if stage.running and stage.auto_advance and not all(stage.final_stage.values()):
        # Advancing needs the planned devices in every arm, and at least the stage's time.
        short = {arm: n for arm, n in stage.exposed.items() if n < stage.planned_devices_per_arm}
        missing_arms = [arm for arm in (BASELINE, *stage.final_stage) if arm not in stage.exposed]
        if stage.minutes_in_stage >= stage.stage_min_minutes and not short and not missing_arms:
            return Verdict(
                ADVANCE,
                reasons=(
                    f"stage ran {stage.minutes_in_stage:.0f} min (minimum "
                    f"{stage.stage_min_minutes:.0f}) with at least {stage.planned_devices_per_arm} "
                    "devices per arm and no harm",
                ),
            )
    if stage.running and stage.auto_advance and stage.final_stage:
        return Verdict(
            CONTINUE,
            reasons=(
                "every challenger is at its last stage with a baseline to compare with: "
                "automatic advancing stops here; promote or roll back",
            ),
        )
    return Verdict(CONTINUE)
