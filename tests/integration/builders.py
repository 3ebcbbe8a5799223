"""Builders of test data that would take thousands of requests to make through the API."""

from datetime import timedelta

from experiments.models import DeviceOutcome
from rollout.models import Exposure


def populate(rollout, arm: str, devices: int, converted: int, errors: int = 0, start: int = 0):
    """Exposed devices of one arm, the first `converted` of which purchased."""
    now = rollout.stage_started_at + timedelta(seconds=1)
    Exposure.objects.bulk_create(
        Exposure(
            rollout=rollout, device_id=f"{arm}-{i}", arm=arm, bucket=0, sdk_version="1.5.0",
            first_exposed_at=now, arm_since=now,
        )
        for i in range(start, start + devices)
    )  # fmt: skip
    DeviceOutcome.objects.bulk_create(
        DeviceOutcome(
            rollout=rollout,
            device_id=f"{arm}-{i}",
            arm=arm,
            events=1,
            conversions=1 if i - start < converted else 0,
            model_errors=1 if i - start < errors else 0,
            outcome_counts={"Purchased": 1} if i - start < converted else {"Dismissed": 1},
        )
        for i in range(start, start + devices)
    )
