"""A change made in one process reaches devices served by other processes, within the promised time."""

import time

import pytest
import requests

from rollout import services
from rollout.exposures import BUFFER_KEY, _redis
from rollout.models import Exposure
from rollout.tasks import exposure_buffer_flush

pytestmark = pytest.mark.e2e

CHECK_SECONDS = 1  # ROLLOUT_CONFIG_CHECK_SECONDS of the server processes
PROMISE_SECONDS = CHECK_SECONDS + 2  # the check interval, plus scheduling slack on 2 cores


def poll(server, key, device):
    response = requests.get(
        f"{server}/api/v1/sdk/assignments",
        params={"device_id": device, "sdk_version": "1.5.0"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    return response.json()["models"][0]


def wait_for(condition, seconds: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds + 5:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"not seen within {seconds + 5} s")


def test_rollout_change__seen_by_server_processes_within_promise(sdk_setup, server):
    key, devices = sdk_setup["key"], [f"device-{i}" for i in range(8)]
    for device in devices:  # warm every worker's snapshot
        assert poll(server, key, device)["rollout"] is None

    rollout = services.rollout_create(
        flow=sdk_setup["flow"],
        challengers=[{"model_id": str(sdk_setup["challenger"].pk), "stages": [100]}],
        actor="test",
    )
    services.rollout_start(rollout=rollout, actor="test")
    started = wait_for(
        lambda: all(poll(server, key, d)["rollout"] is not None for d in devices), PROMISE_SECONDS
    )
    services.rollout_rollback(rollout=rollout, actor="test")
    rolled_back = wait_for(
        lambda: all(
            poll(server, key, d)["model_id"] == str(sdk_setup["baseline"].pk) for d in devices
        ),
        PROMISE_SECONDS,
    )

    print(f"start seen after {started:.2f} s, rollback after {rolled_back:.2f} s")
    assert started <= PROMISE_SECONDS
    assert rolled_back <= PROMISE_SECONDS


def test_exposures__buffered_by_server__written_by_celery_worker(sdk_setup, server, celery_worker):
    rollout = services.rollout_create(
        flow=sdk_setup["flow"],
        challengers=[{"model_id": str(sdk_setup["challenger"].pk), "stages": [50]}],
        actor="test",
    )
    services.rollout_start(rollout=rollout, actor="test")
    time.sleep(CHECK_SECONDS + 0.5)
    arms = {}
    for i in range(40):
        for _ in range(2):  # a repeated poll adds nothing
            arms[f"device-{i}"] = poll(server, sdk_setup["key"], f"device-{i}")["rollout"]["arm"]
    assert _redis_length() > 0

    exposure_buffer_flush.delay()
    wait_for(lambda: Exposure.objects.filter(rollout=rollout).count() == 40, 30)

    recorded = dict(Exposure.objects.filter(rollout=rollout).values_list("device_id", "arm"))
    assert recorded == arms
    assert _redis_length() == 0


def _redis_length() -> int:
    from django.conf import settings

    return _redis(settings.REDIS_URL).llen(BUFFER_KEY)
