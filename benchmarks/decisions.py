"""
The judge's decisions on simulated fleets, through staged rollouts with automatic advancing.

    .venv/bin/python benchmarks/decisions.py [--runs 100] [--effect-runs 50] [--days 5]
                                             [--delays 5m,1h,6h,24h] [--workers 2] [--seed 1]

Pure numpy/scipy, no database. Each run is one rollout judged every 5 minutes by the project's
own code (`experiments.simulation`: the counting rule of `experiments.counting`, the
allocation of `rollout.allocation`, and `experiments.analysis.analyze` with its statistics and
decisions); the fleet is described there (40 000 devices arriving over days, heavy users first
and more likely to convert, outcomes after an exponential delay with the given mean, one event
in five arriving hours late, 1 % model errors in both arms). Stage plan 5 -> 20 -> 50 -> 100 %,
automatic advancing (60 minutes and the power-sized devices per stage), 72 h attribution window.

Per conversion delay it prints:

- A/A (the same model in both arms), with advancing: the share of runs rolled back (false
  rollbacks; with a 95 % Clopper-Pearson upper bound), and promoted (false promotions); the
  runs with an SRM alert; the stage most runs reached.
- A/A without advancing (5 % for the whole run): the no-ramp reference.
- A/A with advancing but every device in one stratum ("pooled"): what the judge did before
  it compared devices within the phase they entered their arm.
- +15 % relative conversion: the share of runs where promotion was recommended (power).
- -15 % and -30 %: the share rolled back (detection) and the median hours to the rollback.

No timing targets: the figures are statistical.
"""

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.simulation import HOUR, MINUTE, Outcome, Scenario, simulate

DELAYS = {"5m": 5 * MINUTE, "1h": HOUR, "6h": 6 * HOUR, "24h": 24 * HOUR}


def _run(job: tuple[Scenario, int]) -> Outcome:
    scenario, seed = job
    return simulate(scenario, seed)


def _share(outcomes: list[Outcome], decision: str) -> tuple[int, int]:
    return sum(o.decision == decision for o in outcomes), len(outcomes)


def _rate(k: int, n: int, bound: bool = False) -> str:
    text = f"{k / n:6.1%} ({k}/{n})"
    if bound:
        high = sps.binomtest(k, n).proportion_ci(0.95, method="exact").high
        text += f" <= {high:.1%}"
    return text


def _detection(outcomes: list[Outcome]) -> str:
    k, n = _share(outcomes, "rolled_back")
    times = [o.at / HOUR for o in outcomes if o.decision == "rolled_back"]
    median = f"{np.median(times):5.1f} h" if times else "    -"
    return f"{k / n:6.1%}, median {median}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="A/A runs per delay")
    parser.add_argument("--effect-runs", type=int, default=50, help="runs per effect and delay")
    parser.add_argument("--reference-runs", type=int, default=30, help="no-ramp / pooled runs")
    parser.add_argument("--days", type=float, default=5.0, help="how long each rollout runs")
    parser.add_argument("--delays", default="5m,1h,6h,24h")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    started = time.monotonic()
    base = Scenario(horizon=args.days * 24 * HOUR)
    plans: dict[tuple[str, str], list[tuple[Scenario, int]]] = {}
    for label in args.delays.split(","):
        ramp = replace(base, conversion_delay=DELAYS[label])
        cases = {
            "aa": (ramp, args.runs),
            "no_ramp": (replace(ramp, auto_advance=False), args.reference_runs),
            "pooled": (replace(ramp, stratify=False), args.reference_runs),
            "+15": (replace(ramp, lift=0.15), args.effect_runs),
            "-15": (replace(ramp, lift=-0.15), args.effect_runs),
            "-30": (replace(ramp, lift=-0.30), args.effect_runs),
        }
        for case, (scenario, runs) in cases.items():
            # Each case has its own seeds: the fleets of a delay differ only by their seed.
            plans[(label, case)] = [(scenario, args.seed * 100_000 + i) for i in range(runs)]

    with ProcessPoolExecutor(args.workers) as pool:
        results = {key: list(pool.map(_run, jobs, chunksize=2)) for key, jobs in plans.items()}

    print(
        f"decisions: {base.devices} devices, stages 5/20/50/100 %, looks every "
        f"{base.look_every / MINUTE:.0f} min for {args.days:g} days, alpha {base.alpha}"
    )
    header = (
        "delay | A/A false rollbacks (ramp) | A/A no ramp | A/A pooled | A/A false promotions "
        "| A/A SRM alerts | A/A stage reached | +15 % promoted | -15 % rolled back "
        "| -30 % rolled back"
    )
    print(header)
    print("|".join("---" for _ in header.split("|")))
    for label in args.delays.split(","):
        aa = results[(label, "aa")]
        stages = np.bincount([o.stage for o in aa], minlength=4)
        reached = ", ".join(f"{p}%: {c}" for p, c in zip((5, 20, 50, 100), stages, strict=True))
        row = [
            label,
            _rate(*_share(aa, "rolled_back"), bound=True),
            _rate(*_share(results[(label, "no_ramp")], "rolled_back")),
            _rate(*_share(results[(label, "pooled")], "rolled_back")),
            _rate(*_share(aa, "promote_recommended")),
            _rate(sum(o.srm_alerts > 0 for o in aa), len(aa)),
            reached,
            _rate(*_share(results[(label, "+15")], "promote_recommended")),
            _detection(results[(label, "-15")]),
            _detection(results[(label, "-30")]),
        ]
        print(" | ".join(row))
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
