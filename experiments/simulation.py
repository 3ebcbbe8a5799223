"""
A decision simulator: simulated fleets judged by the project's own code (no Django).

Used by `benchmarks/decisions.py` (the table in docs/experiments.md) and by a fast seeded
subset in the test suite. What runs is the real thing wherever the judge's behaviour is
decided: which devices and events count and in which stratum (`experiments.counting`), how
buckets map to arms as shares grow (`rollout.allocation`, `rollout.hashing`), the statistics
and the decision (`experiments.analysis.analyze`, hence `stats` and `decisions`), and the
judge's reaction to a decision (roll back, advance, recommend promotion). Only the database
in between is replaced: per look, the per-arm, per-stratum sums that the selectors compute in
SQL (pinned to the same rule by a test) are computed with numpy over the fleet.

The fleet, per run:

- Devices arrive (first poll) at rates that differ 20-fold between light and heavy users
  (log-normal), so heavy users arrive first; each polls again at its own rate.
- A device's chance to convert grows with its activity (heavy users buy more), so any
  selection on activity would bias a comparison.
- When a device enters its arm it converts with its chance (times 1 + lift in the
  challenger) after an exponential delay; the event reaches the server after a further
  delay (most within a minute, one in five hours later: devices offline). A small share of
  devices reports a `model_error` soon after entering, the same in both arms unless the
  scenario says otherwise.
- Automatic advancing through the stage plan; at an advance, baseline devices whose bucket
  the challenger takes move at their next poll (and leave the comparison, per the rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rollout.allocation import ArmAllocation, Segment, arm_for_bucket, plan_segments
from rollout.arms import BASELINE, challenger_name
from rollout.hashing import BUCKETS
from rollout.metrics import MODEL_ERROR, PROPORTION
from rollout.shares import fraction

from . import decisions, stats
from .analysis import (
    PRIMARY_SPEC,
    AnalysisInput,
    ArmPlan,
    analyze,
    at_last_comparable_stage,
    sequential_state_read,
)
from .counting import device_counts, event_counts, stratum_of

CHALLENGER = challenger_name(1)
HOUR = 3600.0
MINUTE = 60.0


@dataclass(frozen=True)
class Scenario:
    """One simulated rollout's world; times in seconds."""

    conversion_delay: float = HOUR  # mean of the exponential delay to the outcome
    lift: float = 0.0  # relative change of the challenger's conversion chance
    error_lift: float = 0.0  # relative change of the challenger's model_error chance
    devices: int = 40_000
    base_rate: float = 0.10
    error_rate: float = 0.01
    stages: tuple[int, ...] = (500, 2000, 5000, 10_000)  # basis points: 5 → 20 → 50 → 100 %
    auto_advance: bool = True
    stage_min_minutes: float = 60.0
    horizon: float = 72 * HOUR
    look_every: float = 5 * MINUTE
    late_share: float = 0.2  # events that arrive hours late
    late_delay: float = 6 * HOUR
    window: float = 72 * HOUR  # the flow's attribution window
    skew: float = 5 * MINUTE
    alpha: float = 0.05
    planned_sample: int = 5000
    min_devices_per_arm: int = 100
    advance_detectable_lift: float = 0.5
    stratify: bool = True  # False: every device in one stratum (what the judge used to do)


@dataclass
class Outcome:
    """How one simulated rollout ended."""

    decision: str  # ROLLED_BACK or PROMOTE_RECOMMENDED (decisions), "running" at the horizon
    at: float | None = None  # seconds after the start
    stage: int = 0  # index of the stage reached
    looks: int = 0
    srm_alerts: int = 0
    reasons: tuple[str, ...] = field(default_factory=tuple)


def _allocation(segment: Segment, share: int) -> list[ArmAllocation]:
    return [ArmAllocation(CHALLENGER, segment, share)]


def _arm_of_buckets(allocation: list[ArmAllocation]) -> np.ndarray:
    """For each of the 10 000 buckets, 1 if the challenger holds it, else 0 (the baseline)."""
    return np.array(
        [arm_for_bucket(b, allocation) == CHALLENGER for b in range(BUCKETS)], dtype=np.int8
    )


def simulate(scenario: Scenario, seed: int) -> Outcome:
    """Run one rollout through the judge's looks until it is rolled back, promotion is
    recommended, or the horizon is reached."""
    rng = np.random.default_rng(seed)
    n = scenario.devices
    # Polls per second: a median of one poll every 6 hours, 20-fold between the 5th and the
    # 95th percentile.
    rate = np.exp(rng.normal(np.log(1 / (6 * HOUR)), 0.9, n))
    first_poll = rng.exponential(1 / rate)
    bucket = rng.integers(0, 10_000, n)
    chance = np.clip(scenario.base_rate * (rate / np.median(rate)) ** 0.3, 0.0, 0.9)
    draw = rng.random(n)
    delay = rng.exponential(scenario.conversion_delay, n)
    late = np.where(
        rng.random(n) < scenario.late_share,
        rng.exponential(scenario.late_delay, n),
        rng.exponential(MINUTE, n),
    )
    error_draw = rng.random(n)
    error_delay = rng.exponential(10 * MINUTE, n)

    segment = plan_segments([scenario.stages[-1]])[0]
    stage = 0
    allocation = _allocation(segment, scenario.stages[0])
    holds = _arm_of_buckets(allocation)
    phase_starts = [0.0]
    stage_started = 0.0
    # Each device's arm at its first poll (1: the challenger). A device that moves later leaves
    # the comparison (moved_at), so its later arm is never read.
    arm = np.zeros(n, dtype=np.int8)
    assigned = np.zeros(n, dtype=bool)
    moved_at = np.full(n, np.inf)
    outcome_at = np.full(n, np.inf)  # when the device's conversion happens, if it converts
    error_at = np.full(n, np.inf)
    strata = np.zeros(n, dtype=np.int64)
    previous: dict = {}
    previous_srm: dict = {}
    outcome = Outcome("running")

    t = 0.0
    while t < scenario.horizon:
        t += scenario.look_every
        # Devices that polled since the last look got the arm of the shares in force (shares
        # change only at looks).
        arriving = ~assigned & (first_poll <= t)
        arm[arriving] = holds[bucket[arriving]]
        assigned |= arriving
        mine = arm[arriving] == 1
        converts = draw[arriving] < chance[arriving] * np.where(mine, 1 + scenario.lift, 1.0)
        outcome_at[arriving] = np.where(converts, (first_poll + delay)[arriving], np.inf)
        errs = error_draw[arriving] < scenario.error_rate * np.where(
            mine, 1 + scenario.error_lift, 1.0
        )
        error_at[arriving] = np.where(errs, (first_poll + error_delay)[arriving], np.inf)
        if scenario.stratify:
            strata[arriving] = stratum_of(first_poll[arriving], phase_starts)

        comparable = moved_at > t
        counted = assigned & device_counts(
            arm=arm, arm_of_bucket_now=holds[bucket], comparable=comparable
        )

        terms = {
            "arm_since": first_poll,
            "comparable": comparable,
            "started_at": 0.0,
            "ended_at": None,
            "window": scenario.window,
            "skew": scenario.skew,
        }
        # An event counts once it has reached the server and the rule counts it.
        converted = counted & event_counts(moment=outcome_at, **terms) & (outcome_at + late <= t)
        errored = counted & event_counts(moment=error_at, **terms) & (error_at + late <= t)
        sums = _sums(arm, strata, counted, converted, errored)
        this_stage = assigned & (first_poll >= stage_started)
        srm = {
            "1.0": {
                BASELINE: int(np.sum(this_stage & (arm == 0))),
                CHALLENGER: int(np.sum(this_stage & (arm == 1))),
            }
        }
        share = fraction(allocation[0].share)
        last = at_last_comparable_stage({CHALLENGER: (stage, scenario.stages)})
        result = analyze(
            AnalysisInput(
                rollout_id="simulated",
                rollout_state="running",
                baseline_model_id=None,
                arms=(ArmPlan(CHALLENGER, None, share, last[CHALLENGER]),),
                sums=sums,
                specs=(PRIMARY_SPEC, stats.MetricSpec(MODEL_ERROR, PROPORTION, False)),
                alpha=scenario.alpha,
                planned_sample=scenario.planned_sample,
                min_devices_per_arm=scenario.min_devices_per_arm,
                advance_detectable_lift=scenario.advance_detectable_lift,
                min_detectable_lift=0.1,
                running=True,
                auto_advance=scenario.auto_advance,
                minutes_in_stage=(t - stage_started) / MINUTE,
                stage_min_minutes=scenario.stage_min_minutes,
                previous=previous,
                srm_counts=srm,
                srm_epoch=str(stage_started),
                previous_srm=previous_srm,
            )
        )
        outcome.looks += 1
        previous, previous_srm = sequential_state_read(result.sequential_state)
        decision = result.decision
        if decision == decisions.SRM_ALERT:
            outcome.srm_alerts += 1
        if decision == decisions.ROLLBACK:
            return _ended(outcome, decisions.ROLLED_BACK, t, stage, result)
        if decision == decisions.PROMOTE_RECOMMENDED:
            return _ended(outcome, decisions.PROMOTE_RECOMMENDED, t, stage, result)
        if decision == decisions.ADVANCE:
            stage += 1
            allocation = _allocation(segment, scenario.stages[stage])
            grown = _arm_of_buckets(allocation)
            # Baseline devices whose bucket the challenger takes move at their next poll.
            movers = assigned & (arm == 0) & (grown[bucket] == 1) & ~np.isfinite(moved_at)
            moved_at[movers] = t + rng.exponential(1 / rate[movers])
            holds = grown
            phase_starts.append(t)
            stage_started = t
    outcome.stage = stage
    return outcome


def _ended(outcome: Outcome, decision: str, t: float, stage: int, result) -> Outcome:
    outcome.decision, outcome.at, outcome.stage = decision, t, stage
    outcome.reasons = tuple(result.verdict.reasons)
    return outcome


def _sums(arm, strata, counted, converted, errored) -> dict:
    """Per arm and stratum, the selectors' sums (only the fields the simulated metrics read)."""
    size = int(strata.max()) + 1
    key = arm.astype(np.int64) * size + strata
    n = np.bincount(key[counted], minlength=2 * size)
    conv = np.bincount(key[converted], minlength=2 * size)
    err = np.bincount(key[errored], minlength=2 * size)
    result: dict = {BASELINE: {}, CHALLENGER: {}}
    for index in np.flatnonzero(n):
        name = CHALLENGER if index >= size else BASELINE
        result[name][int(index % size)] = {
            "n": int(n[index]),
            "reporting": 0,
            "converted": int(conv[index]),
            "errored": int(err[index]),
            "adopted": 0,
            "value_total": 0.0,
            "value_squares": 0.0,
            "labels": {},
        }
    return result
