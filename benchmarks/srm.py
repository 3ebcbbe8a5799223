"""
Simulation of the sample-ratio-mismatch check over a week of 5-minute looks.

    .venv/bin/python benchmarks/srm.py [--runs 2000] [--mismatch-runs 500] [--looks 2016]
                                       [--devices-per-day 50000] [--seed 8]

Pure numpy/scipy: no database, no Django. For each scenario it simulates --runs rollouts (one
stage each) that the judge looks at every 5 minutes for a week (--looks 2016):

    1  devices are first exposed at Poisson rate --devices-per-day with a daily cycle (from
       0.4x at night to 1.6x in the afternoon), spread over SDK versions whose traffic shares
       differ (55/30/10/5 %, or one SDK version, or a new version released on day 3 that takes
       a growing share), and over the arms by the configured shares; a mismatch scenario loses
       a fraction (2 % or 5 %, "relative deficit") of one arm's devices, in every SDK version
       or in one;
    2  at every look it applies, to the cumulative counts of "all devices" and of each SDK
       version, the judge's two checks: the sequential check (`experiments.srm`, running minimum
       of the anytime-valid p-value, Bonferroni over the slices with a state) and the old
       fixed-horizon check (`experiments.stats.srm_by_slice`: chi-square at p < 0.001 divided
       by the testable slices, at every look). Both need an arm more than 1 % relative off.

It vectorises the checks across runs with the module's own `log_bayes_factor`, and replays the
first run of every scenario look by look through `srm_by_slice_sequential` and
`stats.srm_by_slice` to check that the vectorised version finds the same looks (--verify).

It prints, per scenario: the share of runs with at least one alert in the week (in A/A
scenarios, the false alarms, with a 95 % upper bound), and for mismatches the median look of
the first alert (and in hours). No timing targets: the figures are statistical.
"""

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import special
from scipy import stats as sps

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments import srm, stats  # noqa: E402

LOOKS_PER_DAY = 288  # every 5 minutes
SDK_SHARES = (0.55, 0.30, 0.10, 0.05)


@dataclass(frozen=True)
class Scenario:
    name: str
    shares: tuple[float, ...]
    sdk_shares: tuple[float, ...] = SDK_SHARES
    #: Relative deficit of the last arm's devices (0: A/A).
    deficit: float = 0.0
    #: The SDK versions (indices) the deficit applies to; None: all.
    deficit_sdks: tuple[int, ...] | None = None
    #: A new SDK version (the last one) released on this day, taking a growing share.
    release_day: float | None = None
    notes: str = field(default="", compare=False)

    @property
    def truth(self) -> str:
        if not self.deficit:
            return "A/A"
        where = (
            ""
            if self.deficit_sdks is None
            else " in SDK " + ",".join(f"#{i + 1}" for i in self.deficit_sdks)
        )
        share = self.shares[-1] / sum(self.shares)
        # The arm's observed share, relative to its configured share, where the loss applies.
        off = (1 - self.deficit) / (1 - share * self.deficit) - 1
        return f"-{self.deficit:.0%} arm {len(self.shares)}{where} (share {off:+.1%})"


AA = [
    Scenario("50/50, 4 SDKs", (0.5, 0.5)),
    Scenario("50/50, 1 SDK", (0.5, 0.5), sdk_shares=(1.0,)),
    Scenario("50/50, SDK release day 3", (0.5, 0.5), sdk_shares=(*SDK_SHARES, 0.0), release_day=3),
    Scenario("95/5, 4 SDKs", (0.95, 0.05)),
    Scenario("40/30/30, 4 SDKs", (0.4, 0.3, 0.3)),
]
MISMATCH = [
    Scenario("50/50, 4 SDKs", (0.5, 0.5), deficit=0.02),
    Scenario("50/50, 4 SDKs", (0.5, 0.5), deficit=0.05),
    Scenario("50/50, 4 SDKs", (0.5, 0.5), deficit=0.20, deficit_sdks=(2,)),
    Scenario("95/5, 4 SDKs", (0.95, 0.05), deficit=0.02),
    Scenario("95/5, 4 SDKs", (0.95, 0.05), deficit=0.05),
    Scenario("40/30/30, 4 SDKs", (0.4, 0.3, 0.3), deficit=0.02),
    Scenario("40/30/30, 4 SDKs", (0.4, 0.3, 0.3), deficit=0.05),
]


# ----------------------------------------------------------------------- simulation


def arrival_rates(scenario: Scenario, looks: int, devices_per_day: float) -> np.ndarray:
    """Expected new devices per look, SDK version and arm: shape (looks, sdks, arms)."""
    t = np.arange(looks) / LOOKS_PER_DAY  # days
    daily = 1.0 + 0.6 * np.sin(2 * np.pi * (t - 0.375))  # 0.4x around 3 am, 1.6x at 3 pm
    per_look = devices_per_day / LOOKS_PER_DAY * daily
    sdk = np.tile(np.asarray(scenario.sdk_shares, dtype=float), (looks, 1))
    if scenario.release_day is not None:
        # The new version's share grows to 40 % over two days from its release.
        adoption = np.clip((t - scenario.release_day) / 2.0, 0.0, 1.0) * 0.4
        sdk[:, :-1] *= (1.0 - adoption)[:, None] / sdk[:, :-1].sum(axis=1, keepdims=True)
        sdk[:, -1] = adoption
    shares = np.asarray(scenario.shares, dtype=float)
    rates = per_look[:, None, None] * sdk[:, :, None] * shares[None, None, :]
    if scenario.deficit:
        affected = slice(None) if scenario.deficit_sdks is None else list(scenario.deficit_sdks)
        rates[:, affected, -1] *= 1.0 - scenario.deficit
    return rates


def simulate_counts(rates: np.ndarray, runs: int, rng: np.random.Generator) -> np.ndarray:
    """Cumulative counts, shape (runs, looks, 1 + sdks, arms); slice 0 is "all devices"."""
    new = rng.poisson(rates[None], size=(runs, *rates.shape)).astype(np.int32)
    by_sdk = np.cumsum(new, axis=1, dtype=np.int32)
    return np.concatenate([by_sdk.sum(axis=2, keepdims=True), by_sdk], axis=2)


def deviations(counts: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Max relative deviation of the observed shares per (run, look, slice); 0 with no data."""
    n = counts.sum(axis=-1, keepdims=True)
    observed = counts / np.maximum(n, 1)
    dev = np.max(np.abs(observed - shares) / shares, axis=-1)
    return np.where(n[..., 0] > 0, dev, 0.0)


def sequential_alerts(counts: np.ndarray, shares: np.ndarray, dev: np.ndarray) -> np.ndarray:
    """Whether the sequential check finds an SRM at each (run, look): shape (runs, looks)."""
    n = counts.sum(axis=-1)
    log_bf = srm.log_bayes_factor(counts, shares, srm.DIRICHLET_CONCENTRATION)
    p = np.where(n > 0, np.minimum(1.0, np.exp(-np.maximum(log_bf, 0.0))), 1.0)
    running = np.minimum.accumulate(p, axis=1)
    # Counts are cumulative: a slice that had devices keeps its state for the rest of the stage.
    has_state = np.maximum.accumulate(n > 0, axis=1)
    m = np.maximum(1, has_state.sum(axis=-1))
    per_slice = stats.SRM_P_VALUE_THRESHOLD / m
    finding = (
        has_state
        & (running < per_slice[..., None])
        & (dev > stats.SRM_MIN_RELATIVE_DEVIATION)
        & (n > 0)
    )
    return finding.any(axis=-1)


def fixed_horizon_alerts(counts: np.ndarray, shares: np.ndarray, dev: np.ndarray) -> np.ndarray:
    """Whether the old check (`stats.srm_by_slice` at every look) finds an SRM: (runs, looks)."""
    n = counts.sum(axis=-1)
    expected = n[..., None] * shares
    testable = (n > 0) & (expected.min(axis=-1) >= stats.SRM_MIN_EXPECTED_COUNT)
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.sum((counts - expected) ** 2 / expected, axis=-1)
    chi2 = np.where(testable, chi2, 0.0)
    # p < 0.001 / m needs chi2 above the 0.001 critical value: compute p only there (fast).
    df = shares.size - 1
    p = np.ones_like(chi2)
    candidates = chi2 > 0.999 * special.chdtri(df, stats.SRM_P_VALUE_THRESHOLD)
    p[candidates] = special.chdtrc(df, chi2[candidates])
    per_slice = stats.SRM_P_VALUE_THRESHOLD / np.maximum(1, testable.sum(axis=-1))
    finding = testable & (p < per_slice[..., None]) & (dev > stats.SRM_MIN_RELATIVE_DEVIATION)
    return finding.any(axis=-1)


def replay(counts: np.ndarray, shares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One run's per-look findings through the real functions: (sequential, fixed horizon)."""
    names = ["all devices", *(f"SDK {i + 1}" for i in range(counts.shape[1] - 1))]
    share_list = [float(s) for s in shares]
    states: dict = {}
    sequential, fixed = [], []
    for look in counts:
        # The judge lists the SDK versions that have devices in the stage.
        slices = {
            name: ([int(c) for c in row], share_list)
            for name, row in zip(names, look, strict=True)
            if name == "all devices" or row.sum() > 0
        }
        result = srm.srm_by_slice_sequential(slices, states, epoch="stage")
        states = srm.states_from_dict(result.states_to_dict())  # through JSON, as persisted
        sequential.append(bool(result.findings))
        fixed.append(bool(stats.srm_by_slice(slices)))
    return np.array(sequential), np.array(fixed)


@dataclass
class Outcome:
    runs: int = 0
    first_sequential: list = field(default_factory=list)  # first alert look per run, or -1
    first_fixed: list = field(default_factory=list)
    verified: bool | None = None


def first_alert(alerts: np.ndarray) -> np.ndarray:
    """The first look (1-based) with an alert per run, -1 for none."""
    any_alert = alerts.any(axis=1)
    return np.where(any_alert, alerts.argmax(axis=1) + 1, -1)


def run_scenario(scenario: Scenario, args, runs: int, rng: np.random.Generator) -> Outcome:
    rates = arrival_rates(scenario, args.looks, args.devices_per_day)
    shares = np.asarray(scenario.shares, dtype=float)
    shares = shares / shares.sum()  # as the checks normalise them
    outcome = Outcome(runs=runs)
    done = 0
    while done < runs:
        size = min(args.chunk, runs - done)
        counts = simulate_counts(rates, size, rng)
        dev = deviations(counts, shares)
        seq = sequential_alerts(counts, shares, dev)
        fixed = fixed_horizon_alerts(counts, shares, dev)
        if done == 0 and args.verify:
            ok = True
            for r in range(min(args.verify, size)):
                real_seq, real_fixed = replay(counts[r], shares)
                ok &= bool(
                    np.array_equal(real_seq, seq[r]) and np.array_equal(real_fixed, fixed[r])
                )
            outcome.verified = ok
        outcome.first_sequential.extend(first_alert(seq).tolist())
        outcome.first_fixed.extend(first_alert(fixed).tolist())
        done += size
    return outcome


# --------------------------------------------------------------------------- report


def rate(first: list) -> tuple[int, float]:
    hits = sum(1 for f in first if f > 0)
    return hits, hits / len(first)


def upper95(hits: int, runs: int) -> float:
    """One-sided 95 % Clopper-Pearson upper bound of a rate."""
    return 1.0 if hits == runs else float(sps.beta.ppf(0.95, hits + 1, runs - hits))


def median_look(first: list) -> str:
    looks = [f for f in first if f > 0]
    if not looks:
        return "-"
    median = float(np.median(looks))
    return f"{median:.0f} ({median * 5 / 60:.1f} h)"


def verified(outcome: Outcome) -> str:
    return {None: "", True: "ok", False: "DIFFERS"}[outcome.verified]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0].strip())
    parser.add_argument("--runs", type=int, default=2000, help="runs per A/A scenario (2000)")
    parser.add_argument(
        "--mismatch-runs", type=int, default=500, help="runs per mismatch scenario (500)"
    )
    parser.add_argument("--looks", type=int, default=7 * LOOKS_PER_DAY, help="looks (2016)")
    parser.add_argument(
        "--devices-per-day", type=float, default=50_000, help="new devices per day (50000)"
    )
    parser.add_argument("--chunk", type=int, default=100, help="runs simulated at once (100)")
    parser.add_argument(
        "--verify", type=int, default=1, help="runs replayed through the real functions (1)"
    )
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()
    if min(args.runs, args.mismatch_runs, args.looks, args.chunk) < 1 or args.verify < 0:
        parser.error("--runs, --mismatch-runs, --looks and --chunk must be at least 1")
    if args.devices_per_day <= 0:
        parser.error("--devices-per-day must be > 0")

    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    print(
        f"{args.looks} looks every 5 minutes ({args.looks / LOOKS_PER_DAY:.1f} days), "
        f"{args.devices_per_day:,.0f} new devices a day (daily cycle 0.4x-1.6x), "
        f"SDK traffic {'/'.join(f'{s:.0%}' for s in SDK_SHARES)} unless said otherwise"
    )
    print(
        f"sequential: Dirichlet-multinomial mixture, concentration "
        f"{srm.DIRICHLET_CONCENTRATION:g}, running-min p < {stats.SRM_P_VALUE_THRESHOLD} / slices; "
        f"fixed horizon: chi-square < {stats.SRM_P_VALUE_THRESHOLD} / testable slices at every "
        f"look; both need > {stats.SRM_MIN_RELATIVE_DEVIATION:.0%} relative deviation"
    )
    print()
    header = (
        f"{'scenario':<26} {'truth':<34} {'runs':>5}  "
        f"{'sequential: alerts (95% ub)':<28} {'first alert, look':<18}  "
        f"{'fixed horizon: alerts':<22} {'first alert, look':<18} {'replay':<6}"
    )
    print(header)
    print("-" * len(header))
    for scenario in AA + MISMATCH:
        runs = args.runs if not scenario.deficit else args.mismatch_runs
        outcome = run_scenario(scenario, args, runs, rng)
        seq_hits, seq_rate = rate(outcome.first_sequential)
        fix_hits, fix_rate = rate(outcome.first_fixed)
        if scenario.deficit:
            seq_cell = f"{seq_rate:7.1%}"
            fix_cell = f"{fix_rate:7.1%}"
        else:
            seq_cell = f"{seq_rate:7.2%} (<= {upper95(seq_hits, runs):.2%})"
            fix_cell = f"{fix_rate:7.2%} (<= {upper95(fix_hits, runs):.2%})"
        print(
            f"{scenario.name:<26} {scenario.truth:<34} {runs:>5}  "
            f"{seq_cell:<28} {median_look(outcome.first_sequential):<18}  "
            f"{fix_cell:<22} {median_look(outcome.first_fixed):<18} {verified(outcome):<6}",
            flush=True,
        )
    print()
    print(
        "alerts: runs with at least one alert in the period; first alert: the median over "
        "the runs with one (look 288 = 1 day); replay: the first run replayed through "
        "srm_by_slice_sequential and stats.srm_by_slice found the same looks"
    )
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
