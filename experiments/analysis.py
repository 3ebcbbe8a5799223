"""
One look at a rollout: from per-arm, per-stratum sums to a frozen analysis result (no Django).

The judge (`experiments.judge`) reads the sums from the database, calls `analyze`, stores the
result and acts on its decision; the decision simulator (`benchmarks/decisions.py`) calls the
same `analyze` on simulated fleets. The API, the admin and the alerts render the result's body
(`AnalysisResult.body`), which is what `Analysis.body` stores.

It imports only the pure modules: `stats` and `decisions` here, and the vocabulary of
`rollout.metrics`, `rollout.arms` and `rollout.shares`.

Robust by construction: one metric that cannot be computed (a stored value beyond floating-point
range, say) is reported in `failures` and left out of the decision; the others are still
judged. `analyze` raises only on a programming error, never on data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rollout.arms import BASELINE
from rollout.metrics import MEAN, MODEL_ERROR, PRIMARY, PROPORTION, outcome_label
from rollout.shares import ALL_DEVICES

from . import decisions, srm, stats

TESTS = {
    PROPORTION: "pooled two-proportion z-test (Cochran-Mantel-Haenszel across strata)",
    MEAN: "Welch's t-test",
    "sequential": "normal-mixture mSPRT (always valid), Bonferroni across challengers",
    "strata": "devices compared within the phase in which they entered their arm, "
    "Mantel-Haenszel weights",
    "srm": "Dirichlet-multinomial sequential test (always valid), per SDK version slice",
}

PRIMARY_SPEC = stats.MetricSpec(PRIMARY, PROPORTION, higher_is_better=True)


@dataclass(frozen=True)
class ArmPlan:
    """A challenger as the analysis needs it."""

    name: str
    model_id: str | None
    share: float  # of all devices, 0..1
    final_stage: bool


@dataclass(frozen=True)
class AnalysisInput:
    """Everything one look needs; `sums` is arm → stratum → the selectors' per-arm sums."""

    rollout_id: str
    rollout_state: str
    baseline_model_id: str | None
    arms: tuple[ArmPlan, ...]
    sums: Mapping[str, Mapping[Any, Mapping[str, Any]]]
    specs: tuple[stats.MetricSpec, ...]
    alpha: float
    planned_sample: float
    min_devices_per_arm: int
    advance_detectable_lift: float
    min_detectable_lift: float
    running: bool = True
    auto_advance: bool = False
    minutes_in_stage: float = 0.0
    stage_min_minutes: float = 0.0
    previous: Mapping[str, Mapping[str, stats.SequentialState]] = field(default_factory=dict)
    srm_counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # SDK → arm → n
    srm_epoch: str = ""  # the stage's start: a new stage restarts the sequential SRM test
    previous_srm: Mapping[str, srm.SrmState] = field(default_factory=dict)
    computed_at: str = ""
    watermark: str = ""
    notes: tuple[str, ...] = ()

    @property
    def arm_names(self) -> list[str]:
        return [BASELINE, *(a.name for a in self.arms)]

    @property
    def shares(self) -> dict[str, float]:
        shares = {a.name: a.share for a in self.arms}
        return {BASELINE: max(0.0, 1.0 - sum(shares.values())), **shares}


@dataclass(frozen=True)
class AnalysisResult:
    """The frozen result of one look: what every reader renders and what the judge acts on."""

    verdict: decisions.Verdict
    comparisons: Mapping[str, Mapping[str, stats.Comparison]]
    failures: Mapping[str, str]
    srm_p_value: float | None
    srm_findings: tuple[stats.SrmFinding, ...]
    srm_state: Mapping[str, Any]  # per slice, to pass back as `previous_srm` at the next look
    # The previous states of metrics that failed this look, carried to the next unchanged, so
    # a failure never restarts a running interval (which would let a verdict flip back).
    carried: Mapping[str, Mapping[str, stats.SequentialState]]
    body: Mapping[str, Any]
    inputs: Mapping[str, Any]

    @property
    def decision(self) -> str:
        return self.verdict.decision

    @property
    def sequential_state(self) -> dict:
        """What the next look starts from, in JSON form (`sequential_state_read` reads it)."""
        return {
            **{
                metric: {arm: s.to_dict() for arm, s in by_arm.items() if s}
                for metric, by_arm in self.carried.items()
            },
            **{
                metric: {arm: c.state.to_dict() if c.state else None for arm, c in by_arm.items()}
                for metric, by_arm in self.comparisons.items()
            },
            SRM_STATE_KEY: dict(self.srm_state),
        }


#: Where the stored sequential state keeps the SRM test's (metric names never start with "_").
SRM_STATE_KEY = "_srm"


def sequential_state_read(
    stored: Mapping[str, Any] | None,
) -> tuple[dict[str, dict[str, stats.SequentialState]], dict[str, srm.SrmState]]:
    """The per-metric, per-arm states and the SRM states of a stored `sequential_state`."""
    stored = dict(stored or {})
    srm_states = srm.states_from_dict(stored.pop(SRM_STATE_KEY, None))
    metrics = {
        metric: {arm: stats.SequentialState.from_dict(s) for arm, s in by_arm.items() if s}
        for metric, by_arm in stored.items()
    }
    return metrics, srm_states


def at_last_comparable_stage(plans: Mapping[str, tuple[int, Sequence[int]]]) -> dict[str, bool]:
    """Per challenger (name → (stage index, stage plan in basis points)): whether it is at the
    last stage where it can still be compared with the baseline.

    That is its plan's last stage, or any stage when the next stages of all challengers
    together would leave the baseline no bucket (a plan ending at 100 %): once every bucket is
    a challenger's, no device counts for the baseline (`counting`), so the evidence for a
    promotion is what the stage before shows.
    """
    following = {
        name: stages[index + 1] if index + 1 < len(stages) else stages[index]
        for name, (index, stages) in plans.items()
    }
    baseline_left = ALL_DEVICES - sum(following.values())
    return {
        name: index >= len(stages) - 1 or baseline_left <= 0
        for name, (index, stages) in plans.items()
    }


# --------------------------------------------------------------------------- per metric


def arm_stats(metric: str, sums: Mapping[str, Any]) -> stats.ArmStats:
    """One arm's statistics of `metric` in one stratum, from the selectors' sums."""
    n = sums["n"]
    if metric == PRIMARY:
        return stats.ArmStats.proportion(n, min(sums["converted"], n))
    if metric == MODEL_ERROR:
        return stats.ArmStats.proportion(n, min(sums["errored"], n))
    if label := outcome_label(metric):
        return stats.ArmStats.proportion(n, min(sums["labels"].get(label, 0), n))
    if n == 0:
        return stats.ArmStats(0, 0.0, 0.0)
    total, squares = float(sums["value_total"]), float(sums["value_squares"])
    if not (math.isfinite(total) and math.isfinite(squares)):
        raise ValueError("the value sums are beyond floating-point range")
    # Float sums can round a hair below the Cauchy-Schwarz bound ArmStats checks.
    return stats.ArmStats(n, total, max(squares, total * total / n))


def strata_of(metric: str, by_stratum: Mapping[Any, Mapping[str, Any]]) -> dict:
    return {key: arm_stats(metric, sums) for key, sums in by_stratum.items() if sums["n"]}


def pooled_sums(by_stratum: Mapping[Any, Mapping[str, Any]], labels: Sequence[str]) -> dict:
    """One arm's sums over all its strata (for display and for the sizes)."""
    pooled = empty_sums(labels)
    for sums in by_stratum.values():
        for key in ("n", "reporting", "converted", "errored", "adopted"):
            pooled[key] += sums[key]
        pooled["value_total"] += sums["value_total"]
        pooled["value_squares"] += sums["value_squares"]
        for label in labels:
            pooled["labels"][label] += sums["labels"].get(label, 0)
    return pooled


def empty_sums(labels: Sequence[str]) -> dict:
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


def _labels(specs: Sequence[stats.MetricSpec]) -> tuple[str, ...]:
    return tuple(label for s in specs if (label := outcome_label(s.name)))


# --------------------------------------------------------------------------- the look


def analyze(data: AnalysisInput) -> AnalysisResult:
    """Compute one look: comparisons, the extreme-rate guard, SRM, power, and the decision."""
    labels = _labels(data.specs)
    sums = {name: data.sums.get(name, {}) for name in data.arm_names}
    pooled = {name: pooled_sums(by_stratum, labels) for name, by_stratum in sums.items()}

    comparisons: dict[str, dict[str, stats.Comparison]] = {}
    failures: dict[str, str] = {}
    extreme: list[tuple[str, str, str]] = []
    summaries: dict[str, dict] = {}  # the baseline's pooled {"n", "mean"}, for the body
    for spec in data.specs:
        try:
            baseline = strata_of(spec.name, sums[BASELINE])
            challengers = {a.name: strata_of(spec.name, sums[a.name]) for a in data.arms}
            compared = stats.compare_arms(
                baseline,
                challengers,
                spec,
                alpha=data.alpha,
                planned_sample=data.planned_sample,
                min_devices=data.min_devices_per_arm,
                previous=data.previous.get(spec.name),
                # Every metric can roll a challenger back: alpha is shared by all of them, so the
                # chance of any false verdict on any metric stays within alpha.
                metrics=len(data.specs),
            )
            harm = _extreme_harm(spec, baseline, challengers, pooled, data)
            # Pooled over all strata, the compared ones or not, so it can overflow where
            # the comparison did not: computed here, where that is a failure of the metric.
            summary = arm_stats(spec.name, pooled[BASELINE]).to_dict()
        except (ValueError, ArithmeticError) as error:
            # One metric's data must not stop the judge: the others still decide. Nothing of
            # a failed metric is kept, so that what decides is what the body shows.
            failures[spec.name] = f"{spec.name} could not be computed: {error}"
            continue
        comparisons[spec.name] = compared
        extreme += harm
        summaries[spec.name] = summary

    srm_p, srm_findings, srm_inputs, srm_state = _srm(data)
    baseline_rate = _rate(pooled[BASELINE])
    planned = _planned_devices(data, baseline_rate)
    stage = decisions.StageInfo(
        running=data.running,
        auto_advance=data.auto_advance,
        minutes_in_stage=data.minutes_in_stage,
        stage_min_minutes=data.stage_min_minutes,
        min_devices_per_arm=data.min_devices_per_arm,
        planned_devices_per_arm=planned,
        exposed={name: c["n"] for name, c in pooled.items() if c["n"]},
        final_stage={a.name: a.final_stage for a in data.arms},
    )
    verdict = decisions.decide(
        comparisons,
        primary=PRIMARY,
        srm_findings=srm_findings,
        stage=stage,
        extreme_harm=extreme,
        failures=failures,
    )
    body = _body(
        data, pooled, comparisons, summaries, failures, verdict, srm_p, srm_findings, planned
    )
    inputs = {
        "arms": {name: _json_sums(c) for name, c in pooled.items()},
        "strata": {
            name: {str(k): _json_sums(v) for k, v in by.items()} for name, by in sums.items()
        },
        "watermark": data.watermark,
        "alpha": data.alpha,
        "planned_sample": data.planned_sample,
        "min_devices": data.min_devices_per_arm,
        "metrics": [
            {
                "name": s.name,
                "kind": s.kind,
                "higher_is_better": s.higher_is_better,
                "margin": s.margin,
            }
            for s in data.specs
        ],
        "tests": TESTS,
        "srm": srm_inputs,
        "previous_sequential_state": {
            m: {a: s.to_dict() for a, s in by_arm.items() if s}
            for m, by_arm in data.previous.items()
        },
        "previous_srm_state": {name: s.to_dict() for name, s in data.previous_srm.items()},
    }
    return AnalysisResult(
        verdict=verdict,
        comparisons=comparisons,
        failures=failures,
        srm_p_value=srm_p,
        srm_findings=tuple(srm_findings),
        srm_state=srm_state,
        carried={m: data.previous[m] for m in failures if m in data.previous},
        body=body,
        inputs=inputs,
    )


def _json_sums(sums: Mapping[str, Any]) -> dict:
    """The sums as `inputs` stores them: JSON has no NaN or infinity (PostgreSQL's jsonb
    rejects them, so the analysis could not be stored), so a value sum beyond floating-point
    range is stored as null; `metric_failures` says why the metric was not computed."""
    return {
        **sums,
        **{
            key: sums[key] if math.isfinite(sums[key]) else None
            for key in ("value_total", "value_squares")
        },
    }


def _rate(sums: Mapping[str, Any]) -> float | None:
    return sums["converted"] / sums["n"] if sums["n"] else None


def _extreme_harm(spec, baseline, challengers, pooled, data) -> list[tuple[str, str, str]]:
    """Rates worse beyond doubt where the comparison lacks successes or failures to test."""
    if spec.kind != PROPORTION:
        return []
    found = []
    for name, challenger in challengers.items():
        if min(pooled[BASELINE]["n"], pooled[name]["n"]) < data.min_devices_per_arm:
            continue
        if stats.clearly_worse_in_a_stratum(
            baseline, challenger, higher_is_better=spec.higher_is_better, margin=spec.margin
        ):
            a, b = stats.pool_strata(baseline), stats.pool_strata(challenger)
            found.append(
                (
                    name,
                    spec.name,
                    f"{name} is clearly worse on {spec.name}: {b.mean:.2%} of {b.n} devices "
                    f"against {a.mean:.2%} of {a.n} (99.9 % Wilson intervals apart)",
                )
            )
    return found


def _srm(data: AnalysisInput) -> tuple[float | None, list[stats.SrmFinding], dict, dict]:
    """The sequential SRM check over "all devices" and each SDK version (see `srm`)."""
    names = data.arm_names
    shares = data.shares
    share_list = [shares[name] for name in names]
    by_sdk = data.srm_counts
    total = [sum(counts.get(name, 0) for counts in by_sdk.values()) for name in names]
    slices = {"all devices": (total, share_list)}
    for sdk_version, counts in sorted(by_sdk.items()):
        slices[f"SDK {sdk_version}"] = ([counts.get(name, 0) for name in names], share_list)
    result = srm.srm_by_slice_sequential(slices, data.previous_srm, epoch=data.srm_epoch)
    inputs = {
        "arms": names,
        "shares": share_list,
        "counts": {k: v[0] for k, v in slices.items()},
        "epoch": data.srm_epoch,
        "per_slice_threshold": result.per_slice_threshold,
        # The one-look chi-square of all devices, for people: no decision reads it.
        "fixed_horizon_p_value": stats.srm_p_value(total, share_list),
    }
    return result.p_value("all devices"), result.findings, inputs, result.states_to_dict()


def _planned_devices(data: AnalysisInput, baseline_rate: float | None) -> int:
    """Devices per arm before advancing: enough to see `advance_detectable_lift` with power 0.8.

    Without a baseline rate to size it on, the configured minimum alone applies (and the
    primary comparison is insufficient anyway, which holds advancing back).
    """
    lift = -abs(data.advance_detectable_lift)  # the harm to be able to see: a drop
    if baseline_rate is None or not 0 < baseline_rate < 1 or baseline_rate * (1 + lift) <= 0:
        return data.min_devices_per_arm
    needed = stats.devices_per_arm_for_lift(baseline_rate, lift, alpha=data.alpha)
    return max(data.min_devices_per_arm, needed)


def _power(data: AnalysisInput, baseline_rate: float | None, smallest_arm: int) -> dict:
    lift = data.min_detectable_lift
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


def _body(
    data, pooled, comparisons, summaries, failures, verdict, srm_p, srm_findings, planned
) -> dict:
    shares = data.shares

    def arm_entry(name: str, model_id: str | None) -> dict:
        c = pooled[name]
        entry = {
            "arm": name,
            "model_id": model_id,
            "share": shares.get(name, 0.0),
            "exposed": c["n"],
            "reporting": c["reporting"],
            "adoption": round(c["adopted"] / c["n"], 4) if c["n"] else None,
            "metrics": {},
        }
        for spec in data.specs:
            if spec.name in failures:
                entry["metrics"][spec.name] = {"n": c["n"], "error": failures[spec.name]}
            elif name == BASELINE:
                entry["metrics"][spec.name] = summaries[spec.name]
            else:
                entry["metrics"][spec.name] = comparisons[spec.name][name].to_dict()
        return entry

    baseline_rate = _rate(pooled[BASELINE])
    smallest = min(pooled[name]["n"] for name in data.arm_names)
    return {
        "rollout_id": data.rollout_id,
        "computed_at": data.computed_at,
        "watermark": data.watermark,
        "rollout_state": data.rollout_state,
        "srm_p_value": srm_p,
        "srm": [f.to_dict() for f in srm_findings],
        "decision": verdict.decision,
        "reasons": list(verdict.reasons),
        "arms": [
            arm_entry(BASELINE, data.baseline_model_id),
            *(arm_entry(a.name, a.model_id) for a in data.arms),
        ],
        "power": {
            **_power(data, baseline_rate, smallest),
            "advance_detectable_lift": data.advance_detectable_lift,
            "devices_per_arm_to_advance": planned,
        },
        "thresholds": {
            "alpha": data.alpha,
            # Each always-valid interval's coverage: alpha shared by challengers and metrics.
            "interval_level": 1 - data.alpha / (max(1, len(data.arms)) * max(1, len(data.specs))),
            "planned_sample": data.planned_sample,
            "min_devices_per_arm": data.min_devices_per_arm,
            "srm_p_value": stats.SRM_P_VALUE_THRESHOLD,
        },
        "metric_failures": dict(failures),
        "notes": list(data.notes),
    }
