"""
`POST /api/v1/rollouts/<id>/analyze` answers within a bound: it never catches up the ledger in
the request (no wait on a worker's flush lease, no attribution), it runs under a deadline on
its database time, and it acts like the periodic job, except that a look on stale data only
rolls back.
"""

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from experiments import judge
from experiments.events.attribution import (
    ledger_catch_up,
    ledger_checkpoint_advance,
    ledger_complete_through,
)
from experiments.models import Analysis
from rollout.exposures import BUFFER_KEY, FLUSH_LOCK_KEY, _redis, exposure_note
from rollout.models import Exposure, RolloutState

from .builders import bucket_in, populate, started_rollout


def _auto_advancing(sdk_setup):
    rollout = started_rollout(sdk_setup, [20, 50], auto_advance=True, stage_min_minutes=0)
    populate(rollout, "baseline", 4000, 400)
    populate(rollout, "challenger-1", 1000, 100)
    return rollout


def test_analyze__flush_lease_held_by_a_dead_worker__answers_at_once_without_catching_up(
    pm_api, running, settings
):
    populate(running, "baseline", 500, 50)
    populate(running, "challenger-1", 500, 50)
    ledger_catch_up()  # the jobs ran a moment ago
    redis = _redis(settings.REDIS_URL)
    redis.set(FLUSH_LOCK_KEY, "a-killed-worker", px=300_000)
    exposure_note(
        rollout_id=str(running.pk), device_id="late", arm="baseline",
        bucket=bucket_in(running, "baseline"), sdk_version="1.5.0",
    )  # fmt: skip

    started = time.monotonic()
    response = pm_api.post(f"/api/v1/rollouts/{running.pk}/analyze")
    took = time.monotonic() - started

    assert response.status_code == 200, response.content
    assert took < 2
    assert redis.llen(BUFFER_KEY) == 1  # left to the flush job
    assert not Exposure.objects.filter(device_id="late").exists()
    stored = Analysis.objects.get()
    assert stored.watermark <= stored.computed_at
    assert response.json()["watermark"] == stored.watermark.isoformat()


def test_analyze__database_too_slow__json_503_within_the_deadline(
    pm_api, running, settings, monkeypatch
):
    settings.ANALYZE_REQUEST_TIMEOUT_SECONDS = 0.5
    populate(running, "baseline", 500, 50)
    original = judge.analysis_input

    def slow_input(*args, **kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(5)")
        return original(*args, **kwargs)

    monkeypatch.setattr(judge, "analysis_input", slow_input)

    started = time.monotonic()
    response = pm_api.post(f"/api/v1/rollouts/{running.pk}/analyze")
    took = time.monotonic() - started

    assert response.status_code == 503
    assert response.json()["error"] == "analysis_timeout"
    assert "0.5 s" in response.json()["detail"]
    assert took < 2
    assert Analysis.objects.count() == 0


def test_analyze__fresh_ledger__advances_like_the_periodic_job(pm_api, sdk_setup):
    rollout = _auto_advancing(sdk_setup)
    ledger_catch_up()

    body = pm_api.post(f"/api/v1/rollouts/{rollout.pk}/analyze").json()

    assert body["decision"] == "advance"
    assert body["action"] == "advanced"
    assert rollout.arms.get().share == 5_000


def test_analyze__stale_ledger__holds_the_advance_and_says_why(pm_api, sdk_setup):
    rollout = _auto_advancing(sdk_setup)
    ledger_checkpoint_advance(timezone.now() - timedelta(minutes=10))

    body = pm_api.post(f"/api/v1/rollouts/{rollout.pk}/analyze").json()

    assert body["decision"] == "advance"
    assert body["action"] == "held"
    assert any("advance held" in note for note in body["notes"])
    assert any("data complete up to" in note for note in body["notes"])
    assert rollout.arms.get().share == 2_000


def test_analyze__stale_ledger__still_rolls_back_a_harmful_challenger(pm_api, running):
    populate(running, "baseline", 3000, 300)
    populate(running, "challenger-1", 3000, 150)
    ledger_checkpoint_advance(timezone.now() - timedelta(minutes=10))

    body = pm_api.post(f"/api/v1/rollouts/{running.pk}/analyze").json()

    assert body["action"] == "rolled_back"
    running.refresh_from_db()
    assert running.state == RolloutState.ROLLED_BACK


@pytest.mark.django_db(transaction=True)
def test_judge__redis_unreachable__analyses_without_raising_watermark_not_moved(running, settings):
    populate(running, "baseline", 500, 50)
    ledger_catch_up()
    complete = ledger_complete_through()
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    ledger_catch_up(wait=0)
    analysis = judge.rollout_analyze(rollout=running, act=False)

    assert ledger_complete_through() == complete  # buffered notes may be missing: not moved
    assert analysis.watermark == complete < analysis.computed_at
