"""The create form's power estimate (pure): the judge's own sizing, from experiments.stats."""

import pytest

from experiments import stats
from experiments.console.power_estimate import power_estimate


def test_power_estimate__matches_the_stats_functions():
    estimate = power_estimate(
        baseline_rate=0.2,
        advance_detectable_lift=0.3,
        min_devices_per_arm=100,
        planned_sample=3000,
        stages=[0.05, 0.2],
        stage_min_minutes=60,
        daily_devices=1000,
    )

    need = stats.devices_per_arm_for_lift(0.2, -0.3)
    assert estimate.devices_per_arm_to_advance == max(100, need)
    assert estimate.power_at_planned == pytest.approx(stats.power_for(1500, 0.2, -0.3))
    assert estimate.first_stage_daily == pytest.approx(50)
    assert estimate.days_first_stage == -(-need // 50)


def test_power_estimate__no_rate__minimum_only_and_no_days():
    estimate = power_estimate(
        baseline_rate=None,
        advance_detectable_lift=0.5,
        min_devices_per_arm=100,
        planned_sample=5000,
        stages=[0.01, 0.05],
        stage_min_minutes=60,
        daily_devices=1000,
    )

    assert not estimate.known
    assert estimate.power_at_planned is None and estimate.days_first_stage is None


def test_power_estimate__small_need__the_stage_minimum_rules_the_days():
    estimate = power_estimate(
        baseline_rate=0.5,
        advance_detectable_lift=0.9,
        min_devices_per_arm=10,
        planned_sample=5000,
        stages=[0.5],
        stage_min_minutes=3 * 24 * 60,
        daily_devices=1_000_000,
    )

    assert estimate.days_first_stage == 3


def test_power_estimate__whole_fleet_first_stage__no_baseline_left_so_no_days():
    estimate = power_estimate(
        baseline_rate=0.1,
        advance_detectable_lift=0.5,
        min_devices_per_arm=100,
        planned_sample=5000,
        stages=[1.0],
        stage_min_minutes=60,
        daily_devices=1000,
    )

    assert estimate.known and estimate.days_first_stage is None
