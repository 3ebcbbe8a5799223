"""
The config version: bumped in the database with the change it announces, copied to Redis on
commit (best effort), and watched by each web process through Redis with the database behind it.
"""

import contextlib
import logging
import socket
import threading
import time

import pytest
from django.db import connection, transaction

from controlplane import config_version
from controlplane.config_version import (
    REDIS_RETRY_SECONDS,
    ConfigVersionWatch,
    config_version_bump,
    config_version_published,
    config_version_read,
)
from rollout import services
from rollout.cache import AssignmentCache

pytestmark = pytest.mark.django_db

UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens on port 1 of loopback
FLOW = "onboarding_upsell"


class Boom(Exception):
    pass


@pytest.fixture
def hanging_redis():
    """A TCP server that accepts connections and never answers: a Redis that times out."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):  # look at `stop` now and then
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    stop.set()
    thread.join()
    for sock in accepted:
        sock.close()
    listener.close()


def arm_of(cache: AssignmentCache, key: str) -> str | None:
    """What the process's snapshot says of the flow's rollout (None: baseline only)."""
    rollout = cache.app_for_key(key).flows[FLOW].rollout
    return rollout.id if rollout else None


# --- The bump -------------------------------------------------------------------------------


def test_bump__moves_row_in_the_changes_transaction__redis_copy_on_commit(
    running, django_capture_on_commit_callbacks
):
    before = config_version_read()

    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        services.rollout_rollback(rollout=running, actor="test")
        assert config_version_read() == before + 1
        assert config_version_published() != before + 1

    assert len(callbacks) == 1
    assert config_version_read() == config_version_published() == before + 1


def test_bump__transaction_rolled_back__no_bump_no_copy(
    running, django_capture_on_commit_callbacks
):
    before, published = config_version_read(), config_version_published()

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(Boom),
        transaction.atomic(),
    ):
        services.rollout_rollback(rollout=running, actor="test")
        raise Boom

    assert callbacks == []
    assert config_version_read() == before
    assert config_version_published() == published
    running.refresh_from_db()
    assert running.state == "running"


@pytest.mark.django_db(transaction=True)
def test_bump__committed__other_connections_see_the_row_move_only_with_the_change(running):
    before = config_version_read()

    def read_elsewhere():  # a thread has a connection of its own
        seen = []
        thread = threading.Thread(target=lambda: seen.append(_read_and_close()))
        thread.start()
        thread.join()
        return seen[0]

    with transaction.atomic():
        services.rollout_rollback(rollout=running, actor="test")
        assert read_elsewhere() == before  # not committed yet
    assert read_elsewhere() == before + 1
    assert config_version_published() == before + 1


def _read_and_close():
    try:
        return config_version_read()
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_bump__concurrent_writers__each_gets_a_version_of_its_own():
    config_version_bump()  # the row exists
    results, errors = [], []

    def bump_many():
        try:
            for _ in range(10):
                results.append(config_version_bump())
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=bump_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(results) == list(range(2, 42))
    assert config_version_read() == 41


def test_bump__redis_unreachable__committed_logged_not_raised(
    running, settings, caplog, django_capture_on_commit_callbacks
):
    settings.REDIS_URL = UNREACHABLE
    before = config_version_read()

    with (
        caplog.at_level(logging.WARNING, logger="controlplane.config_version"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.rollout_rollback(rollout=running, actor="test")

    assert config_version_read() == before + 1
    assert "config_version.publish_failed" in caplog.text
    running.refresh_from_db()
    assert running.state == "rolled_back"


def test_rollback_api__redis_unreachable__200_and_committed(
    running, pm_api, settings, django_capture_on_commit_callbacks
):
    settings.REDIS_URL = UNREACHABLE
    before = config_version_read()

    with django_capture_on_commit_callbacks(execute=True):
        response = pm_api.post(
            f"/api/v1/rollouts/{running.pk}/rollback", {"reason": "crash"}, format="json"
        )

    assert response.status_code == 200, response.content
    assert response.json()["state"] == "rolled_back"
    assert config_version_read() == before + 1


# --- The watch of a web process -------------------------------------------------------------


def test_watch__redis_fine__moves_at_next_check_without_a_query(
    settings, django_capture_on_commit_callbacks, django_assert_num_queries
):
    settings.ROLLOUT_CONFIG_DB_CHECK_SECONDS = 10
    with django_capture_on_commit_callbacks(execute=True):
        config_version_bump()
    watch = ConfigVersionWatch()
    assert watch.moved(0.0)  # first check: Redis and the database
    with django_assert_num_queries(0):
        assert not watch.moved(2.0)

    with django_capture_on_commit_callbacks(execute=True):
        version = config_version_bump()

    with django_assert_num_queries(0):
        assert watch.moved(4.0)
    assert watch.version == version
    with django_assert_num_queries(1):  # the database check, when due, agrees
        assert not watch.moved(10.0)


def test_watch__redis_copy_lost__moves_at_the_database_check(
    settings, django_capture_on_commit_callbacks
):
    settings.ROLLOUT_CONFIG_DB_CHECK_SECONDS = 10
    with django_capture_on_commit_callbacks(execute=True):
        config_version_bump()
    watch = ConfigVersionWatch()
    assert watch.moved(0.0)

    with django_capture_on_commit_callbacks(execute=False):  # the copy to Redis never runs
        version = config_version_bump()

    assert not watch.moved(2.0)
    assert not watch.moved(8.0)
    assert watch.moved(10.0)
    assert watch.version == version
    assert not watch.moved(12.0)


def test_watch__redis_unreachable__database_at_every_check_redis_left_alone(settings, monkeypatch):
    settings.ROLLOUT_CONFIG_DB_CHECK_SECONDS = 10
    settings.REDIS_URL = UNREACHABLE
    redis_reads = []
    read = config_version.config_version_published
    monkeypatch.setattr(
        config_version, "config_version_published", lambda: redis_reads.append(1) or read()
    )
    watch = ConfigVersionWatch()
    assert watch.moved(0.0)
    assert len(redis_reads) == 1

    version = config_version_bump()  # made by another process; its copy to Redis is lost here

    assert watch.moved(2.0)  # the database, at the next check
    assert watch.version == version
    config_version_bump()
    assert watch.moved(4.0)
    assert len(redis_reads) == 1  # Redis is not tried again ...
    watch.moved(REDIS_RETRY_SECONDS)
    assert len(redis_reads) == 2  # ... until the retry time


def test_watch__redis_hangs__a_check_waits_a_short_timeout_once(settings, hanging_redis):
    settings.REDIS_URL = hanging_redis
    version = config_version_bump()
    watch = ConfigVersionWatch()

    started = time.monotonic()
    assert watch.moved(0.0)
    first = time.monotonic() - started
    started = time.monotonic()
    watch.moved(2.0)
    second = time.monotonic() - started

    print(f"check with a hanging Redis: {first:.3f} s, then {second:.3f} s")
    assert watch.version == version
    assert first < 1.0  # the short read timeout, not the 2 s of the writer's client
    assert second < 0.1  # Redis left alone


def test_watch__no_redis__database_at_every_check(settings, django_assert_num_queries):
    settings.REDIS_URL = ""
    watch = ConfigVersionWatch()
    assert watch.moved(0.0)
    version = config_version_bump()

    with django_assert_num_queries(1):
        assert watch.moved(2.0)
    assert watch.version == version


def test_watch__redis_ahead_of_a_restored_database__one_rebuild_not_one_per_check(
    settings, django_capture_on_commit_callbacks
):
    settings.ROLLOUT_CONFIG_DB_CHECK_SECONDS = 10
    config_version_published_set(1000)  # left from before the database was restored
    version = config_version_bump()
    watch = ConfigVersionWatch()

    assert watch.moved(0.0)
    assert watch.version == version  # the database wins
    assert not watch.moved(2.0)
    assert not watch.moved(10.0)
    with django_capture_on_commit_callbacks(execute=True):
        version = config_version_bump()  # the next change overwrites the stale copy
    assert watch.moved(12.0)
    assert watch.version == version


def test_watch__copies_land_out_of_order__older_one_ignored(settings):
    settings.ROLLOUT_CONFIG_DB_CHECK_SECONDS = 10
    config_version_bump()
    version = config_version_bump()
    config_version_published_set(version)
    watch = ConfigVersionWatch()
    assert watch.moved(0.0)

    config_version_published_set(version - 1)

    assert not watch.moved(2.0)
    assert watch.version == version


def config_version_published_set(value: int) -> None:
    from django.conf import settings

    config_version._redis(settings.REDIS_URL, 2.0).set(config_version.REDIS_KEY, value)


# --- A web process's snapshot -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_snapshot__rollback_whose_redis_copy_failed__healthy_process_follows_within_db_check(
    running, sdk_setup, settings
):
    settings.ROLLOUT_CONFIG_DB_CHECK_SECONDS = 10
    real = settings.REDIS_URL
    now = [0.0]
    healthy = AssignmentCache(clock=lambda: now[0])
    assert arm_of(healthy, sdk_setup["key"]) == str(running.pk)

    settings.REDIS_URL = UNREACHABLE  # the process that rolls back cannot reach Redis
    services.rollout_rollback(rollout=running, actor="test")
    settings.REDIS_URL = real

    now[0] = settings.ROLLOUT_CONFIG_CHECK_SECONDS
    assert arm_of(healthy, sdk_setup["key"]) == str(running.pk)  # Redis said nothing yet
    now[0] = settings.ROLLOUT_CONFIG_DB_CHECK_SECONDS
    assert arm_of(healthy, sdk_setup["key"]) is None


@pytest.mark.django_db(transaction=True)
def test_snapshot__process_without_redis__follows_a_rollback_at_the_next_check(
    running, sdk_setup, settings
):
    real = settings.REDIS_URL
    now = [0.0]
    settings.REDIS_URL = UNREACHABLE
    cut_off = AssignmentCache(clock=lambda: now[0])
    assert arm_of(cut_off, sdk_setup["key"]) == str(running.pk)

    settings.REDIS_URL = real  # the change is made by a healthy process
    services.rollout_rollback(rollout=running, actor="test")
    settings.REDIS_URL = UNREACHABLE

    now[0] = settings.ROLLOUT_CONFIG_CHECK_SECONDS
    assert arm_of(cut_off, sdk_setup["key"]) is None
