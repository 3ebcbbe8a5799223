"""
Without a reachable Redis, exposures are written to the database by the web process itself,
within the request: no exposure waits for the device's next poll. Devices that only ever call
the events endpoint get theirs from the assignments that endpoint answers with.
"""

import time
import uuid
from unittest import mock

import pytest
from django.db import DatabaseError
from django.utils import timezone

from experiments.events.attribution import ledger_catch_up
from experiments.models import DeviceOutcome
from rollout import exposures
from rollout.models import Exposure

UNREACHABLE = "redis://127.0.0.1:1/0"


@pytest.fixture
def redis_down(settings):
    settings.REDIS_URL = UNREACHABLE


def test_poll__redis_unreachable__every_device_gets_its_exposure_at_once(
    sdk_setup, running, poll, redis_down
):
    devices = 25
    took = []
    arms = {}
    for i in range(devices):
        started = time.monotonic()
        response = poll(sdk_setup["key"], f"device-{i}", fresh=False)
        took.append(time.monotonic() - started)
        assert response.status_code == 200
        arms[f"device-{i}"] = response.json()["models"][0]["rollout"]["arm"]

    recorded = dict(Exposure.objects.filter(rollout=running).values_list("device_id", "arm"))
    assert recorded == arms
    assert exposures.direct.pending() == 0
    # Only the first poll tries Redis; the others go straight to the database.
    assert max(took[1:]) < 0.5


def test_events_only_device__redis_unreachable__exposed_and_its_event_counted(
    sdk_setup, running, client, redis_down
):
    response = client.post(
        "/api/v1/sdk/events",
        {
            "device_id": "never-polled",
            "sdk_version": "1.5.0",
            "events": [
                {"id": str(uuid.uuid4()), "flow": sdk_setup["flow"].name,
                 "outcome": "Purchased", "ts": timezone.now().isoformat()}
            ],
        },
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {sdk_setup['key']}",
    )  # fmt: skip

    assert response.status_code == 200, response.content
    arm = response.json()["assignments"]["models"][0]["rollout"]["arm"]
    assert Exposure.objects.get(rollout=running, device_id="never-polled").arm == arm
    ledger_catch_up(wait=0)
    outcome = DeviceOutcome.objects.get(rollout=running, device_id="never-polled")
    assert (outcome.arm, outcome.events, outcome.conversions) == (arm, 1, 1)


def test_direct_write_fails__notes_kept_and_written_with_the_next_note(
    sdk_setup, running, poll, redis_down
):
    with mock.patch.object(exposures, "ledger_write", side_effect=DatabaseError("timeout")):
        assert poll(sdk_setup["key"], "first", fresh=False).status_code == 200
    assert exposures.direct.pending() == 1
    assert not Exposure.objects.filter(device_id="first").exists()

    assert poll(sdk_setup["key"], "second", fresh=False).status_code == 200

    assert exposures.direct.pending() == 0
    assert set(Exposure.objects.values_list("device_id", flat=True)) == {"first", "second"}


def test_redis_back__notes_go_to_the_buffer_again(sdk_setup, running, poll, settings):
    buffered = settings.REDIS_URL
    settings.REDIS_URL = UNREACHABLE
    poll(sdk_setup["key"], "during", fresh=False)
    settings.REDIS_URL = buffered
    exposures.direct.redis_resting_until = 0  # the retry pause is over

    poll(sdk_setup["key"], "after", fresh=False)

    assert Exposure.objects.filter(device_id="during").exists()
    assert exposures._redis(buffered).llen(exposures.BUFFER_KEY) == 1
