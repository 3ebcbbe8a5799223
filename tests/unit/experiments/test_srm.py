"""Pure tests of experiments/srm.py: the sequential (anytime-valid) sample-ratio-mismatch check."""

import ast
import itertools
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

from experiments import srm, stats
from experiments.srm import (
    DIRICHLET_CONCENTRATION,
    SrmState,
    log_bayes_factor,
    srm_by_slice_sequential,
    srm_sequential_p_value,
    srm_state_update,
    states_from_dict,
)


def direct_log_bf(counts, shares, concentration=DIRICHLET_CONCENTRATION):
    """The Bayes factor of the module docstring, term by term with math.lgamma."""
    total = sum(shares)
    p = [s / total for s in shares]
    alpha = [concentration * s for s in p]
    n = sum(counts)
    value = math.lgamma(sum(alpha)) - math.lgamma(sum(alpha) + n)
    for a, x, s in zip(alpha, counts, p, strict=True):
        value += math.lgamma(a + x) - math.lgamma(a) - x * math.log(s)
    return value


def polya_log_bf(sequence, shares, concentration):
    """The same Bayes factor built device by device: Pólya-urn predictive over p, in order."""
    total = sum(shares)
    alpha = [concentration * s / total for s in shares]
    seen = [0] * len(shares)
    value = 0.0
    for i, arm in enumerate(sequence):
        predictive = (alpha[arm] + seen[arm]) / (concentration + i)
        value += math.log(predictive) - math.log(shares[arm] / total)
        seen[arm] += 1
    return value


counts_strategy = st.lists(st.integers(0, 5000), min_size=2, max_size=5)


def shares_for(k):
    return st.lists(st.floats(0.01, 1.0), min_size=k, max_size=k)


# ------------------------------------------------------------------------ purity


def test_module__imports__numpy_scipy_and_stats_only():
    """No Django and no Django app: the module stays importable and testable without a database."""
    tree = ast.parse(Path(srm.__file__).read_text())
    roots, modules = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
            modules.add(node.module)
    allowed = {"__future__", "math", "collections", "dataclasses", "typing", "numpy", "scipy"}
    assert roots - allowed == {"experiments"}
    assert {m for m in modules if m.startswith("experiments")} == {"experiments.stats"}


# ------------------------------------------------------------------- the formula


@pytest.mark.parametrize(
    ("counts", "shares", "concentration"),
    [
        ([3, 1], [0.5, 0.5], 2.0),
        ([10, 0], [0.5, 0.5], 1000.0),
        ([7, 2, 5], [0.2, 0.3, 0.5], 10.0),
        ([5000, 5600], [0.5, 0.5], 1000.0),
        ([950, 50], [95, 5], 1000.0),
        ([123, 456, 789, 10], [1, 2, 3, 4], 37.5),
    ],
)
def test_log_bayes_factor__small_cases__match_direct_lgamma_product(counts, shares, concentration):
    """The vectorised formula equals the term-by-term one; p = min(1, 1/BF)."""
    expected = direct_log_bf(counts, shares, concentration)
    p = np.asarray(shares, dtype=float) / sum(shares)
    assert float(log_bayes_factor(counts, p, concentration)) == pytest.approx(expected, abs=1e-9)
    assert srm_sequential_p_value(counts, shares, concentration=concentration) == pytest.approx(
        min(1.0, math.exp(-expected)), rel=1e-9
    )


@pytest.mark.parametrize(
    ("sequence", "shares", "concentration"),
    [
        ([0, 0, 1, 0, 1, 1, 1], [0.5, 0.5], 2.0),
        ([2, 0, 2, 2, 1, 2, 0, 2, 2, 2], [0.2, 0.3, 0.5], 4.0),
        ([1] * 12 + [0] * 3, [0.9, 0.1], 1000.0),
    ],
)
def test_log_bayes_factor__any_order__equals_polya_urn_product(sequence, shares, concentration):
    """Derivation check: the closed form is the product of the devices' predictive ratios.

    The Dirichlet-multinomial marginal of the sequence over its likelihood under p, built one
    device at a time, gives the same number in any order of the devices.
    """
    counts = [sequence.count(a) for a in range(len(shares))]
    closed = direct_log_bf(counts, shares, concentration)
    assert polya_log_bf(sequence, shares, concentration) == pytest.approx(closed, abs=1e-9)
    assert polya_log_bf(sorted(sequence), shares, concentration) == pytest.approx(closed, abs=1e-9)


def test_p_value__exact_small_values():
    """With alpha = (1, 1) at 50/50, BF(1 device) = 1 and BF(2 in one arm) = (1/3)/(1/4) = 4/3."""
    assert srm_sequential_p_value([1, 0], [0.5, 0.5], concentration=2.0) == pytest.approx(1.0)
    assert srm_sequential_p_value([2, 0], [0.5, 0.5], concentration=2.0) == pytest.approx(
        float(Fraction(3, 4)), rel=1e-12
    )
    # (3, 0): Γ(2)/Γ(5) · Γ(4)/Γ(1) / (1/8) = (6/24)·8 = 2.
    assert srm_sequential_p_value([3, 0], [0.5, 0.5], concentration=2.0) == pytest.approx(0.5)


def test_log_bayes_factor__batch__equals_row_by_row():
    counts = np.array([[[10, 20], [0, 0]], [[500, 480], [7, 1]]])
    shares = np.array([0.4, 0.6])
    batch = log_bayes_factor(counts, shares)
    assert batch.shape == (2, 2)
    for index in itertools.product(range(2), range(2)):
        assert batch[index] == pytest.approx(direct_log_bf(list(counts[index]), [0.4, 0.6]))


# ------------------------------------------------------------------- edge cases


def test_p_value__no_devices__none():
    assert srm_sequential_p_value([0, 0], [0.5, 0.5]) is None


def test_p_value__device_in_zero_share_arm__zero():
    assert srm_sequential_p_value([100, 100, 1], [0.5, 0.5, 0.0]) == 0.0


def test_p_value__fewer_than_two_positive_shares__none():
    assert srm_sequential_p_value([40, 0], [1.0, 0.0]) is None


def test_p_value__zero_share_arm_without_devices__ignored():
    assert srm_sequential_p_value([480, 520, 0], [0.5, 0.5, 0.0]) == pytest.approx(
        srm_sequential_p_value([480, 520], [0.5, 0.5])
    )


def test_p_value__balanced_counts__one():
    """Counts exactly on the shares are evidence for the null: BF < 1, p = 1."""
    assert srm_sequential_p_value([5000, 5000], [0.5, 0.5]) == 1.0


@pytest.mark.parametrize(
    ("counts", "shares"),
    [
        ([1], [1.0]),
        ([1, 2], [0.5, 0.3, 0.2]),
        ([-1, 2], [0.5, 0.5]),
        ([1.5, 2], [0.5, 0.5]),
        ([1, float("nan")], [0.5, 0.5]),
        ([1, 2], [0.0, 0.0]),
        ([1, 2], [-0.5, 1.5]),
        ([1, 2], [0.5, float("inf")]),
    ],
)
def test_p_value__invalid_arguments__raise(counts, shares):
    with pytest.raises(ValueError):
        srm_sequential_p_value(counts, shares)


@pytest.mark.parametrize("concentration", [0, -1.0, float("nan"), float("inf"), "1000"])
def test_p_value__invalid_concentration__raises(concentration):
    with pytest.raises(ValueError):
        srm_sequential_p_value([1, 2], [0.5, 0.5], concentration=concentration)


# ------------------------------------------------------------------- properties


@settings(max_examples=200, deadline=None)
@given(counts=counts_strategy, data=st.data())
def test_p_value__any_counts__in_unit_interval(counts, data):
    shares = data.draw(shares_for(len(counts)))
    p = srm_sequential_p_value(counts, shares)
    if sum(counts) == 0:
        assert p is None
    else:
        assert p is not None and 0.0 <= p <= 1.0


@settings(max_examples=200, deadline=None)
@given(counts=counts_strategy, data=st.data())
def test_p_value__arms_permuted__unchanged(counts, data):
    shares = data.draw(shares_for(len(counts)))
    order = data.draw(st.permutations(range(len(counts))))
    p = srm_sequential_p_value(counts, shares)
    q = srm_sequential_p_value([counts[i] for i in order], [shares[i] for i in order])
    if p is None:
        assert q is None
    else:
        assert q == pytest.approx(p, rel=1e-9, abs=1e-300)


@settings(max_examples=100, deadline=None)
@given(counts=counts_strategy, data=st.data(), scale=st.floats(0.01, 100.0))
def test_p_value__shares_scaled__unchanged(counts, data, scale):
    shares = data.draw(shares_for(len(counts)))
    p = srm_sequential_p_value(counts, shares)
    q = srm_sequential_p_value(counts, [s * scale for s in shares])
    assert (p is None and q is None) or q == pytest.approx(p, rel=1e-9, abs=1e-300)


@settings(max_examples=100, deadline=None)
@given(
    increments=st.lists(
        st.tuples(st.integers(0, 300), st.integers(0, 300)), min_size=1, max_size=25
    ),
    share=st.floats(0.05, 0.95),
)
def test_state_update__cumulative_looks__running_minimum(increments, share):
    """The stored p is non-increasing, equals the minimum of the looks' p, and counts looks."""
    shares = [share, 1.0 - share]
    counts = np.cumsum(np.array(increments), axis=0)
    state, seen = None, []
    for look in counts:
        previous = state
        state = srm_state_update(list(look), shares, state)
        p = srm_sequential_p_value(list(look), shares)
        if p is None:
            assert state is previous
            continue
        seen.append(p)
        assert state.p_value == pytest.approx(min(seen))
        assert state.looks == len(seen)
        if previous is not None:
            assert state.p_value <= previous.p_value


# ------------------------------------------------------------------------ states


def test_state_update__shares_change__restarts():
    state = srm_state_update([5000, 5600], [0.5, 0.5])
    assert state.p_value < 1e-4
    after = srm_state_update([100, 102], [0.1, 0.9], state)
    assert after.looks == 1
    assert after.shares == (0.1, 0.9)
    assert after.p_value == pytest.approx(srm_sequential_p_value([100, 102], [0.1, 0.9]))


def test_state_update__same_shares_unnormalised__continues():
    state = srm_state_update([5000, 5600], [0.5, 0.5])
    after = srm_state_update([5100, 5650], [50, 50], state)
    assert after.looks == 2
    assert after.p_value == state.p_value


def test_state_update__epoch_or_concentration_change__restarts():
    state = srm_state_update([5000, 5600], [0.5, 0.5], epoch="stage 1")
    assert srm_state_update([10, 9], [0.5, 0.5], state, epoch="stage 2").looks == 1
    other = srm_state_update([10, 9], [0.5, 0.5], state, epoch="stage 1", concentration=100.0)
    assert other.looks == 1
    assert other.concentration == 100.0


def test_state_update__no_devices__keeps_matching_state_only():
    state = srm_state_update([30, 20], [0.5, 0.5], epoch="s")
    assert srm_state_update([0, 0], [0.5, 0.5], state, epoch="s") is state
    assert srm_state_update([0, 0], [0.5, 0.5], state, epoch="t") is None
    assert srm_state_update([0, 0], [0.5, 0.5]) is None


def test_state__to_dict__json_round_trip():
    state = SrmState(shares=(0.25, 0.75, 0.0), p_value=0.0123, looks=7, epoch="2025-01-01T00:00")
    data = json.loads(json.dumps(state.to_dict(), allow_nan=False))
    assert SrmState.from_dict(data) == state
    assert SrmState.from_dict({"shares": [0.5, 0.5], "p_value": 1.0}) == SrmState(
        shares=(0.5, 0.5), p_value=1.0
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shares": (1.0,), "p_value": 0.5},
        {"shares": (0.5, 0.6), "p_value": 0.5},
        {"shares": (0.5, 0.5), "p_value": 1.5},
        {"shares": (0.5, 0.5), "p_value": float("nan")},
        {"shares": (0.5, 0.5), "p_value": 0.5, "looks": 0},
        {"shares": (0.5, 0.5), "p_value": 0.5, "concentration": 0.0},
        {"shares": (1.5, -0.5), "p_value": 0.5},
    ],
)
def test_state__invalid__raises(kwargs):
    with pytest.raises(ValueError):
        SrmState(**kwargs)


# ---------------------------------------------------------------------- slices


def test_by_slice__clear_mismatch__found():
    """5 000 vs 5 600 at 50/50 (a 5.7 % relative deviation) is a finding at the first look."""
    result = srm_by_slice_sequential({"all devices": ([5000, 5600], [0.5, 0.5])})
    [finding] = result.findings
    assert finding.slice == "all devices"
    assert finding.p_value < stats.SRM_P_VALUE_THRESHOLD
    assert finding.counts == (5000, 5600)
    assert finding.observed_shares == pytest.approx((5000 / 10600, 5600 / 10600))
    assert finding.max_relative_deviation == pytest.approx(abs(5600 / 10600 - 0.5) / 0.5)
    assert result.p_value("all devices") == finding.p_value
    json.dumps(finding.to_dict(), allow_nan=False)


def test_by_slice__zero_share_arm_with_devices__finding():
    result = srm_by_slice_sequential({"all devices": ([500, 480, 3], [0.5, 0.5, 0.0])})
    [finding] = result.findings
    assert finding.p_value == 0.0
    assert finding.max_relative_deviation == 1.0


def test_by_slice__healthy_counts__no_finding():
    slices = {"all devices": ([5040, 4960], [0.5, 0.5]), "SDK 1.4": ([2010, 1990], [0.5, 0.5])}
    result = srm_by_slice_sequential(slices)
    assert result.findings == []
    assert set(result.states) == set(slices)
    assert result.per_slice_threshold == pytest.approx(stats.SRM_P_VALUE_THRESHOLD / 2)


def test_by_slice__tiny_deviation_with_many_devices__not_a_finding():
    """Significant but under 1 % relative: the practical-significance floor holds it back."""
    counts = [4_980_000, 5_020_000]  # 0.4 % relative
    result = srm_by_slice_sequential({"all devices": (counts, [0.5, 0.5])})
    assert result.p_value("all devices") < 1e-6
    assert result.findings == []


def test_by_slice__running_minimum__finding_persists_while_deviation_lasts():
    first = srm_by_slice_sequential({"all devices": ([5000, 5600], [0.5, 0.5])}, epoch="s")
    # Later counts alone are unremarkable, but the running minimum remembers the evidence.
    later = srm_by_slice_sequential(
        {"all devices": ([5300, 5600], [0.5, 0.5])}, first.states, epoch="s"
    )
    assert srm_sequential_p_value([5300, 5600], [0.5, 0.5]) > stats.SRM_P_VALUE_THRESHOLD
    assert later.p_value("all devices") == first.p_value("all devices")
    assert [f.slice for f in later.findings] == ["all devices"]


def test_by_slice__slice_without_data_now__keeps_state_and_counts_in_m():
    first = srm_by_slice_sequential(
        {
            "all devices": ([600, 640], [0.5, 0.5]),
            "SDK 1": ([500, 520], [0.5, 0.5]),
            "SDK 2": ([100, 120], [0.5, 0.5]),
        },
        epoch="s",
    )
    later = srm_by_slice_sequential(
        {"all devices": ([700, 700], [0.5, 0.5]), "SDK 1": ([700, 700], [0.5, 0.5])},
        states_from_dict(first.states_to_dict()),
        epoch="s",
    )
    assert set(later.states) == {"all devices", "SDK 1", "SDK 2"}
    assert later.states["SDK 2"] == first.states["SDK 2"]
    assert later.per_slice_threshold == pytest.approx(stats.SRM_P_VALUE_THRESHOLD / 3)


def test_by_slice__new_stage__drops_old_states():
    first = srm_by_slice_sequential(
        {"all devices": ([600, 640], [0.5, 0.5]), "SDK 2": ([100, 120], [0.5, 0.5])}, epoch="1"
    )
    # A new stage: other shares (SDK 2 has no device yet), or the same shares and a new epoch.
    changed = srm_by_slice_sequential(
        {"all devices": ([90, 10], [0.9, 0.1])}, first.states, epoch="1"
    )
    assert set(changed.states) == {"all devices"}
    assert changed.states["all devices"].looks == 1
    new_epoch = srm_by_slice_sequential(
        {"all devices": ([60, 64], [0.5, 0.5])}, first.states, epoch="2"
    )
    assert set(new_epoch.states) == {"all devices"}
    assert new_epoch.states["all devices"].looks == 1


def test_by_slice__findings__keep_slice_order_and_bonferroni():
    shares = [0.5, 0.5]
    slices = {
        "all devices": ([10000, 11000], shares),
        "SDK 2": ([4000, 4500], shares),
        "SDK 1": ([6000, 6100], shares),
    }
    result = srm_by_slice_sequential(slices)
    assert [f.slice for f in result.findings] == ["all devices", "SDK 2"]
    for finding in result.findings:
        assert finding.p_value < stats.SRM_P_VALUE_THRESHOLD / 3


def test_by_slice__invalid_threshold__raises():
    with pytest.raises(ValueError):
        srm_by_slice_sequential({}, threshold=0.0)


# ------------------------------------------------------------------ simulation


def simulate(runs, looks, per_look, sdk_shares, rng):
    """Cumulative A/A counts at 50/50: (runs, looks, 1 + sdks, 2), slice 0 = all devices."""
    rates = per_look * np.asarray(sdk_shares)[:, None] * np.array([0.5, 0.5])
    new = rng.poisson(rates, size=(runs, looks, *rates.shape))
    by_sdk = new.cumsum(axis=1)
    return np.concatenate([by_sdk.sum(axis=2, keepdims=True), by_sdk], axis=2)


def sequential_findings(counts, shares):
    """Per (run, look), whether srm_by_slice_sequential finds an SRM: the same rule, vectorised."""
    n = counts.sum(axis=-1)
    log_bf = log_bayes_factor(counts, shares)
    p = np.where(n > 0, np.minimum(1.0, np.exp(-np.maximum(log_bf, 0.0))), 1.0)
    running = np.minimum.accumulate(p, axis=1)
    has_state = np.maximum.accumulate(n > 0, axis=1)
    per_slice = stats.SRM_P_VALUE_THRESHOLD / np.maximum(1, has_state.sum(axis=-1))
    deviation = np.max(np.abs(counts / np.maximum(n, 1)[..., None] - shares) / shares, axis=-1)
    found = (n > 0) & (running < per_slice[..., None])
    return (found & (deviation > stats.SRM_MIN_RELATIVE_DEVIATION)).any(axis=-1), running


def fixed_horizon_findings(counts, shares):
    """Per (run, look), whether stats.srm_by_slice finds an SRM (chi-square at every look)."""
    n = counts.sum(axis=-1)
    expected = n[..., None] * shares
    testable = (n > 0) & (expected.min(axis=-1) >= stats.SRM_MIN_EXPECTED_COUNT)
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.where(testable, np.sum((counts - expected) ** 2 / expected, axis=-1), 0.0)
    p = special.chdtrc(shares.size - 1, chi2)
    per_slice = stats.SRM_P_VALUE_THRESHOLD / np.maximum(1, testable.sum(axis=-1))
    deviation = np.max(np.abs(counts / np.maximum(n, 1)[..., None] - shares) / shares, axis=-1)
    found = testable & (p < per_slice[..., None])
    return (found & (deviation > stats.SRM_MIN_RELATIVE_DEVIATION)).any(axis=-1)


def slices_of(look, shares):
    names = ["all devices", *(f"SDK {i}" for i in range(1, len(look)))]
    return {name: ([int(c) for c in row], shares) for name, row in zip(names, look, strict=True)}


def test_simulation__a_a_with_many_looks__sequential_false_alerts_bounded_fixed_horizon_not():
    """Seeded A/A: 500 runs x 600 looks, ~10 devices a look over two SDK versions (70/30).

    The sequential check keeps its false alerts under the 0.1 % of Ville's inequality (with
    room for the simulation's noise); the old check, chi-square at 0.001 at every look, is
    measurably higher in the very same runs, so the simulation can tell the two apart.
    """
    rng = np.random.default_rng(20240806)
    shares = np.array([0.5, 0.5])
    counts = simulate(500, 600, 10, [0.7, 0.3], rng)
    sequential, running = sequential_findings(counts, shares)
    fixed = fixed_horizon_findings(counts, shares)
    sequential_rate = sequential.any(axis=1).mean()
    fixed_rate = fixed.any(axis=1).mean()
    assert sequential_rate <= 0.004
    assert fixed_rate >= 0.01
    assert fixed_rate >= sequential_rate + 0.008

    # The vectorised rules are the modules': replay runs look by look through the real API,
    # the first run and the first run the old check alerted in.
    replayed = [0, int(np.flatnonzero(fixed.any(axis=1))[0])]
    for r in replayed:
        states = None
        for t in range(counts.shape[1]):
            slices = slices_of(counts[r, t], [0.5, 0.5])
            result = srm_by_slice_sequential(slices, states)
            states = result.states
            assert result.p_value("all devices") == pytest.approx(running[r, t, 0], rel=1e-9)
            assert bool(result.findings) == bool(sequential[r, t])
            assert bool(stats.srm_by_slice(slices)) == bool(fixed[r, t])


def test_simulation__real_mismatch__found_by_sequential_check():
    """One arm losing 5 % of its devices (100 devices a look) is mostly found within 500 looks.

    Its observed share is then 2.6 % (relative) below its share: about 25 000 devices to
    detect, against about 49 000 after 500 looks.
    """
    rng = np.random.default_rng(7)
    rates = 100 * np.array([0.5, 0.5 * 0.95])
    counts = rng.poisson(rates, size=(100, 500, 2)).cumsum(axis=1)[:, :, None, :]
    found, _ = sequential_findings(counts, np.array([0.5, 0.5]))
    assert found.any(axis=1).mean() >= 0.9
