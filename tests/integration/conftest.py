"""Fixtures of the integration tests."""

import pytest

from rollout import services


@pytest.fixture
def running(sdk_setup):
    rollout = services.rollout_create(
        flow=sdk_setup["flow"],
        challengers=[{"model_id": str(sdk_setup["challenger"].pk), "stages": [50]}],
        actor="test",
        planned_sample=4000,
    )
    return services.rollout_start(rollout=rollout, actor="test")
