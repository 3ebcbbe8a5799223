"""
The power estimate a product manager sees before creating a rollout (pure: no Django).

From the flow's recent baseline conversion rate and the plan's gates: the devices per arm the
judge will wait for before advancing (the same sizing as `analysis._planned_devices`, so the
estimate and the rollout page's "devices per arm" gate agree), the power the planned sample
gives, and, at the measured rate of new devices, about how long the first stage takes to get
there. Every figure uses `experiments.stats`' power functions, the fixed-horizon two-proportion
z-test; the always-valid test the judge runs needs somewhat more devices for the same power,
which the page says.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .. import stats

MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class PowerEstimate:
    baseline_rate: float | None  # conversion of the baseline, 0..1; None: unknown
    advance_detectable_lift: float  # relative drop of conversion the advance gate must see
    alpha: float
    min_devices_per_arm: int
    # Devices per arm before advancing: max(minimum, devices to see the drop); None: unknown.
    devices_per_arm_to_advance: int | None
    min_detectable_lift: float  # the judge's own power figure (a relative rise)
    devices_per_arm_for_min_lift: int | None
    planned_per_arm: int  # the planned sample shared by the baseline and the challengers
    power_at_planned: float | None  # to see the drop `advance_detectable_lift`
    power_at_planned_min_lift: float | None  # to see a rise of `min_detectable_lift`
    daily_devices: float | None  # new devices a day in the flow, measured; None: unknown
    first_stage_share: float  # of all devices, 0..1
    first_stage_daily: float | None  # new devices a day in the smallest arm at the first stage
    days_first_stage: int | None  # to reach `devices_per_arm_to_advance` at the first stage
    later_stages: int
    stage_min_minutes: int

    @property
    def known(self) -> bool:
        return self.devices_per_arm_to_advance is not None


def devices_to_detect(
    baseline_rate: float | None, relative_lift: float, alpha: float
) -> int | None:
    """Devices per arm for the two-sided z-test to see `relative_lift`; None when the rates
    leave (0, 1) or no rate is known."""
    if baseline_rate is None:
        return None
    try:
        return stats.devices_per_arm_for_lift(baseline_rate, relative_lift, alpha=alpha)
    except ValueError:
        return None


def power_with(
    n_per_arm: int, baseline_rate: float | None, relative_lift: float, alpha: float
) -> float | None:
    if baseline_rate is None or n_per_arm < 1:
        return None
    try:
        return stats.power_for(n_per_arm, baseline_rate, relative_lift, alpha=alpha)
    except ValueError:
        return None


def power_estimate(
    *,
    baseline_rate: float | None,
    advance_detectable_lift: float,
    min_devices_per_arm: int,
    planned_sample: int,
    stages: Sequence[float],
    stage_min_minutes: int,
    challengers: int = 1,
    alpha: float = stats.DEFAULT_ALPHA,
    min_detectable_lift: float = 0.1,
    daily_devices: float | None = None,
) -> PowerEstimate:
    """The estimate for a plan; `stages` are the challengers' shares as fractions (0.05 = 5 %).

    The advance gate is sized like the judge sizes it: enough devices to see conversion drop
    by `advance_detectable_lift` with power 0.8, and never fewer than the configured minimum.
    Without a rate to size it on, the minimum alone is known to apply, and the estimate says
    that the number is unknown.
    """
    drop = -abs(advance_detectable_lift)
    to_see_drop = devices_to_detect(baseline_rate, drop, alpha)
    to_advance = max(min_devices_per_arm, to_see_drop) if to_see_drop is not None else None
    per_arm = planned_sample // (challengers + 1)
    first = stages[0] if stages else 0.0
    # The smallest arm at the first stage: the challengers', or the baseline's when they
    # leave it less than one of them has.
    smallest_share = min(first, max(0.0, 1.0 - challengers * first))
    first_daily = daily_devices * smallest_share if daily_devices else None
    days = None
    if to_advance is not None and first_daily:
        days = max(
            math.ceil(to_advance / first_daily),
            math.ceil(stage_min_minutes / MINUTES_PER_DAY),
        )
    return PowerEstimate(
        baseline_rate=baseline_rate,
        advance_detectable_lift=abs(advance_detectable_lift),
        alpha=alpha,
        min_devices_per_arm=min_devices_per_arm,
        devices_per_arm_to_advance=to_advance,
        min_detectable_lift=min_detectable_lift,
        devices_per_arm_for_min_lift=devices_to_detect(baseline_rate, min_detectable_lift, alpha),
        planned_per_arm=per_arm,
        power_at_planned=power_with(per_arm, baseline_rate, drop, alpha),
        power_at_planned_min_lift=power_with(per_arm, baseline_rate, min_detectable_lift, alpha),
        daily_devices=daily_devices,
        first_stage_share=first,
        first_stage_daily=first_daily,
        days_first_stage=days,
        later_stages=max(0, len(stages) - 1),
        stage_min_minutes=stage_min_minutes,
    )
