"""Concurrent changes to one rollout on real PostgreSQL: serialised, and the loser gets a 409."""

import threading

import pytest
from django.db import connection, connections, transaction

from controlplane.errors import Conflict
from rollout import services
from rollout.models import Rollout, RolloutEvent, RolloutState

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def running(sdk_setup):
    rollout = services.rollout_create(
        flow=sdk_setup["flow"],
        challengers=[{"model_id": str(sdk_setup["challenger"].pk)}],
        actor="test",
    )
    return services.rollout_start(rollout=rollout, actor="test")


def in_thread(target):
    """Run target in a thread with its own database connection; return (thread, results)."""
    results = {}

    def run():
        try:
            results["value"] = target()
        except Exception as error:
            results["error"] = error
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results


def test_change__row_locked_by_another_transaction__409_not_a_wait(running):
    assert connection.vendor == "postgresql"
    locked, release = threading.Event(), threading.Event()

    def hold_lock():
        with transaction.atomic():
            Rollout.objects.select_for_update().get(pk=running.pk)
            locked.set()
            release.wait(10)

    thread, _ = in_thread(hold_lock)
    assert locked.wait(10)
    try:
        with pytest.raises(Conflict) as error:
            services.rollout_pause(rollout=running, actor="test")
    finally:
        release.set()
        thread.join(10)

    assert error.value.code == "concurrent_change"
    assert Rollout.objects.get(pk=running.pk).state == RolloutState.RUNNING


def test_advance__eight_concurrent_requests_same_revision__exactly_one_wins(running):
    barrier = threading.Barrier(8)
    revision = running.revision

    def advance():
        barrier.wait(10)
        return services.rollout_advance(rollout=running, actor="test", expected_revision=revision)

    threads = [in_thread(advance) for _ in range(8)]
    for thread, _ in threads:
        thread.join(30)

    outcomes = [results for _, results in threads]
    winners = [r for r in outcomes if "value" in r]
    losers = [r["error"] for r in outcomes if "error" in r]
    assert len(winners) == 1
    assert len(losers) == 7
    assert {type(e) for e in losers} == {Conflict}
    assert {e.code for e in losers} <= {"stale_revision", "concurrent_change"}
    rollout = Rollout.objects.get(pk=running.pk)
    assert rollout.arms.get().share == 500
    assert RolloutEvent.objects.filter(rollout=rollout, action="advance").count() == 1


def test_start__two_drafts_of_one_flow_at_once__only_one_runs(sdk_setup):
    drafts = [
        services.rollout_create(
            flow=sdk_setup["flow"],
            challengers=[{"model_id": str(sdk_setup["challenger"].pk)}],
            actor="test",
        )
        for _ in range(2)
    ]
    barrier = threading.Barrier(2)

    def start(draft):
        barrier.wait(10)
        return services.rollout_start(rollout=draft, actor="test")

    threads = [in_thread(lambda d=d: start(d)) for d in drafts]
    for thread, _ in threads:
        thread.join(30)

    errors = [r["error"] for _, r in threads if "error" in r]
    assert len(errors) == 1
    assert isinstance(errors[0], Conflict)
    assert Rollout.objects.filter(state=RolloutState.RUNNING).count() == 1
