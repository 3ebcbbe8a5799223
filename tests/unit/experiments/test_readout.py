"""How a stored analysis reads: chips, banners and the reason sentence, from one body."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments import decisions, readout
from rollout.arms import BASELINE
from rollout.metrics import MODEL_ERROR, PRIMARY

from .test_analysis import CHALLENGER, look, sums


def stored(result) -> dict:
    """The body as the database gives it back."""
    return json.loads(json.dumps(result.body))


def comparisons(body: dict):
    for arm in body["arms"]:
        if arm["arm"] != BASELINE:
            yield from arm["metrics"].items()


def good_side(metric: str, ci) -> bool:
    lower_is_better = metric in (MODEL_ERROR, "outcome:Dismissed")
    return ci[1] < 0 if lower_is_better else ci[0] > 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(min_value=50, max_value=4000),
    base_rate=st.floats(min_value=0.05, max_value=0.5),
    lift=st.floats(min_value=-0.8, max_value=0.8),
    error_rate=st.floats(min_value=0.0, max_value=0.2),
)
def test_chip__any_analysis__better_exactly_when_the_interval_is_wholly_on_the_good_side(
    n, base_rate, lift, error_rate
):
    challenger_rate = min(1.0, max(0.0, base_rate * (1 + lift)))
    body = stored(
        look(
            {
                BASELINE: {0: sums(n, round(n * base_rate))},
                CHALLENGER: {0: sums(n, round(n * challenger_rate), errored=round(n * error_rate))},
            }
        )
    )

    for metric, comparison in comparisons(body):
        chip = readout.chip(comparison)
        if comparison.get("insufficient") or comparison.get("error"):
            assert chip is None
            continue
        ci = comparison["sequential_ci"]
        assert (chip == readout.BETTER) == (
            good_side(metric, ci) and not comparison["sequential_conflict"]
        ), (metric, ci)
        assert chip in (readout.BETTER, readout.WORSE, readout.NO_DIFFERENCE)


def test_recommendation__challenger_much_worse__rollback_sentence_with_interval_and_look():
    body = stored(
        look(
            {BASELINE: {0: sums(3000, 600)}, CHALLENGER: {0: sums(3000, 300)}},
            computed_at="2026-12-01T14:05:00+00:00",
        )
    )

    said = readout.recommendation(body, look=37)

    assert body["decision"] == decisions.ROLLBACK
    assert said.title == "Roll back recommended"
    assert said.sentence.startswith(
        "Roll back recommended: challenger-1 conversion \u221210.0 pp ("
    )
    assert (
        f"always-valid {body['thresholds']['interval_level'] * 100:.4g} % interval" in said.sentence
    )
    assert said.sentence.endswith("look 37, 14:05 UTC.")
    [(_, primary)] = [(m, c) for m, c in comparisons(body) if m == PRIMARY]
    assert readout.chip(primary) == readout.WORSE


def test_recommendation__below_the_minimum__collecting_progress_and_no_chip():
    body = stored(look({BASELINE: {0: sums(40, 10)}, CHALLENGER: {0: sums(30, 8)}}))

    assert body["decision"] == decisions.INSUFFICIENT_DATA
    assert readout.collecting(body) == (30, 100)
    assert readout.recommendation(body).sentence == "Collecting data: 30 / 100 devices per arm."
    assert all(readout.chip(c) is None for _, c in comparisons(body))


def test_health__srm_finding__blocking_banner():
    body = stored(
        look(
            {BASELINE: {0: sums(3000, 600)}, CHALLENGER: {0: sums(3000, 600)}},
            srm_counts={"1.5.0": {BASELINE: 5000, CHALLENGER: 3000}},
        )
    )

    banner = readout.health(body)

    assert body["srm"], "the look must find the mismatch"
    assert banner.blocks_results and "Do not act on these results" in banner.sentence


def test_health__balanced_arms_with_data__no_banner():
    body = stored(look({BASELINE: {0: sums(3000, 600)}, CHALLENGER: {0: sums(3000, 600)}}))

    assert readout.health(body) is None


@pytest.mark.parametrize(
    ("diff", "ci", "proportion", "text"),
    [
        (-0.021, [-0.034, -0.008], True, "\u22122.1 pp (\u22123.4 … \u22120.8)"),
        (0.0, [-0.01, 0.01], True, "+0.0 pp (\u22121.0 … +1.0)"),
        (1.5, [0.25, 2.75], False, "+1.500 (+0.250 … +2.750)"),
    ],
)
def test_difference_text__signs_and_units(diff, ci, proportion, text):
    comparison = {"diff": diff, "sequential_ci": ci}

    assert readout.difference_text(comparison, proportion=proportion) == text
