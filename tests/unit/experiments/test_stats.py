"""Pure tests of experiments/stats.py: scipy references, simulations, edge cases."""

import ast
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special
from scipy import stats as sps

from experiments import stats
from experiments.stats import (
    ArmStats,
    Comparison,
    MetricSpec,
    SequentialState,
    compare_arms,
)

CONVERSION = MetricSpec(name="conversion", kind="proportion")
LATENCY = MetricSpec(name="latency_ms", kind="mean", higher_is_better=False)
CONTRACT_FIELDS = {
    "n",
    "mean",
    "diff",
    "diff_ci",
    "lift",
    "lift_ci",
    "p_value",
    "p_value_adjusted",
    "sequential_ci",
    "significant",
}


def _dumps(value):
    return json.dumps(value, allow_nan=False)


def _one(baseline, challenger, metric=CONVERSION, **kwargs) -> Comparison:
    return compare_arms(baseline, {"challenger-1": challenger}, metric, **kwargs)["challenger-1"]


# ------------------------------------------------------------------ module purity


def test_stats_module__imports__only_stdlib_numpy_and_scipy():
    """The module imports nothing but the stdlib, numpy and scipy (no Django)."""
    tree = ast.parse(Path(stats.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    allowed = {"__future__", "math", "collections", "dataclasses", "typing", "numpy", "scipy"}
    assert roots <= allowed, roots - allowed
    assert "django" not in roots


# ------------------------------------------------------------------------ ArmStats


def test_arm_stats__values__mean_and_variance_match_numpy_ddof1():
    """mean and variance are the sample mean and the ddof=1 sample variance."""
    values = [3.5, 1.25, 9.0, 4.0, 0.5, 7.75]
    arm = ArmStats.from_values(values)
    assert arm.n == 6
    assert arm.mean == pytest.approx(np.mean(values), rel=1e-12)
    assert arm.variance == pytest.approx(np.var(values, ddof=1), rel=1e-12)


def test_arm_stats__proportion__total_and_squares_are_conversions():
    """A proportion arm stores conversions as both sums; variance is n p(1-p)/(n-1)."""
    arm = ArmStats.proportion(200, 30)
    assert (arm.n, arm.total, arm.total_squares) == (200, 30.0, 30.0)
    assert arm.mean == 0.15
    assert arm.variance == pytest.approx(200 * 0.15 * 0.85 / 199, rel=1e-12)


@pytest.mark.parametrize(
    ("n", "expected_mean", "expected_variance"), [(0, None, None), (1, 4.0, None)]
)
def test_arm_stats__fewer_than_two_devices__variance_is_none(n, expected_mean, expected_variance):
    """An arm with n < 2 has no variance; an empty arm has no mean."""
    arm = ArmStats(n=n, total=4.0 * n, total_squares=16.0 * n)
    assert arm.mean == expected_mean
    assert arm.variance is expected_variance


def test_arm_stats__constant_values_with_rounding__variance_is_exactly_zero():
    """A centred sum of squares within rounding error is reported as 0, not 1e-17."""
    arm = ArmStats.from_values([0.1] * 100_000)
    assert arm.variance == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": -1, "total": 0, "total_squares": 0}, "n must be >= 0"),
        ({"n": 10, "total": 1, "total_squares": -1}, "total_squares must be >= 0"),
        ({"n": 0, "total": 1, "total_squares": 1}, "n == 0"),
        ({"n": 2, "total": 10, "total_squares": 1}, "Cauchy-Schwarz"),
        ({"n": 2, "total": math.nan, "total_squares": 1}, "finite"),
        ({"n": 2.5, "total": 1, "total_squares": 1}, "integer"),
        ({"n": True, "total": 1, "total_squares": 1}, "integer"),
    ],
)
def test_arm_stats__invalid_sums__raise_value_error(kwargs, message):
    """Impossible sufficient statistics are rejected at construction."""
    with pytest.raises(ValueError, match=message):
        ArmStats(**kwargs)


def test_arm_stats__more_conversions_than_devices__raises_value_error():
    """A proportion with conversions > n is rejected."""
    with pytest.raises(ValueError, match=r"in \[0, n\]"):
        ArmStats.proportion(10, 11)


# ------------------------------------------------------------- fixed-horizon tests


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((120, 10.0, 2.0), (150, 10.4, 3.5)),
        ((5000, 250.0, 40.0), (800, 251.5, 90.0)),
        ((3, 1.0, 0.5), (2, 4.0, 10.0)),
        ((1000, -3.0, 1.0), (1000, -3.0, 1.0)),
    ],
)
def test_welch_t_test__summary_stats__matches_scipy_to_1e9(a, b):
    """Welch's t and p agree with scipy.stats.ttest_ind_from_stats(equal_var=False)."""
    (na, ma, sa), (nb, mb, sb) = a, b
    baseline = ArmStats(na, ma * na, (na - 1) * sa**2 + na * ma**2)
    challenger = ArmStats(nb, mb * nb, (nb - 1) * sb**2 + nb * mb**2)
    t, df, p = stats.welch_t_test(baseline, challenger)
    ref = sps.ttest_ind_from_stats(mb, sb, nb, ma, sa, na, equal_var=False)
    assert t == pytest.approx(ref.statistic, rel=1e-9, abs=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)
    assert df >= min(na, nb) - 1


@pytest.mark.parametrize(
    ("na", "ca", "nb", "cb"),
    [(1000, 100, 1000, 130), (9012, 910, 988, 86), (400, 200, 300, 120), (150, 5, 5000, 400)],
)
def test_pooled_z_test__2x2_table__matches_uncorrected_chi2_contingency(na, ca, nb, cb):
    """The pooled z-test p-value equals the 2x2 chi-square p without Yates' correction."""
    z, p = stats.pooled_z_test(ArmStats.proportion(na, ca), ArmStats.proportion(nb, cb))
    chi2, ref_p, _, _ = sps.chi2_contingency([[cb, nb - cb], [ca, na - ca]], correction=False)
    assert p == pytest.approx(ref_p, rel=1e-9)
    assert z**2 == pytest.approx(chi2, rel=1e-9)
    assert math.copysign(1, z) == math.copysign(1, cb / nb - ca / na)


def test_compare_arms__proportion__p_value_and_interval_match_references():
    """A proportion comparison uses the pooled z p-value and a Wald interval for diff."""
    baseline, challenger = ArmStats.proportion(9012, 910), ArmStats.proportion(4988, 430)
    result = _one(baseline, challenger)
    _, ref_p, _, _ = sps.chi2_contingency([[430, 4988 - 430], [910, 9012 - 910]], correction=False)
    assert result.p_value == pytest.approx(ref_p, rel=1e-9)
    assert result.p_value_adjusted == pytest.approx(ref_p, rel=1e-9)
    diff = 430 / 4988 - 910 / 9012
    se = math.sqrt(baseline.variance / 9012 + challenger.variance / 4988)
    z = sps.norm.ppf(0.975)
    assert result.diff == pytest.approx(diff, rel=1e-12)
    assert result.diff_ci == pytest.approx((diff - z * se, diff + z * se), rel=1e-9)
    assert result.n == 4988
    assert result.mean == pytest.approx(430 / 4988)


def test_compare_arms__mean_metric__matches_scipy_welch_on_raw_values():
    """p_value and diff_ci equal scipy's Welch ttest_ind on the raw per-device values."""
    rng = np.random.default_rng(7)
    a = rng.gamma(2.0, 50.0, size=400)
    b = rng.gamma(2.0, 54.0, size=250)
    result = _one(ArmStats.from_values(a), ArmStats.from_values(b), LATENCY)
    ref = sps.ttest_ind(b, a, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert result.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert result.diff == pytest.approx(b.mean() - a.mean(), rel=1e-9)
    assert result.diff_ci == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_compare_arms__lift__delta_method_matches_numerical_gradient():
    """lift = diff/|m_a| with a delta-method interval (gradient checked numerically)."""
    rng = np.random.default_rng(11)
    a, b = rng.normal(20.0, 6.0, 300), rng.normal(22.0, 9.0, 500)
    result = _one(ArmStats.from_values(a), ArmStats.from_values(b), LATENCY)
    ma, mb = a.mean(), b.mean()
    cov = np.diag([a.var(ddof=1) / a.size, b.var(ddof=1) / b.size])

    def g(x):
        return (x[1] - x[0]) / abs(x[0])

    eps = 1e-6
    grad = np.array(
        [
            (g([ma + eps, mb]) - g([ma - eps, mb])) / (2 * eps),
            (g([ma, mb + eps]) - g([ma, mb - eps])) / (2 * eps),
        ]
    )
    se = math.sqrt(grad @ cov @ grad)
    welch_df = stats.welch_t_test(ArmStats.from_values(a), ArmStats.from_values(b))[1]
    crit = sps.t.ppf(0.975, welch_df)
    assert result.lift == pytest.approx(mb / ma - 1, rel=1e-9)
    assert result.lift_ci == pytest.approx(
        (g([ma, mb]) - crit * se, g([ma, mb]) + crit * se), rel=1e-6
    )


def test_compare_arms__negative_baseline_mean__lift_sign_follows_diff():
    """With a negative baseline mean, the relative lift keeps the sign of the difference."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(-10.0, 2.0, 500), rng.normal(-9.0, 2.0, 500)
    result = _one(ArmStats.from_values(a), ArmStats.from_values(b), LATENCY)
    assert result.diff > 0
    assert result.lift == pytest.approx(result.diff / abs(a.mean()), rel=1e-12)
    assert result.lift > 0


# ---------------------------------------------------------------------------- Holm


def test_holm_adjust__hand_computed_example__matches():
    """Holm on [0.01, 0.04, 0.03, 0.005]: 4*0.005, 3*0.01, 2*0.03, then max(0.06, 0.04)."""
    adjusted = stats.holm_adjust([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)


def test_holm_adjust__capped_and_empty__stays_in_unit_interval():
    """Adjusted values are capped at 1, and an empty family gives an empty list."""
    assert stats.holm_adjust([0.6, 0.7]) == [1.0, 1.0]
    assert stats.holm_adjust([]) == []
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.holm_adjust([1.5])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=5))
def test_holm_adjust__any_p_values__equals_closed_testing_with_bonferroni(p_values):
    """Holm equals the closure of Bonferroni tests: adj_i = max over S containing i of
    min(1, |S| * min_{j in S} p_j), computed here by brute force over all subsets."""
    m = len(p_values)
    expected = []
    for i in range(m):
        worst = 0.0
        for size in range(1, m + 1):
            for subset in itertools.combinations(range(m), size):
                if i in subset:
                    worst = max(worst, min(1.0, size * min(p_values[j] for j in subset)))
        expected.append(worst)
    assert stats.holm_adjust(p_values) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_compare_arms__three_challengers__p_value_adjusted_is_holm_with_insufficient_as_one():
    """p_value_adjusted is Holm over all challengers; an insufficient one counts as p = 1."""
    baseline = ArmStats.proportion(2000, 200)
    challengers = {
        "c1": ArmStats.proportion(2000, 250),
        "c2": ArmStats.proportion(2000, 215),
        "c3": ArmStats.proportion(50, 5),  # too few devices
    }
    result = compare_arms(baseline, challengers, CONVERSION)
    raw = [result["c1"].p_value, result["c2"].p_value, 1.0]
    expected = stats.holm_adjust(raw)
    assert result["c1"].p_value_adjusted == pytest.approx(expected[0], rel=1e-12)
    assert result["c2"].p_value_adjusted == pytest.approx(expected[1], rel=1e-12)
    assert result["c1"].p_value_adjusted == pytest.approx(3 * result["c1"].p_value, rel=1e-12)
    assert result["c3"].p_value_adjusted is None
    assert result["c3"].insufficient.startswith("challenger has 50 devices")


# ---------------------------------------------------------------------- sequential


def test_mixture_rho_squared__default_settings__golden_value():
    """rho^2 = (-2 ln 0.05 + ln(1 - 2 ln 0.05)) / 5000."""
    assert stats.mixture_rho_squared(0.05, 5000) == pytest.approx(7.936153 / 5000, rel=1e-6)


@pytest.mark.parametrize(
    ("diff", "variance", "n_total", "alpha", "planned"),
    [(0.02, 1e-4, 2000, 0.05, 5000), (-1.5, 0.3, 40_000, 0.01, 10_000), (0.0, 2.0, 250, 0.1, 500)],
)
def test_always_valid__formulas__match_mixture_and_gbstats_forms(
    diff, variance, n_total, alpha, planned
):
    """p and half-width match the tau^2 = rho^2 N V form and GrowthBook's s2 = V N form."""
    rho2 = (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha))) / planned
    tau2 = rho2 * n_total * variance
    lam = math.sqrt(variance / (variance + tau2)) * math.exp(
        diff**2 * tau2 / (2 * variance * (variance + tau2))
    )
    half = math.sqrt(
        variance
        * (variance + tau2)
        / tau2
        * (2 * math.log(1 / alpha) + math.log((variance + tau2) / variance))
    )
    s2 = variance * n_total  # gbstats: sequential_interval_halfwidth(s2, n, ...)
    gb_half = math.sqrt(s2) * math.sqrt(
        2
        * (n_total * rho2 + 1)
        * math.log(math.sqrt(n_total * rho2 + 1) / alpha)
        / (n_total**2 * rho2)
    )
    kwargs = {"alpha": alpha, "planned_sample": planned}
    assert stats.always_valid_p_value(diff, variance, n_total, **kwargs) == pytest.approx(
        min(1.0, 1 / lam), rel=1e-12
    )
    assert stats.always_valid_halfwidth(variance, n_total, **kwargs) == pytest.approx(
        half, rel=1e-12
    )
    assert gb_half == pytest.approx(half, rel=1e-12)


def test_always_valid_p_value__huge_effect__is_zero_not_nan():
    """A huge standardised effect gives p = 0.0 (computed in logs), never inf or NaN."""
    p = stats.always_valid_p_value(1e6, 1e-300, 10_000, alpha=0.05, planned_sample=5000)
    assert p == 0.0


def test_sequential_update__p_rises_later__running_min_keeps_significance():
    """A later, weaker look cannot un-significant an earlier significant result."""
    look1 = _one(ArmStats.proportion(1000, 100), ArmStats.proportion(1000, 160))
    look2_alone = _one(ArmStats.proportion(2000, 200), ArmStats.proportion(2000, 250))
    look2 = _one(
        ArmStats.proportion(2000, 200),
        ArmStats.proportion(2000, 250),
        previous={"challenger-1": look1.state},
    )
    assert look1.significant is True
    assert look1.direction == "better"
    assert look2_alone.significant is False
    assert look2_alone.sequential_p > look1.sequential_p
    assert look2.significant is True
    assert look2.direction == "better"
    assert look2.sequential_p == look1.sequential_p
    assert look2.sequential_ci == (look1.sequential_ci[0], look2_alone.sequential_ci[1])
    assert look2.state.looks == 2
    assert look2.sequential_conflict is False


def test_sequential_update__many_looks__p_never_rises_and_interval_only_shrinks():
    """Across looks the stored p is non-increasing and each interval nests in the last."""
    rng = np.random.default_rng(5)
    conversions = rng.binomial(200, 0.1, size=(30, 2)).cumsum(axis=0)
    state = None
    p_values, intervals = [], []
    for look in range(1, 31):
        n = 200 * look
        a, b = (ArmStats.proportion(n, int(c)) for c in conversions[look - 1])
        variance = a.variance / n + b.variance / n
        state = stats.sequential_update(b.mean - a.mean, variance, 2 * n, previous=state)
        if state.conflict:
            break
        p_values.append(state.p_value)
        intervals.append(state.ci)
    assert len(p_values) == 30
    assert all(b <= a for a, b in itertools.pairwise(p_values))
    assert all(b[0] >= a[0] and b[1] <= a[1] for a, b in itertools.pairwise(intervals))


def test_sequential_update__disjoint_interval__restarts_with_sticky_conflict():
    """An empty intersection restarts from the current look and marks a lasting conflict."""
    first = stats.sequential_update(0.05, 1e-5, 4000)
    assert first.ci[0] > 0
    second = stats.sequential_update(-0.05, 1e-5, 4200, previous=first)
    third = stats.sequential_update(-0.04, 1e-5, 4400, previous=second)
    h = stats.always_valid_halfwidth(1e-5, 4200, alpha=0.05, planned_sample=5000)
    assert second.conflict is True
    assert second.ci == pytest.approx((-0.05 - h, -0.05 + h), rel=1e-12)
    assert second.looks == 2
    assert third.conflict is True
    assert third.looks == 3


def test_sequential_update__changed_alpha__restarts_with_conflict():
    """Changing alpha or the planned sample mid-rollout voids the guarantee: conflict."""
    first = stats.sequential_update(0.01, 1e-4, 2000, alpha=0.05)
    changed_alpha = stats.sequential_update(0.01, 1e-4, 2200, alpha=0.025, previous=first)
    changed_s = stats.sequential_update(0.01, 1e-4, 2200, planned_sample=9000, previous=first)
    assert changed_alpha.conflict is True
    assert changed_s.conflict is True
    assert stats.sequential_update(0.01, 1e-4, 2200, previous=first).conflict is False


def test_sequential_state__to_dict__round_trips_through_json():
    """A stored state rebuilds to an equal state."""
    state = stats.sequential_update(0.013, 2e-5, 3000)
    restored = SequentialState.from_dict(json.loads(_dumps(state.to_dict())))
    assert restored == state


def test_compare_arms__insufficient_look_after_significant__keeps_previous_state():
    """An insufficient look reports no statistics and passes the previous state on."""
    look1 = _one(ArmStats.proportion(1000, 100), ArmStats.proportion(1000, 160))
    later = _one(
        ArmStats.proportion(1000, 100),
        ArmStats.proportion(1000, 1000),
        previous={"challenger-1": look1.state},
    )
    assert later.insufficient is not None
    assert later.state == look1.state
    assert later.significant is False
    assert later.sequential_ci is None


def test_compare_arms__lower_is_better__worse_when_interval_above_zero():
    """For a lower-is-better metric, a significantly higher mean is "worse"."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(100.0, 10.0, 3000), rng.normal(104.0, 10.0, 3000)
    result = _one(ArmStats.from_values(a), ArmStats.from_values(b), LATENCY)
    assert result.significant is True
    assert result.sequential_ci[0] > 0
    assert result.direction == "worse"


def test_compare_arms__harm_within_margin__significant_but_not_worse():
    """A significant drop smaller than the margin is not "worse"; beyond it, it is."""
    baseline, challenger = ArmStats.proportion(20_000, 4000), ArmStats.proportion(20_000, 3700)
    tolerant = MetricSpec(name="conversion", kind="proportion", margin=0.05)
    strict = MetricSpec(name="conversion", kind="proportion", margin=0.001)
    within = _one(baseline, challenger, tolerant)
    beyond = _one(baseline, challenger, strict)
    assert within.significant is True
    assert within.sequential_ci[1] < 0
    assert within.sequential_ci[1] > -0.05
    assert within.direction == "none"
    assert beyond.direction == "worse"


def test_compare_arms__multiple_challengers__sequential_level_is_alpha_over_m():
    """With m challengers each sequential interval is built at alpha/m (Bonferroni)."""
    baseline = ArmStats.proportion(3000, 300)
    challengers = {f"c{i}": ArmStats.proportion(3000, 330 + 10 * i) for i in range(3)}
    result = compare_arms(baseline, challengers, CONVERSION)
    for name, arm in challengers.items():
        v = baseline.variance / 3000 + arm.variance / 3000
        h = stats.always_valid_halfwidth(v, 6000, alpha=0.05 / 3, planned_sample=5000)
        comparison = result[name]
        assert comparison.sequential_ci == pytest.approx(
            (comparison.diff - h, comparison.diff + h), rel=1e-12
        )
        assert comparison.state.alpha == pytest.approx(0.05 / 3)
        assert comparison.sequential_p_adjusted == pytest.approx(
            min(1.0, 3 * comparison.sequential_p), rel=1e-12
        )
        assert comparison.significant == (comparison.sequential_p < 0.05 / 3)


# -------------------------------------------------------------------- simulations


def _aa_looks(rng, experiments, looks, step, rate, arms):
    """Cumulative conversions (experiments, looks, arms) of identical arms."""
    return rng.binomial(step, rate, size=(experiments, looks, arms)).cumsum(axis=1)


def test_sequential_rule__2000_aa_experiments_20_looks__stays_under_alpha_while_naive_does_not():
    """Peeking with the fixed-horizon p is wrong about a quarter of the time; the
    always-valid rule stays under 5 %. Vectorised over 2 000 A/A experiments x 20 looks."""
    rng = np.random.default_rng(20260801)
    experiments, looks, step, rate = 2000, 20, 250, 0.10
    conversions = _aa_looks(rng, experiments, looks, step, rate, arms=2)
    n = step * np.arange(1, looks + 1)[None, :]
    ca, cb = conversions[..., 0], conversions[..., 1]
    pa, pb = ca / n, cb / n
    pooled = (ca + cb) / (2 * n)
    z = (pb - pa) / np.sqrt(pooled * (1 - pooled) * 2 / n)
    naive_any = (2 * sps.norm.sf(np.abs(z)) < 0.05).any(axis=1)
    variance = n * pa * (1 - pa) / (n - 1) / n + n * pb * (1 - pb) / (n - 1) / n
    sequential_p = stats.always_valid_p_value(
        pb - pa, variance, 2 * n, alpha=0.05, planned_sample=5000
    )
    sequential_any = (sequential_p < 0.05).any(axis=1)
    naive_rate, sequential_rate = naive_any.mean(), sequential_any.mean()
    print(
        f"\nA/A, {experiments} experiments x {looks} looks: naive peeking false-positive rate "
        f"{naive_rate:.4f}, always-valid rule {sequential_rate:.4f}"
    )
    assert naive_rate > 0.15
    assert sequential_rate <= 0.05

    # The same decisions through compare_arms with the stored state, look by look.
    for e in range(300):
        state = None
        for look in range(looks):
            nl = int(n[0, look])
            result = _one(
                ArmStats.proportion(nl, int(ca[e, look])),
                ArmStats.proportion(nl, int(cb[e, look])),
                previous={"challenger-1": state} if state else None,
            )
            state = result.state or state
        assert state.p_value == pytest.approx(sequential_p[e].min(), rel=1e-9)
        assert (state.ci[0] > 0 or state.ci[1] < 0) == sequential_any[e]


def test_holm_and_sequential__three_aa_challengers__family_wise_rate_under_alpha():
    """Three A/A challengers sharing a baseline: Holm (fixed horizon, one look) and the
    Bonferroni always-valid rule (20 looks) both keep the family-wise rate under 5 %."""
    rng = np.random.default_rng(424242)
    # Fixed horizon, one look, Holm across 3 challengers: 20 000 families.
    families, n, rate = 20_000, 2000, 0.10
    conv = rng.binomial(n, rate, size=(families, 4))
    p0 = conv[:, :1] / n
    pc = conv[:, 1:] / n
    pooled = (conv[:, :1] + conv[:, 1:]) / (2 * n)
    p_values = 2 * special.ndtr(-np.abs((pc - p0) / np.sqrt(pooled * (1 - pooled) * 2 / n)))
    holm_any = np.array([min(stats.holm_adjust(row)) < 0.05 for row in p_values])
    unadjusted_any = (p_values < 0.05).any(axis=1)

    # Sequential, 20 looks, level 0.05/3 per challenger: 2 000 families.
    experiments, looks, step = 2000, 20, 250
    conversions = _aa_looks(rng, experiments, looks, step, rate, arms=4)
    nl = step * np.arange(1, looks + 1)[None, :, None]
    means = conversions / nl
    var_of_mean = means * (1 - means) / (nl - 1)
    diff = means[..., 1:] - means[..., :1]
    variance = var_of_mean[..., 1:] + var_of_mean[..., :1]
    sequential_p = stats.always_valid_p_value(
        diff, variance, 2 * nl, alpha=0.05 / 3, planned_sample=5000
    )
    sequential_any = (sequential_p < 0.05 / 3).any(axis=(1, 2))
    print(
        f"\n3 A/A challengers: FWER unadjusted {unadjusted_any.mean():.4f}, Holm "
        f"{holm_any.mean():.4f} (1 look, {families} families); always-valid alpha/3 over "
        f"{looks} looks {sequential_any.mean():.4f} ({experiments} families)"
    )
    assert unadjusted_any.mean() > 0.08
    assert holm_any.mean() <= 0.05
    assert sequential_any.mean() <= 0.05

    # compare_arms makes the same family decision for a sample of families.
    for e in range(60):
        state = {}
        for look in range(looks):
            m = int(nl[0, look, 0])
            arms = [ArmStats.proportion(m, int(c)) for c in conversions[e, look]]
            result = compare_arms(
                arms[0], {f"c{i}": arms[i] for i in (1, 2, 3)}, CONVERSION, previous=state
            )
            state = {k: v.state for k, v in result.items() if v.state is not None}
        decided = any(s.ci[0] > 0 or s.ci[1] < 0 for s in state.values())
        assert decided == sequential_any[e]


def test_devices_per_arm_for_lift__10_to_7_percent__simulated_power_near_80_percent():
    """10 % -> 7 % with the computed devices per arm is detected about 80 % of the time."""
    n = stats.devices_per_arm_for_lift(0.10, -0.30, alpha=0.05, power=0.8)
    assert n == 1356
    assert stats.power_for(n, 0.10, -0.30) >= 0.8
    assert stats.power_for(n - 1, 0.10, -0.30) < 0.8
    rng = np.random.default_rng(99)
    runs = 4000
    ca = rng.binomial(n, 0.10, size=runs)
    cb = rng.binomial(n, 0.07, size=runs)
    fixed = [
        stats.pooled_z_test(ArmStats.proportion(n, int(a)), ArmStats.proportion(n, int(b)))[1]
        < 0.05
        for a, b in zip(ca, cb, strict=True)
    ]
    pa, pb = ca / n, cb / n
    variance = (pa * (1 - pa) + pb * (1 - pb)) / (n - 1)
    sequential_p = stats.always_valid_p_value(
        pb - pa, variance, 2 * n, alpha=0.05, planned_sample=5000
    )
    empirical, sequential_power = float(np.mean(fixed)), float(np.mean(sequential_p < 0.05))
    print(
        f"\npower 10% -> 7%: n/arm {n}, requested 0.80, fixed-horizon empirical {empirical:.4f}, "
        f"always-valid (one look at the end) {sequential_power:.4f}"
    )
    assert empirical == pytest.approx(0.8, abs=0.03)
    assert sequential_power < empirical


@pytest.mark.parametrize(
    ("baseline_rate", "lift", "kwargs"),
    [(0.0, 0.1, {}), (0.5, 1.0, {}), (0.1, 0.0, {}), (0.1, 0.1, {"power": 1.0})],
)
def test_devices_per_arm_for_lift__impossible_inputs__raise_value_error(
    baseline_rate, lift, kwargs
):
    """Rates outside (0, 1), a zero lift or power 1 are rejected."""
    with pytest.raises(ValueError):
        stats.devices_per_arm_for_lift(baseline_rate, lift, **kwargs)


# ---------------------------------------------------------------------------- SRM


@pytest.mark.parametrize(
    ("counts", "shares"),
    [
        ((5000, 5400), (0.5, 0.5)),
        ((9012, 988), (0.9, 0.1)),
        ((300, 310, 280), (1, 1, 1)),
        ((80, 220), (0.25, 0.75)),
    ],
)
def test_srm_p_value__counts__matches_scipy_chisquare(counts, shares):
    """The SRM p-value is scipy.stats.chisquare against the normalised shares."""
    expected = np.asarray(shares, dtype=float) / sum(shares) * sum(counts)
    assert stats.srm_p_value(counts, shares) == pytest.approx(
        sps.chisquare(counts, expected).pvalue, rel=1e-9
    )


def test_srm_check__5000_vs_5400_at_half_half__flags():
    """(5 000, 5 400) at 1:1 is a mismatch (p ~ 9e-5, 3.8 % off)."""
    finding = stats.srm_check((5000, 5400), (0.5, 0.5))
    assert finding is not None
    assert finding.p_value < stats.SRM_P_VALUE_THRESHOLD
    assert finding.max_relative_deviation == pytest.approx((5400 / 10400 - 0.5) / 0.5, rel=1e-9)
    assert finding.observed_shares == pytest.approx((5000 / 10400, 5400 / 10400))
    assert _dumps(finding.to_dict())


def test_srm_check__5000_vs_5100_at_half_half__does_not_flag():
    """(5 000, 5 100) at 1:1 is ordinary noise (p ~ 0.32)."""
    assert stats.srm_p_value((5000, 5100), (0.5, 0.5)) == pytest.approx(0.3202, abs=1e-3)
    assert stats.srm_check((5000, 5100), (0.5, 0.5)) is None


def test_srm_p_value__99_1_split_with_few_devices__insufficient():
    """An expected count under 5 in a cell gives None, not a chi-square false alarm."""
    # The raw chi-square would give p ~ 1e-8 here.
    assert sps.chisquare((190, 10), (198, 2)).pvalue < 1e-6
    assert stats.srm_p_value((190, 10), (0.99, 0.01)) is None
    assert stats.srm_check((190, 10), (0.99, 0.01)) is None


def test_srm_check__huge_sample_with_0_1_percent_deviation__not_flagged():
    """20 M devices 0.1 % off 1:1 are 'significant' but not a practical mismatch."""
    counts = (9_990_000, 10_010_000)
    assert stats.srm_p_value(counts, (0.5, 0.5)) < 1e-4
    assert stats.srm_check(counts, (0.5, 0.5)) is None


def test_srm_p_value__devices_in_zero_share_arm__is_zero():
    """Devices exposed to an arm configured at 0 % are a mismatch by definition."""
    assert stats.srm_p_value((1000, 3), (1.0, 0.0)) == 0.0
    finding = stats.srm_check((1000, 3), (1.0, 0.0))
    assert finding is not None
    assert finding.max_relative_deviation == 1.0


@pytest.mark.parametrize(("counts", "shares"), [((0, 0), (0.5, 0.5)), ((1000, 0), (1.0, 0.0))])
def test_srm_p_value__nothing_to_test__is_none(counts, shares):
    """No devices, or a single arm with a positive share, gives None."""
    assert stats.srm_p_value(counts, shares) is None


@pytest.mark.parametrize(
    ("counts", "shares"),
    [((1, 2, 3), (0.5, 0.5)), ((-1, 5), (0.5, 0.5)), ((5, 5), (0, 0)), ((5,), (1.0,))],
)
def test_srm_p_value__invalid_arguments__raise_value_error(counts, shares):
    """Mismatched lengths, negative counts, all-zero shares or one arm are rejected."""
    with pytest.raises(ValueError):
        stats.srm_p_value(counts, shares)


def test_srm_by_slice__mixed_slices__names_only_the_mismatched_slice():
    """Only the mismatched slice is named; an insufficient slice is skipped."""
    findings = stats.srm_by_slice(
        {
            "os=iOS 17": ((5000, 5400), (0.5, 0.5)),
            "os=iOS 18": ((5000, 5100), (0.5, 0.5)),
            "country=IS": ((3, 1), (0.5, 0.5)),
        }
    )
    assert [f.slice for f in findings] == ["os=iOS 17"]


def test_srm_by_slice__many_slices__applies_bonferroni_to_threshold():
    """A p of ~4e-4 flags one slice alone, but not when it is one of ten slices."""
    counts = (5000, 5360)  # chi-square p ~ 4e-4, 3.5 % off
    p = stats.srm_p_value(counts, (0.5, 0.5))
    assert 1e-4 < p < stats.SRM_P_VALUE_THRESHOLD
    alone = stats.srm_by_slice({"a": (counts, (0.5, 0.5))})
    crowd = {"a": (counts, (0.5, 0.5))} | {f"s{i}": ((5000, 5000), (0.5, 0.5)) for i in range(9)}
    assert [f.slice for f in alone] == ["a"]
    assert stats.srm_by_slice(crowd) == []


# --------------------------------------------------------------------- edge cases


@pytest.mark.parametrize(
    ("baseline", "challenger", "metric", "reason"),
    [
        (
            ArmStats.proportion(500, 0),
            ArmStats.proportion(500, 0),
            CONVERSION,
            "baseline has 0 successes",
        ),
        (
            ArmStats.proportion(500, 500),
            ArmStats.proportion(500, 500),
            CONVERSION,
            "500 successes and 0 failures",
        ),
        (
            ArmStats.proportion(500, 50),
            ArmStats.proportion(500, 4),
            CONVERSION,
            "challenger has 4 successes",
        ),
        (ArmStats.proportion(500, 50), ArmStats.proportion(99, 10), CONVERSION, "at least 100"),
        (
            ArmStats.proportion(1, 1),
            ArmStats.proportion(1, 0),
            CONVERSION,
            "baseline has 1 devices",
        ),
        (
            ArmStats.proportion(0, 0),
            ArmStats.proportion(0, 0),
            CONVERSION,
            "baseline has 0 devices",
        ),
        (
            ArmStats(500, 1500.0, 4500.0),
            ArmStats(500, 1600.0, 5200.0),
            LATENCY,
            "baseline has zero variance",
        ),
        (
            ArmStats(500, 1500.0, 4600.0),
            ArmStats(500, 1500.0, 4500.0),
            LATENCY,
            "challenger has zero variance",
        ),
        (ArmStats(500, 0.0, 800.0), ArmStats(500, 100.0, 820.0), LATENCY, "baseline mean is 0"),
    ],
)
def test_compare_arms__degenerate_data__insufficient_and_json_safe(
    baseline, challenger, metric, reason
):
    """0 or all conversions, too few devices, n < 2, zero variance or a zero baseline mean
    give an 'insufficient' reason, no exception, no decision and JSON-safe output."""
    result = _one(baseline, challenger, metric)
    assert reason in result.insufficient
    assert result.significant is False
    assert result.direction == "none"
    assert result.p_value is None
    assert result.lift is None
    assert result.sequential_ci is None
    body = result.to_dict()
    assert body.keys() >= CONTRACT_FIELDS
    assert json.loads(_dumps(body))["n"] == challenger.n


def test_compare_arms__not_a_proportion__raises_value_error():
    """Sums that cannot come from 0/1 values are a caller bug, not 'insufficient data'."""
    with pytest.raises(ValueError, match="not a proportion"):
        _one(ArmStats.proportion(500, 50), ArmStats(500, 50.0, 70.0))


def test_compare_arms__invalid_alpha__raises_value_error():
    """alpha outside (0, 1) is rejected."""
    with pytest.raises(ValueError, match="alpha"):
        _one(ArmStats.proportion(500, 50), ArmStats.proportion(500, 60), alpha=1.0)


def test_comparison_to_dict__contract_example__has_contract_fields():
    """to_dict has the CONTRACT.md field names, lists for intervals, and no NaN."""
    body = _one(ArmStats.proportion(9012, 910), ArmStats.proportion(988, 86)).to_dict()
    assert body.keys() >= CONTRACT_FIELDS
    assert isinstance(body["diff_ci"], list) and len(body["diff_ci"]) == 2
    assert isinstance(body["sequential_ci"], list)
    assert body["significant"] is False
    assert body["n"] == 988
    assert body["mean"] == pytest.approx(0.087, abs=5e-4)
    assert body["diff"] == pytest.approx(-0.014, abs=5e-4)
    assert body["p_value"] == pytest.approx(0.17, abs=0.01)
    assert json.loads(_dumps(body))["sequential_state"]["looks"] == 1


def test_arm_stats_to_dict__baseline__n_and_mean():
    """The baseline summary is {"n", "mean"}, JSON-safe even when empty."""
    assert ArmStats.proportion(9012, 910).to_dict() == {"n": 9012, "mean": 910 / 9012}
    assert _dumps(ArmStats(0, 0, 0).to_dict()) == '{"n": 0, "mean": null}'


# ---------------------------------------------------------------------- properties


@st.composite
def _mean_arms(draw):
    n = draw(st.integers(min_value=0, max_value=1_000_000))
    mean = draw(st.floats(min_value=-1e4, max_value=1e4, allow_nan=False))
    sd = draw(st.floats(min_value=0.0, max_value=1e4, allow_nan=False))
    total = n * mean
    squares = (n - 1) * sd * sd + (total * total / n if n else 0.0) if n else 0.0
    return ArmStats(n, total, max(squares, 0.0))


@st.composite
def _proportion_arms(draw):
    n = draw(st.integers(min_value=0, max_value=1_000_000))
    return ArmStats.proportion(n, draw(st.integers(min_value=0, max_value=n)))


def _check_comparison(result: Comparison, m: int) -> None:
    body = result.to_dict()
    _dumps(body)
    for key in ("mean", "diff", "lift", "p_value", "p_value_adjusted", "sequential_p"):
        assert body[key] is None or math.isfinite(body[key])
    for key in ("diff_ci", "lift_ci", "sequential_ci"):
        assert body[key] is None or body[key][0] <= body[key][1]
    if result.insufficient is not None:
        assert result.diff is None and result.significant is False
        return
    assert 0.0 <= result.p_value <= result.p_value_adjusted <= 1.0
    assert 0.0 <= result.sequential_p <= result.sequential_p_adjusted <= 1.0
    lo, hi = result.sequential_ci
    assert lo <= result.diff <= hi
    assert hi - lo >= result.diff_ci[1] - result.diff_ci[0]
    assert result.diff_ci[0] <= result.diff <= result.diff_ci[1]
    assert result.significant == (lo > 0 or hi < 0)
    if not math.isclose(result.sequential_p, 0.05 / m, rel_tol=1e-6):
        assert result.significant == (result.sequential_p < 0.05 / m)


@settings(max_examples=150, deadline=None)
@given(baseline=_mean_arms(), challengers=st.lists(_mean_arms(), min_size=1, max_size=3))
def test_compare_arms__random_mean_arms__outputs_finite_ordered_and_nested(baseline, challengers):
    """For any valid mean arms: finite-or-None outputs, ordered intervals, p in [0, 1], and
    the always-valid interval contains the estimate and is wider than the fixed one."""
    result = compare_arms(baseline, {f"c{i}": c for i, c in enumerate(challengers)}, LATENCY)
    for comparison in result.values():
        _check_comparison(comparison, len(challengers))


@settings(max_examples=150, deadline=None)
@given(
    baseline=_proportion_arms(), challengers=st.lists(_proportion_arms(), min_size=1, max_size=3)
)
def test_compare_arms__random_proportion_arms__outputs_finite_ordered_and_nested(
    baseline, challengers
):
    """The same properties hold for proportion metrics."""
    result = compare_arms(baseline, {f"c{i}": c for i, c in enumerate(challengers)}, CONVERSION)
    for comparison in result.values():
        _check_comparison(comparison, len(challengers))


def test_clearly_worse_rate__model_failing_everywhere_vs_never__worse():
    from experiments.stats import clearly_worse_rate

    assert clearly_worse_rate(
        ArmStats.proportion(373, 0), ArmStats.proportion(130, 130), higher_is_better=False
    )


def test_clearly_worse_rate__few_failures__not_beyond_doubt():
    from experiments.stats import clearly_worse_rate

    assert not clearly_worse_rate(
        ArmStats.proportion(373, 0), ArmStats.proportion(130, 3), higher_is_better=False
    )


def test_clearly_worse_rate__within_margin__not_worse():
    from experiments.stats import clearly_worse_rate

    assert not clearly_worse_rate(
        ArmStats.proportion(1000, 0),
        ArmStats.proportion(1000, 30),
        higher_is_better=False,
        margin=0.05,
    )


def test_clearly_worse_rate__higher_is_better_and_nobody_converts__worse():
    from experiments.stats import clearly_worse_rate

    assert clearly_worse_rate(
        ArmStats.proportion(500, 250), ArmStats.proportion(500, 0), higher_is_better=True
    )


@given(
    n=st.integers(min_value=1, max_value=10**7),
    share=st.floats(min_value=0, max_value=1),
    confidence=st.sampled_from([0.9, 0.95, 0.999, 0.99999]),
)
def test_wilson_interval__equals_scipy(n, share, confidence):
    successes = round(n * share)
    expected = sps.binomtest(successes, n).proportion_ci(
        confidence_level=confidence, method="wilson"
    )
    low, high = stats.wilson_interval(successes, n, confidence)
    assert low == pytest.approx(expected.low, abs=1e-12)
    assert high == pytest.approx(expected.high, abs=1e-12)


def test_compare_arms__alpha_shared_by_metrics__each_interval_at_alpha_over_m_times_k():
    baseline = ArmStats.proportion(4000, 400)
    challengers = {"a": ArmStats.proportion(4000, 460), "b": ArmStats.proportion(4000, 400)}
    spec = MetricSpec("conversion", "proportion")
    alone = compare_arms(baseline, challengers, spec, planned_sample=8000)["a"]
    shared = compare_arms(baseline, challengers, spec, planned_sample=8000, metrics=3)["a"]

    assert shared.state.alpha == pytest.approx(0.05 / 6)
    assert alone.state.alpha == pytest.approx(0.05 / 2)
    assert shared.sequential_ci[0] < alone.sequential_ci[0]  # wider: a smaller level each
    assert shared.sequential_p_adjusted == pytest.approx(min(1.0, 6 * shared.sequential_p))
    assert shared.p_value == alone.p_value  # the fixed-horizon figures are for people
    with pytest.raises(ValueError, match="metrics"):
        compare_arms(baseline, challengers, spec, metrics=0)
