"""The selectors' SQL applies the pure counting rule of experiments.counting, through real
polls, advances, moves and attribution across several phases."""

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from experiments.counting import device_counts
from experiments.events.attribution import events_attribute
from experiments.selectors import arm_sufficient_statistics, exposure_counts
from rollout import services
from rollout.arms import BASELINE
from rollout.models import Exposure
from rollout.selectors import rollout_phase_starts

from .counting_reference import counting_reference
from .test_attribution import expose, report, start_rollout

pytestmark = pytest.mark.django_db

LABELS = ("Purchased", "Dismissed")


def rounded(sums: dict) -> dict:
    """Sums of floats depend on their order: equal to the last rounding, not to the bit."""
    return {
        arm: {
            stratum: {k: float(f"{v:.12g}") if isinstance(v, float) else v for k, v in s.items()}
            for stratum, s in by_stratum.items()
        }
        for arm, by_stratum in sums.items()
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_selectors__equal_the_pure_rule__over_phases_moves_and_idle_devices(sdk_setup, seed):
    rng = random.Random(seed)
    rollout = start_rollout(sdk_setup, stages=(5, 20, 50))
    devices: list[str] = []
    for phase in range(3):
        if phase:
            rollout = services.rollout_advance(rollout=rollout, actor="test")
        new = [f"s{seed}-p{phase}-d{i}" for i in range(rng.randint(150, 250))]
        devices += new
        # Some earlier devices poll again (and move if their bucket changed arm); others stay
        # idle, keeping an exposure whose bucket may now belong to another arm.
        returning = [d for d in devices if d not in new and rng.random() < 0.5]
        arms = expose(sdk_setup, new + returning)
        for device in rng.sample(new + returning, k=len(new + returning) // 2):
            report(
                sdk_setup,
                device,
                outcome=rng.choice(LABELS),
                at=timezone.now() + timedelta(seconds=1),
                value=rng.choice([None, 0.5, -2.0, 1e9]),
            )
        events_attribute()
        assert set(arms.values()) <= {BASELINE, "challenger-1"}

    counted = exposure_counts(rollout=rollout).counted
    sums = arm_sufficient_statistics(rollout=rollout, counted=counted, outcome_labels=LABELS)

    assert rounded(sums) == rounded(counting_reference(rollout, LABELS))
    assert len(rollout_phase_starts(rollout=rollout)) == 3
    assert {stratum for by_stratum in sums.values() for stratum in by_stratum} == {0, 1, 2}
    moved = Exposure.objects.filter(rollout=rollout, comparable=False)
    assert moved.exists()  # returning baseline devices in the grown range moved, and left
    idle_in_grown_range = [
        e
        for e in Exposure.objects.filter(rollout=rollout, arm=BASELINE, comparable=True)
        if e.bucket < rollout.arms.get().share
    ]
    assert idle_in_grown_range  # idle baseline devices whose bucket went to the challenger...
    assert not any(  # ...are not counted
        device_counts(arm=e.arm, arm_of_bucket_now="challenger-1", comparable=e.comparable)
        for e in idle_in_grown_range
    )
