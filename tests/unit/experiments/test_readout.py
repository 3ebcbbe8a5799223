"""How a stored analysis reads: chips, banners and the reason sentence, from one body."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments import decisions, readout
from experiments.analysis import ArmPlan
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


# --- state badges ------------------------------------------------------------------------------

HARMFUL = {BASELINE: {0: sums(3000, 600)}, CHALLENGER: {0: sums(3000, 300)}}
EQUAL = {BASELINE: {0: sums(3000, 600)}, CHALLENGER: {0: sums(3000, 600)}}


def test_state_badge__no_rollout_draft_promoted__from_the_state_alone():
    assert readout.state_badge(None, None).label == readout.NO_ROLLOUT
    assert readout.state_badge("draft", None) == readout.Badge(
        readout.DRAFT, "Set up but not started: no device gets the challenger yet.", "neutral"
    )
    assert readout.state_badge("completed", stored(look(EQUAL))).label == readout.PROMOTED


def test_state_badge__rolled_back__says_automatically_or_by_whom_and_why():
    automatic = readout.state_badge("rolled_back", None, rolled_back_by="system")
    by_person = readout.state_badge(
        "rolled_back", None, rolled_back_by="user:alice", reason="support tickets"
    )

    assert automatic.label == by_person.label == readout.ROLLED_BACK
    assert "automatically" in automatic.sentence
    assert "by alice" in by_person.sentence and "Reason: support tickets" in by_person.sentence


def test_state_badge__paused__by_whom_and_why():
    badge = readout.state_badge(
        "paused", stored(look(EQUAL)), paused_by="user:bob", reason="checking a ticket"
    )

    assert badge.label == readout.PAUSED
    assert badge.tone == "warning"
    assert "Paused by bob" in badge.sentence and "checking a ticket" in badge.sentence


def test_state_badge__harm__roll_back_recommended_with_the_recommendations_own_sentence():
    body = stored(look(HARMFUL))

    running = readout.state_badge("running", body)
    paused = readout.state_badge("paused", body, paused_by="user:bob")

    assert running.label == readout.GUARDRAIL_FAILING and running.tone == "bad"
    assert running.sentence == readout.recommendation(body).sentence
    # A pause does not hide harm: the challenger's devices keep it.
    assert paused.label == readout.GUARDRAIL_FAILING
    assert paused.sentence.endswith("Paused by bob meanwhile.")


def test_state_badge__guardrail_worse__failing_and_named():
    body = stored(
        look(
            {
                BASELINE: {0: sums(2000, 200, errored=10)},
                CHALLENGER: {0: sums(2000, 200, errored=200)},
            }
        )
    )

    assert readout.guardrails_worse(body) == [(CHALLENGER, MODEL_ERROR)]
    assert readout.state_badge("running", body).label == readout.GUARDRAIL_FAILING


def test_state_badge__sample_ratio_mismatch__unhealthy_do_not_act():
    body = stored(look(EQUAL, srm_counts={"1.5.0": {BASELINE: 5000, CHALLENGER: 3000}}))

    badge = readout.state_badge("running", body)

    assert badge.label == readout.UNHEALTHY
    assert badge.sentence == readout.health(body).sentence


def test_state_badge__no_device_counted__unhealthy():
    body = stored(look({BASELINE: {0: sums(0)}, CHALLENGER: {0: sums(0)}}))

    badge = readout.state_badge("running", body)

    assert badge.label == readout.UNHEALTHY
    assert "No device has been counted" in badge.sentence


def test_state_badge__below_the_minimum__holding_with_progress():
    body = stored(look({BASELINE: {0: sums(40, 10)}, CHALLENGER: {0: sums(30, 8)}}))

    badge = readout.state_badge("running", body)

    assert badge.label == readout.HOLDING
    assert badge.sentence == "Collecting data: 30 / 100 devices per arm."


def test_state_badge__better_at_the_final_stage__ready_to_promote():
    body = stored(
        look(
            {BASELINE: {0: sums(3000, 300)}, CHALLENGER: {0: sums(3000, 450)}},
            arms=(ArmPlan(CHALLENGER, "c", 0.5, final_stage=True),),
        )
    )

    badge = readout.state_badge("running", body)

    assert body["decision"] == decisions.PROMOTE_RECOMMENDED
    assert badge.label == readout.READY_TO_PROMOTE and badge.tone == "good"
    assert badge.sentence == readout.recommendation(body).sentence


def test_state_badge__no_difference__ramping_or_holding_on_the_devices_to_advance():
    enough = stored(look(EQUAL))
    short = stored(look(EQUAL, advance_detectable_lift=0.01))  # needs far more devices

    assert readout.state_badge("running", enough).label == readout.RAMPING
    holding = readout.state_badge("running", short)
    assert holding.label == readout.HOLDING
    needed = short["power"]["devices_per_arm_to_advance"]
    assert holding.sentence == f"Holding: 3,000 / {needed:,} devices per arm needed to advance."


def test_state_badge__running_not_analysed_yet__ramping():
    assert readout.state_badge("running", None).label == readout.RAMPING


@pytest.mark.parametrize(
    ("state", "body"),
    [
        ("draft", None),
        ("running", None),
        ("running", "harmful"),
        ("running", "equal"),
        ("paused", "equal"),
        ("completed", "equal"),
        ("rolled_back", "harmful"),
    ],
)
def test_state_badge__every_label__in_the_legend_with_its_tone(state, body):
    bodies = {None: None, "harmful": stored(look(HARMFUL)), "equal": stored(look(EQUAL))}

    badge = readout.state_badge(state, bodies[body])

    assert (badge.label, badge.tone) in {(label, tone) for label, tone, _ in readout.STATE_LEGEND}
    assert badge.sentence.endswith(".")


def test_actor_text__system_user_token():
    assert readout.actor_text("system") == "Cohort (automatic)"
    assert readout.actor_text("user:alice") == "alice"
    assert readout.actor_text("token:ci/ck_1234") == "ci (API token)"
    assert readout.actor_text("") == "someone"


# --- days left ---------------------------------------------------------------------------------


def power_body(at: str, smallest: int, needed: int | None) -> dict:
    return {
        "computed_at": at,
        "arms": [
            {"arm": BASELINE, "exposed": smallest * 3},
            {"arm": CHALLENGER, "exposed": smallest},
        ],
        "power": {"devices_per_arm_needed": needed},
    }


def test_days_left__measured_growth__carried_forward_rounded_up():
    first = power_body("2026-12-01T00:00:00+00:00", 100, 1000)
    last = power_body("2026-12-03T00:00:00+00:00", 300, 1050)  # 100 devices a day

    assert readout.days_left(first, last) == 8  # 750 more at 100 a day: 7.5, said as 8
    assert readout.days_left_text(8) == "~8 days left (estimate)"


def test_days_left__enough_devices__zero_and_enough_data():
    last = power_body("2026-12-03T00:00:00+00:00", 1200, 1000)

    assert readout.days_left(None, last) == 0
    assert readout.days_left_text(0) == "Enough data"


@pytest.mark.parametrize(
    ("first", "last"),
    [
        (None, None),
        (None, power_body("2026-12-03T00:00:00+00:00", 300, 1000)),  # one look only
        (  # no power figure (no baseline rate yet)
            power_body("2026-12-01T00:00:00+00:00", 100, None),
            power_body("2026-12-03T00:00:00+00:00", 300, None),
        ),
        (  # no growth
            power_body("2026-12-01T00:00:00+00:00", 300, 1000),
            power_body("2026-12-03T00:00:00+00:00", 300, 1000),
        ),
        (  # the same moment
            power_body("2026-12-03T00:00:00+00:00", 100, 1000),
            power_body("2026-12-03T00:00:00+00:00", 300, 1000),
        ),
    ],
)
def test_days_left__unknowable__none_and_a_dash(first, last):
    assert readout.days_left(first, last) is None
    assert readout.days_left_text(None) == "\u2014"


def test_days_left__less_than_a_day__one_day():
    first = power_body("2026-12-01T00:00:00+00:00", 100, 1000)
    last = power_body("2026-12-01T12:00:00+00:00", 900, 1000)

    assert readout.days_left(first, last) == 1
    assert readout.days_left_text(1) == "~1 day left (estimate)"
