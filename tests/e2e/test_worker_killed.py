"""
A worker killed with SIGKILL in the middle of its work: the flush of the exposure buffer, the
attribution of events, the judge's action. Real Celery workers on the Redis broker and the test
database. Each test kills the worker while its step is in flight (a test-only hook stalls it
there, `slow_worker.py`), and shows that the next run completes within a minute: nothing lost,
nothing counted twice, one decision, one alert.
"""

import os
import signal
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from experiments.events.attribution import ledger_catch_up, ledger_complete_through
from experiments.judge import rollout_analyze
from experiments.models import Alert, AlertChannel, DeviceOutcome, OutcomeEvent
from rollout.exposures import (
    BUFFER_KEY,
    FLUSH_LEASE_SECONDS,
    FLUSH_LOCK_KEY,
    _redis,
    exposure_note,
    ledger_write,
    remembered,
)
from rollout.models import Exposure, RolloutState
from tests.integration.builders import bucket_in, populate, started_rollout

from .processes import process_stop, worker_start

pytestmark = pytest.mark.e2e

RECOVERY_BOUND_SECONDS = 60


@pytest.fixture
def running(sdk_setup, webhook_receiver):
    AlertChannel.objects.create(
        app=sdk_setup["flow"].app, name="on-call", kind="webhook", target=webhook_receiver.url
    )
    return started_rollout(sdk_setup, [50])


@pytest.fixture
def workers(process_env, tmp_path):
    """Start workers: `slow(where)` one that stalls at `where`, `healthy()` a plain one."""
    from controlplane.celery import app

    started = []
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False

    class Workers:
        def slow(self, where: str):
            env = {**process_env, "COHORT_TEST_SLOW": where}
            log = tmp_path / f"slow-{where}.log"
            process = worker_start(env, log, app="tests.e2e.slow_worker")
            started.append(process)
            return process, log

        def healthy(self):
            process = worker_start(process_env, tmp_path / f"healthy-{len(started)}.log")
            started.append(process)
            return process

    yield Workers()
    app.conf.task_always_eager = eager
    for process in started:
        if process.poll() is None:
            process_stop(process)


def wait_for_log(log, text: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while text.encode() not in log.read_bytes():
        if time.monotonic() > deadline:
            pytest.fail(f"{text!r} not in the worker's log: {log.read_text()[-3000:]}")
        time.sleep(0.1)


def kill(process) -> float:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    return time.monotonic()


def recover(run, done, what: str) -> float:
    """Send `run` every 2 s (as beat would) until `done()`; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < RECOVERY_BOUND_SECONDS:
        run()
        for _ in range(20):
            if done():
                return time.monotonic() - started
            time.sleep(0.1)
    pytest.fail(f"{what} did not recover within {RECOVERY_BOUND_SECONDS} s")


def test_killed_mid_flush__lease_expires__next_flush_writes_every_exposure(running, workers):
    from rollout.tasks import exposure_buffer_flush

    devices = 12_000  # three batches: the first commits, the second is in flight when killed
    for i in range(devices):
        exposure_note(
            rollout_id=str(running.pk), device_id=f"d-{i}", arm="baseline",
            bucket=bucket_in(running, "baseline"), sdk_version="1.5.0",
        )  # fmt: skip
    remembered.clear()
    redis = _redis(settings.REDIS_URL)
    assert redis.llen(BUFFER_KEY) == devices

    slow, log = workers.slow("flush")
    exposure_buffer_flush.delay()
    wait_for_log(log, "SLOW-HOOK flush")
    workers.healthy()
    killed_at = kill(slow)
    assert 0 < redis.pttl(FLUSH_LOCK_KEY) <= FLUSH_LEASE_SECONDS * 1000

    # Right after the kill the lease is the dead worker's: a catch-up cannot flush, does not
    # wait (wait=0), and does not claim a complete ledger; the analysis' watermark says so.
    before = timezone.now()
    ledger_catch_up(wait=0)
    analysis = rollout_analyze(rollout=running, act=True, catch_up=False)
    assert analysis.watermark < before
    assert any("data complete up to" in note for note in analysis.body["notes"])

    took = recover(
        exposure_buffer_flush.delay,
        lambda: (
            Exposure.objects.filter(rollout=running).count() == devices
            and redis.llen(BUFFER_KEY) == 0
        ),
        "the exposure flush",
    )
    lease_freed = time.monotonic() - killed_at
    print(f"\nflush: every exposure written {took:.1f} s after the kill")
    assert (
        Exposure.objects.filter(rollout=running).values("device_id").distinct().count() == devices
    )
    assert took < RECOVERY_BOUND_SECONDS
    assert lease_freed < RECOVERY_BOUND_SECONDS


def test_killed_mid_attribution__next_run_counts_every_event_once(running, workers):
    from experiments.tasks import events_attribute_task

    devices, per_device = 6_000, 2  # 12 000 events: three batches, the second killed
    now = running.stage_started_at + timedelta(seconds=1)
    bucket = bucket_in(running, "baseline")
    ledger_write(
        [
            {"kind": "expose", "rollout_id": str(running.pk), "device_id": f"d-{i}",
             "arm": "baseline", "bucket": bucket, "sdk_version": "1.5.0", "at": now.isoformat()}
            for i in range(devices)
        ]
    )  # fmt: skip
    flow = running.flow
    OutcomeEvent.objects.bulk_create(
        OutcomeEvent(
            app_id=flow.app_id, event_id=f"00000000-0000-4000-8000-{i * per_device + k:012d}",
            flow=flow, device_id=f"d-{i}", sdk_version="1.5.0",
            outcome="Purchased" if k == 0 and i % 10 == 0 else "Dismissed",
            occurred_at=now + timedelta(seconds=5), received_at=timezone.now(),
        )
        for i in range(devices)
        for k in range(per_device)
    )  # fmt: skip

    slow, log = workers.slow("attribute")
    events_attribute_task.delay()
    wait_for_log(log, "SLOW-HOOK attribute")
    workers.healthy()
    kill(slow)

    took = recover(
        events_attribute_task.delay,
        lambda: not OutcomeEvent.objects.filter(attributed=False).exists(),
        "attribution",
    )
    print(f"\nattribution: every event counted {took:.1f} s after the kill")
    totals = DeviceOutcome.objects.filter(rollout=running).aggregate(
        events=Sum("events"), conversions=Sum("conversions")
    )
    assert totals == {"events": devices * per_device, "conversions": devices // 10}
    assert DeviceOutcome.objects.filter(rollout=running).count() == devices
    # The run that finished moves the ledger's checkpoint just after its last batch commits.
    recover(lambda: None, lambda: ledger_complete_through() is not None, "the checkpoint")


def test_killed_mid_judge__next_run_rolls_back_once_and_alerts_once(
    running, workers, webhook_receiver
):
    from experiments.tasks import judge_rollout

    populate(running, "baseline", 3000, 300)
    populate(running, "challenger-1", 3000, 150)

    slow, log = workers.slow("judge")
    judge_rollout.delay(str(running.pk))
    wait_for_log(log, "SLOW-HOOK judge")
    workers.healthy()
    kill(slow)
    running.refresh_from_db()
    assert running.state == RolloutState.RUNNING  # the killed run's rollback never committed

    def rolled_back():
        running.refresh_from_db()
        return running.state == RolloutState.ROLLED_BACK and len(webhook_receiver.received) >= 1

    took = recover(lambda: judge_rollout.delay(str(running.pk)), rolled_back, "the judge")
    print(f"\njudge: rolled back and alerted {took:.1f} s after the kill")
    time.sleep(3)  # runs still queued find it rolled back and do nothing
    assert running.events.filter(action="rollback").count() == 1
    assert Alert.objects.filter(rollout=running).count() == 1
    assert len(webhook_receiver.received) == 1
    assert running.analyses.filter(action="rolled_back").count() == 1
