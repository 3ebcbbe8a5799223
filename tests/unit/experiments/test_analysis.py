"""Pure tests of experiments/analysis.py: the contract of `analyze`, and that no stored data
(huge, tiny, negative, non-finite, inconsistent sums) makes it raise or leak NaN/infinity."""

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments import analysis, decisions, stats
from experiments.analysis import AnalysisInput, ArmPlan, analyze, sequential_state_read
from rollout.arms import BASELINE
from rollout.metrics import MODEL_ERROR, PRIMARY, VALUE

CHALLENGER = "challenger-1"
DISMISSED = "outcome:Dismissed"
SPECS = (
    analysis.PRIMARY_SPEC,
    stats.MetricSpec(MODEL_ERROR, "proportion", higher_is_better=False),
    stats.MetricSpec(VALUE, "mean", higher_is_better=True),
    stats.MetricSpec(DISMISSED, "proportion", higher_is_better=False),
)
DECISIONS = {
    decisions.CONTINUE,
    decisions.ADVANCE,
    decisions.ROLLBACK,
    decisions.PROMOTE_RECOMMENDED,
    decisions.SRM_ALERT,
    decisions.INSUFFICIENT_DATA,
}


def sums(
    n, converted=0, *, errored=0, value_total=0.0, value_squares=None, dismissed=0, **extra
) -> dict:
    """One arm's sums in one stratum, shaped as `analysis.empty_sums`."""
    if value_squares is None:
        value_squares = value_total * value_total / n if n else 0.0
    return {
        "n": n,
        "reporting": n,
        "converted": converted,
        "errored": errored,
        "adopted": n,
        "value_total": value_total,
        "value_squares": value_squares,
        "labels": {"Dismissed": dismissed},
        **extra,
    }


def values(n, mean, sd) -> dict:
    """value_total and value_squares of n devices with this mean and sample deviation."""
    total = n * mean
    return {"value_total": total, "value_squares": sd * sd * (n - 1) + total * total / n}


def look(by_arm, *, specs=SPECS, srm_counts=None, **overrides) -> analysis.AnalysisResult:
    """`analyze` a rollout with one challenger at 50 %; by_arm is arm → stratum → sums."""
    if srm_counts is None:  # as exposed: nothing for the SRM check to find unless asked
        srm_counts = {"1.5.0": {arm: 1000 for arm in by_arm}}
    fields = {
        "rollout_id": "r",
        "rollout_state": "running",
        "baseline_model_id": "b",
        "arms": (ArmPlan(CHALLENGER, "c", 0.5, final_stage=False),),
        "sums": by_arm,
        "specs": specs,
        "alpha": 0.05,
        "planned_sample": 4000,
        "min_devices_per_arm": 100,
        "advance_detectable_lift": 0.5,
        "min_detectable_lift": 0.1,
        "srm_counts": srm_counts,
        **overrides,
    }
    return analyze(AnalysisInput(**fields))


def assert_well_formed(result: analysis.AnalysisResult, specs=SPECS) -> None:
    """What every reader relies on, whatever the data."""
    for part in (result.body, result.inputs, result.sequential_state):
        json.dumps(part, allow_nan=False)  # raises on NaN or infinity
    names = {s.name for s in specs}
    assert set(result.failures) <= names
    assert result.body["metric_failures"] == dict(result.failures)
    # Every metric is either compared or failed, never both: what decides is what is shown.
    assert set(result.comparisons).isdisjoint(result.failures)
    assert set(result.comparisons) | set(result.failures) == names
    assert result.decision in DECISIONS
    for entry in result.body["arms"]:
        assert set(entry["metrics"]) == names
        for name, metric in entry["metrics"].items():
            assert ("error" in metric) == (name in result.failures)
    for name, by_arm in result.comparisons.items():
        if name in result.failures:
            continue
        for comparison in by_arm.values():
            assert comparison.insufficient or comparison.sequential_ci is not None


# --------------------------------------------------------------------------- contract


def test_analyze__one_stratum__equals_compare_arms_directly():
    baseline = {0: sums(2000, 200, errored=20, dismissed=900, **values(2000, 3.0, 2.0))}
    challenger = {0: sums(2000, 230, errored=25, dismissed=880, **values(2000, 3.2, 2.0))}

    result = look({BASELINE: baseline, CHALLENGER: challenger})

    for spec in SPECS:
        expected = stats.compare_arms(
            analysis.arm_stats(spec.name, baseline[0]),
            {CHALLENGER: analysis.arm_stats(spec.name, challenger[0])},
            spec,
            alpha=0.05,
            planned_sample=4000,
            min_devices=100,
            metrics=len(SPECS),  # the judge shares alpha between the metrics it decides on
        )[CHALLENGER]
        got = result.comparisons[spec.name][CHALLENGER]
        assert got.insufficient is None
        assert got.diff == pytest.approx(expected.diff, rel=1e-12)
        assert got.p_value == pytest.approx(expected.p_value, rel=1e-12)
        assert got.sequential_ci == pytest.approx(expected.sequential_ci, rel=1e-12)
    body = {a["arm"]: a for a in result.body["arms"]}
    assert body[BASELINE]["metrics"][PRIMARY] == {"n": 2000, "mean": 0.1}
    assert body[CHALLENGER]["metrics"][VALUE]["mean"] == pytest.approx(3.2)
    assert result.failures == {}
    assert_well_formed(result)


def test_analyze__same_rates_per_stratum_different_mixes__no_difference_where_pooling_has_one():
    # 10 % converts in stratum 0 and 30 % in stratum 1, in both arms; the challenger's devices
    # are mostly in stratum 1. Pooled, it would look 10 points better.
    baseline = {0: sums(1500, 150), 1: sums(500, 150)}
    challenger = {0: sums(500, 50), 1: sums(1500, 450)}

    result = look({BASELINE: baseline, CHALLENGER: challenger}, specs=SPECS[:1])

    stratified = result.comparisons[PRIMARY][CHALLENGER]
    assert stratified.strata == 2
    assert stratified.diff == pytest.approx(0.0, abs=1e-12)
    assert not stratified.significant
    pooled = stats.compare_arms(
        stats.ArmStats.proportion(2000, 300),
        {CHALLENGER: stats.ArmStats.proportion(2000, 500)},
        analysis.PRIMARY_SPEC,
        planned_sample=4000,
    )[CHALLENGER]
    assert pooled.diff == pytest.approx(0.1)
    assert pooled.significant and pooled.direction == "better"
    assert result.decision == decisions.CONTINUE


def test_analyze__harmful_challenger__rolled_back_on_conversion():
    result = look({BASELINE: {0: sums(3000, 300)}, CHALLENGER: {0: sums(3000, 150)}})

    assert result.decision == decisions.ROLLBACK
    assert result.verdict.harmful_arms == (CHALLENGER,)
    assert result.comparisons[PRIMARY][CHALLENGER].direction == "worse"
    assert_well_formed(result)


# --------------------------------------------------------------- adversarial, by hand

HARMFUL = {BASELINE: sums(3000, 300), CHALLENGER: sums(3000, 150)}

BROKEN_VALUES = {
    "infinite total": {"value_total": math.inf, "value_squares": math.inf},
    "negative infinite total": {"value_total": -math.inf, "value_squares": math.inf},
    "NaN total": {"value_total": math.nan, "value_squares": 1.0},
    "NaN squares": {"value_total": 1.0, "value_squares": math.nan},
    "1e300 per device (its square overflows)": {"value_total": 3000e300, "value_squares": 1.0},
    "1e308 total": {"value_total": 1e308, "value_squares": 1e308},
    "-1e308 total": {"value_total": -1e308, "value_squares": 1e308},
}


@pytest.mark.parametrize("broken", BROKEN_VALUES.values(), ids=BROKEN_VALUES.keys())
@pytest.mark.parametrize("arm", [BASELINE, CHALLENGER])
def test_analyze__value_beyond_range__fails_alone_and_conversion_still_rolls_back(broken, arm):
    by_arm = {name: {0: dict(s)} for name, s in HARMFUL.items()}
    by_arm[arm][0].update(broken)

    result = look(by_arm)

    assert_well_formed(result)
    assert set(result.failures) == {VALUE}
    assert "value could not be computed" in result.body["metric_failures"][VALUE]
    for entry in result.body["arms"]:
        assert entry["metrics"][VALUE] == {"n": 3000, "error": result.failures[VALUE]}
    assert result.decision == decisions.ROLLBACK
    assert result.comparisons[PRIMARY][CHALLENGER].direction == "worse"
    assert {MODEL_ERROR, DISMISSED} <= set(result.comparisons)
    # A rollback names only the harm; the stored inputs keep null for what JSON cannot hold.
    assert any(PRIMARY in reason for reason in result.verdict.reasons)
    stored = result.inputs["arms"][arm]
    assert all(
        v is None or math.isfinite(v) for v in (stored["value_total"], stored["value_squares"])
    )


def test_analyze__value_broken__named_in_reasons_of_a_continue():
    equal = {0: sums(3000, 300)}
    broken = {0: sums(3000, 300, value_total=math.inf, value_squares=math.inf)}

    result = look({BASELINE: equal, CHALLENGER: broken})

    assert result.decision == decisions.CONTINUE
    assert result.failures[VALUE] in result.verdict.reasons
    assert_well_formed(result)


def test_analyze__primary_broken__insufficient_data_with_the_failure_as_reason():
    # A negative count cannot come from SQL COUNT; it must still not stop the judge.
    result = look({BASELINE: {0: sums(3000, -5)}, CHALLENGER: {0: sums(3000, 300)}})

    assert_well_formed(result)
    assert PRIMARY in result.failures
    assert result.decision == decisions.INSUFFICIENT_DATA
    assert result.verdict.reasons == (result.failures[PRIMARY],)


def test_analyze__baseline_pooled_over_uncompared_strata_overflows__a_failure_not_a_crash():
    # Each stratum is finite and the compared one is fine, but the baseline's pooled sum of
    # squares (shown in the body) is 2e308: beyond floating-point range.
    big = {"value_total": 1e154, "value_squares": 1e308}
    baseline = {0: sums(3000, 300, **values(3000, 1.0, 1.0)), 1: sums(5, 1, **big)}
    baseline[2] = sums(5, 1, **big)
    challenger = {0: sums(3000, 150, **values(3000, 1.0, 1.0))}

    result = look({BASELINE: baseline, CHALLENGER: challenger})

    assert_well_formed(result)
    assert set(result.failures) == {VALUE}
    assert VALUE not in result.comparisons
    assert result.decision == decisions.ROLLBACK


def test_analyze__a_failure_after_comparing__keeps_nothing_of_the_metric(monkeypatch):
    def broken(*args, **kwargs):
        raise ArithmeticError("boom")

    monkeypatch.setattr(analysis, "_extreme_harm", broken)

    result = look({BASELINE: {0: sums(3000, 300)}, CHALLENGER: {0: sums(3000, 150)}})

    # Every metric failed after its comparison ran: none of them may decide.
    assert set(result.failures) == {s.name for s in SPECS}
    assert result.comparisons == {}
    assert result.decision == decisions.INSUFFICIENT_DATA
    assert_well_formed(result)


FINITE_ODDITIES = {
    "denormal values": {"value_total": 5e-324, "value_squares": 5e-324},
    "denormal squares of tiny values": {"value_total": 3000 * 1e-170, "value_squares": 0.0},
    "negative values": values(3000, -4.5, 2.0),
    "many decimals": values(3000, 0.1 + 0.2, 0.30000000000000004),
    "squares below total^2/n (rounding)": {"value_total": 3000.0, "value_squares": 2999.9999},
    "negative squares": {"value_total": 10.0, "value_squares": -1.0},
    "huge but finite": values(3000, 1e12, 1e12),
}


@pytest.mark.parametrize("odd", FINITE_ODDITIES.values(), ids=FINITE_ODDITIES.keys())
def test_analyze__finite_oddities_in_values__never_raise_and_conversion_decides(odd):
    by_arm = {
        BASELINE: {0: sums(3000, 300, **values(3000, 1.0, 1.0))},
        CHALLENGER: {0: sums(3000, 150, **odd)},
    }

    result = look(by_arm)

    assert_well_formed(result)
    assert PRIMARY not in result.failures
    assert result.decision == decisions.ROLLBACK
    assert result.comparisons[PRIMARY][CHALLENGER].direction == "worse"


def test_analyze__counts_above_n__capped_at_n():
    by_arm = {
        BASELINE: {0: sums(3000, 300, errored=20, dismissed=50)},
        CHALLENGER: {0: sums(3000, 9000, errored=9000, dismissed=9000)},
    }

    result = look(by_arm)

    assert_well_formed(result)
    assert result.failures == {}
    challenger = {a["arm"]: a for a in result.body["arms"]}[CHALLENGER]["metrics"]
    assert challenger[PRIMARY]["mean"] == 1.0
    assert challenger[MODEL_ERROR]["mean"] == 1.0
    assert result.decision == decisions.ROLLBACK  # model_error and Dismissed: every device


def test_analyze__zero_n_strata_with_stray_sums__ignored():
    stray = sums(0, 7, errored=3, value_total=math.inf, value_squares=math.nan, dismissed=2)
    by_arm = {
        BASELINE: {0: sums(3000, 300), 1: stray},
        CHALLENGER: {0: sums(3000, 150), 2: dict(stray)},
    }

    result = look(by_arm)

    assert_well_formed(result)
    assert PRIMARY not in result.failures
    assert result.comparisons[PRIMARY][CHALLENGER].strata == 1
    assert result.decision == decisions.ROLLBACK


def test_analyze__no_devices_at_all__insufficient_data():
    result = look({}, srm_counts={})

    assert_well_formed(result)
    assert result.decision == decisions.INSUFFICIENT_DATA


def test_analyze__many_strata__combined():
    baseline = {k: sums(100, 10 + k % 3, **values(100, 1.0, 1.0)) for k in range(60)}
    challenger = {k: sums(100, 5, **values(100, 1.0, 1.0)) for k in range(60)}

    result = look({BASELINE: baseline, CHALLENGER: challenger})

    assert_well_formed(result)
    assert result.comparisons[PRIMARY][CHALLENGER].strata == 60
    assert result.decision == decisions.ROLLBACK


# ----------------------------------------------------------------- adversarial, generated

ODD_FLOATS = st.sampled_from(
    [
        0.0,
        -0.0,
        5e-324,
        -5e-324,
        2.2250738585072014e-308,
        1e-170,
        0.1 + 0.2,
        0.1234567890123456789,
        -123456.78901234567,
        1e9,
        1e12,
        1e154,
        1e300,
        -1e300,
        1e308,
        -1e308,
        1.7976931348623157e308,
        math.inf,
        -math.inf,
        math.nan,
    ]
)
VALUE_FLOATS = st.one_of(ODD_FLOATS, st.floats(allow_nan=True, allow_infinity=True))


@st.composite
def stratum_sums(draw, max_n=4000):
    n = draw(st.integers(0, max_n))
    count = st.integers(0, 2 * n + 10)  # more than n: outcome rows ahead of the exposures
    return {
        "n": n,
        "reporting": draw(count),
        "converted": draw(count),
        "errored": draw(count),
        "adopted": draw(count),
        "value_total": draw(VALUE_FLOATS),
        "value_squares": draw(VALUE_FLOATS),
        "labels": {"Dismissed": draw(count)},
    }


STRATA = st.dictionaries(st.integers(0, 40), stratum_sums(), max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(baseline=STRATA, challenger=STRATA)
def test_analyze__any_sums__never_raises_and_the_body_is_json(baseline, challenger):
    result = look({BASELINE: baseline, CHALLENGER: challenger})

    assert_well_formed(result)


@st.composite
def value_sums(draw):
    """Only the value sums are adversarial; the counts are a clear conversion harm."""
    return draw(VALUE_FLOATS), draw(VALUE_FLOATS)


@settings(max_examples=300, deadline=None)
@given(
    base_values=st.lists(value_sums(), min_size=1, max_size=4),
    chal_values=st.lists(value_sums(), min_size=1, max_size=4),
)
def test_analyze__any_value_sums__harmful_challenger_still_rolled_back(base_values, chal_values):
    def arm(converted, value_pairs):
        return {
            k: sums(1000, converted, value_total=t, value_squares=s)
            for k, (t, s) in enumerate(value_pairs)
        }

    result = look({BASELINE: arm(100, base_values), CHALLENGER: arm(40, chal_values)})

    assert_well_formed(result)
    assert set(result.failures) <= {VALUE}
    assert result.decision == decisions.ROLLBACK
    assert result.comparisons[PRIMARY][CHALLENGER].direction == "worse"
    if VALUE in result.failures:
        assert all("error" in entry["metrics"][VALUE] for entry in result.body["arms"])
    else:
        assert all("error" not in entry["metrics"][VALUE] for entry in result.body["arms"])


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(2, 10_000),
    mean=st.floats(-1e9, 1e9),
    sd=st.floats(0.0, 1e9),
    shift=st.floats(-1e9, 1e9),
)
def test_analyze__values_within_the_ingest_bounds__always_computed(n, mean, sd, shift):
    # Values as events bring them (±1e9, clipped per device at 1e12): nothing may fail.
    baseline = {0: sums(n, n // 10, **values(n, mean, sd))}
    challenger = {0: sums(n, n // 10, **values(n, mean + shift, sd))}

    result = look({BASELINE: baseline, CHALLENGER: challenger})

    assert_well_formed(result)
    assert result.failures == {}


def test_failed_metric__keeps_its_previous_sequential_state_for_the_next_look():
    good = {
        BASELINE: {0: sums(3000, 300, **values(3000, 5.0, 2.0))},
        CHALLENGER: {0: sums(3000, 310, **values(3000, 5.1, 2.0))},
    }
    previous, _ = sequential_state_read(look(good).sequential_state)
    assert previous[VALUE][CHALLENGER].looks == 1
    broken = {name: {0: dict(s[0])} for name, s in good.items()}
    broken[CHALLENGER][0].update(BROKEN_VALUES["1e308 total"])

    result = look(broken, previous=previous)

    assert set(result.failures) == {VALUE}
    carried, _ = sequential_state_read(result.sequential_state)
    assert carried[VALUE][CHALLENGER] == previous[VALUE][CHALLENGER]
    assert carried[PRIMARY][CHALLENGER].looks == 2
