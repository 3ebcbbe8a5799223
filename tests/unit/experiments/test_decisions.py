"""What the judge decides, from comparisons: precedence, margins, and the stage gate."""

from experiments.decisions import (
    ADVANCE,
    CONTINUE,
    INSUFFICIENT_DATA,
    PROMOTE_RECOMMENDED,
    ROLLBACK,
    SRM_ALERT,
    StageInfo,
    decide,
)
from experiments.stats import Comparison, SrmFinding


def comparison(*, significant=False, direction="none", insufficient=None, conflict=False):
    return Comparison(
        n=1000,
        mean=0.1,
        diff=-0.03 if direction == "worse" else 0.03,
        sequential_ci=(-0.05, -0.01) if direction == "worse" else (0.01, 0.05),
        significant=significant,
        direction=direction,
        insufficient=insufficient,
        sequential_conflict=conflict,
    )


NEUTRAL = comparison()
WORSE = comparison(significant=True, direction="worse")
BETTER = comparison(significant=True, direction="better")
LACKING = comparison(insufficient="each arm needs at least 100 devices")
SRM = SrmFinding("all devices", 1e-6, (5000, 5400), (0.5, 0.5), (0.48, 0.52), 0.04)


def stage(**overrides) -> StageInfo:
    values = {
        "running": True,
        "auto_advance": True,
        "minutes_in_stage": 90,
        "stage_min_minutes": 60,
        "min_devices_per_arm": 100,
        "planned_devices_per_arm": 100,
        "exposed": {"baseline": 900, "challenger-1": 150},
        "final_stage": {"challenger-1": False},
    }
    return StageInfo(**{**values, **overrides})


def test_decide__guardrail_worse__rollback_naming_arm_and_metric():
    verdict = decide(
        {"conversion": {"challenger-1": NEUTRAL}, "model_error": {"challenger-1": WORSE}},
        primary="conversion",
        srm_findings=[],
        stage=stage(),
    )

    assert verdict.decision == ROLLBACK
    assert verdict.harmful_arms == ("challenger-1",)
    assert "model_error" in verdict.reasons[0]


def test_decide__harm_and_srm__rollback_first():
    verdict = decide(
        {"conversion": {"challenger-1": WORSE}},
        primary="conversion",
        srm_findings=[SRM],
        stage=stage(),
    )

    assert verdict.decision == ROLLBACK


def test_decide__srm__alert_and_no_advance():
    verdict = decide(
        {"conversion": {"challenger-1": NEUTRAL}},
        primary="conversion",
        srm_findings=[SRM],
        stage=stage(),
    )

    assert verdict.decision == SRM_ALERT
    assert "all devices" in verdict.reasons[0]


def test_decide__significant_but_within_margin__not_rollback():
    within_margin = comparison(significant=True, direction="none")

    verdict = decide(
        {"conversion": {"challenger-1": within_margin}},
        primary="conversion",
        srm_findings=[],
        stage=stage(auto_advance=False),
    )

    assert verdict.decision == CONTINUE


def test_decide__primary_insufficient__insufficient_data():
    verdict = decide(
        {"conversion": {"challenger-1": LACKING}},
        primary="conversion",
        srm_findings=[],
        stage=stage(),
    )

    assert verdict.decision == INSUFFICIENT_DATA
    assert "100 devices" in verdict.reasons[0]


def test_decide__better_at_final_stage__promote_recommended():
    verdict = decide(
        {"conversion": {"challenger-1": BETTER}},
        primary="conversion",
        srm_findings=[],
        stage=stage(final_stage={"challenger-1": True}),
    )

    assert verdict.decision == PROMOTE_RECOMMENDED
    assert verdict.winning_arms == ("challenger-1",)


def test_decide__better_before_final_stage__advance_not_promote():
    verdict = decide(
        {"conversion": {"challenger-1": BETTER}},
        primary="conversion",
        srm_findings=[],
        stage=stage(),
    )

    assert verdict.decision == ADVANCE


def test_decide__better_but_sequential_conflict__no_promotion():
    verdict = decide(
        {
            "conversion": {
                "challenger-1": comparison(significant=True, direction="better", conflict=True)
            }
        },
        primary="conversion",
        srm_findings=[],
        stage=stage(final_stage={"challenger-1": True}, auto_advance=False),
    )

    assert verdict.decision == CONTINUE


def test_decide__stage_time_not_reached__continue():
    verdict = decide(
        {"conversion": {"challenger-1": NEUTRAL}},
        primary="conversion",
        srm_findings=[],
        stage=stage(minutes_in_stage=30),
    )

    assert verdict.decision == CONTINUE


def test_decide__too_few_devices_in_an_arm__continue():
    verdict = decide(
        {"conversion": {"challenger-1": NEUTRAL}},
        primary="conversion",
        srm_findings=[],
        stage=stage(exposed={"baseline": 900, "challenger-1": 99}),
    )

    assert verdict.decision == CONTINUE


def test_decide__time_and_devices_met__advance():
    verdict = decide(
        {"conversion": {"challenger-1": NEUTRAL}},
        primary="conversion",
        srm_findings=[],
        stage=stage(),
    )

    assert verdict.decision == ADVANCE
    assert "90 min" in verdict.reasons[0]


def test_decide__paused__never_advances():
    verdict = decide(
        {"conversion": {"challenger-1": NEUTRAL}},
        primary="conversion",
        srm_findings=[],
        stage=stage(running=False),
    )

    assert verdict.decision == CONTINUE


def test_decide__extreme_harm_without_testable_comparison__rollback():
    verdict = decide(
        {"conversion": {"challenger-1": NEUTRAL}, "model_error": {"challenger-1": LACKING}},
        primary="conversion",
        srm_findings=[],
        stage=stage(),
        extreme_harm=[("challenger-1", "model_error", "challenger-1 is clearly worse")],
    )

    assert verdict.decision == ROLLBACK
    assert verdict.harmful_arms == ("challenger-1",)
    assert verdict.reasons == ("challenger-1 is clearly worse",)


def test_decide__fewer_devices_than_the_power_plan__continue():
    verdict = decide(
        {"conversion": {"challenger-1": NEUTRAL}},
        primary="conversion",
        srm_findings=[],
        stage=stage(planned_devices_per_arm=434),
    )

    assert verdict.decision == CONTINUE
