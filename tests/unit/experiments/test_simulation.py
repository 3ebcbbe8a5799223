"""A fast, seeded subset of benchmarks/decisions.py: the judge's own code on simulated fleets
through staged rollouts with automatic advancing (experiments.simulation)."""

from dataclasses import replace

import pytest

from experiments.simulation import HOUR, MINUTE, Scenario, simulate

# Small fleets and two days keep this to seconds; the benchmark runs the full matrix.
FAST = Scenario(devices=20_000, horizon=48 * HOUR, conversion_delay=HOUR)
SEEDS = range(12)


@pytest.fixture(scope="module")
def equal_with_strata():
    return [simulate(FAST, seed) for seed in SEEDS]


def test_equal_challenger__ramped_and_stratified__not_rolled_back(equal_with_strata):
    rolled_back = [o for o in equal_with_strata if o.decision == "rolled_back"]
    assert len(rolled_back) <= 1, [o.reasons for o in rolled_back]
    # Automatic advancing did ramp: most runs left the first stage.
    assert sum(o.stage >= 1 for o in equal_with_strata) >= 10


def test_equal_challenger__ramped_but_pooled__rolled_back(equal_with_strata):
    """Without strata the same fleets make the identical model look worse after an advance:
    what the judge did before. (So the test above can fail.)"""
    pooled = [simulate(replace(FAST, stratify=False), seed) for seed in SEEDS]
    assert sum(o.decision == "rolled_back" for o in pooled) >= 9


@pytest.mark.parametrize("delay", [5 * MINUTE, 6 * HOUR])
def test_clearly_harmful_challenger__rolled_back(delay):
    outcomes = [simulate(replace(FAST, conversion_delay=delay, lift=-0.4), s) for s in range(4)]
    assert all(o.decision == "rolled_back" for o in outcomes), [o.decision for o in outcomes]
    assert max(o.at for o in outcomes) < 24 * HOUR


def test_failing_model__rolled_back_by_the_error_guardrail():
    outcomes = [simulate(replace(FAST, error_lift=20.0), s) for s in range(3)]
    assert all(o.decision == "rolled_back" for o in outcomes)
    assert all("model_error" in " ".join(o.reasons) for o in outcomes)
    assert max(o.at for o in outcomes) < 6 * HOUR
