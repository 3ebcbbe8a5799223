"""
A rollback reaches every server process even when one of them cannot reach Redis (issue #13).

Two real gunicorn servers share the test database: one with the real Redis, one whose REDIS_URL
points at a closed port. The change is committed with its config-version bump in the database;
Redis only carries a copy. So a rollback made through the cut-off server answers 200 and the
healthy server sees it at its next database check, and a rollback made through the healthy
server reaches the cut-off one, which reads the database at every check while Redis is down.
"""

import time

import pytest
import requests
from django.contrib.auth.models import Group, User
from django.db import connection

from controlplane.roles import role_groups_sync
from controlplane.services import api_token_create
from rollout.models import Rollout, RolloutState
from tests.integration.builders import started_rollout

from .processes import process_stop, server_start

pytestmark = pytest.mark.e2e

CHECK_SECONDS = 1  # ROLLOUT_CONFIG_CHECK_SECONDS of the servers (process_env)
DB_CHECK_SECONDS = 10  # ROLLOUT_CONFIG_DB_CHECK_SECONDS: its default
SLACK_SECONDS = 2  # scheduling on 2 cores, and one round of polls
UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens on port 1 of loopback
DEVICES = [f"device-{i}" for i in range(40)]


@pytest.fixture
def running(sdk_setup):
    return started_rollout(sdk_setup, [50])


@pytest.fixture
def servers(running, process_env, tmp_path):
    """A healthy server and one that cannot reach Redis (2 workers each)."""
    env = {**process_env, "ROLLOUT_CONFIG_DB_CHECK_SECONDS": str(DB_CHECK_SECONDS)}
    healthy, healthy_url = server_start(env, tmp_path / "healthy.log")
    cut_off_env = {**env, "REDIS_URL": UNREACHABLE, "CELERY_BROKER_URL": UNREACHABLE}
    try:
        cut_off, cut_off_url = server_start(cut_off_env, tmp_path / "cut-off.log")
    except BaseException:
        process_stop(healthy)
        raise
    yield {"healthy": healthy_url, "cut_off": cut_off_url}
    process_stop(cut_off)
    process_stop(healthy)
    connection.close()


@pytest.fixture
def token(db):
    role_groups_sync()
    user = User.objects.create_user(username="oncall", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="product_manager"))
    return api_token_create(user=user, name="e2e")[1]


def models_served(server: str, key: str, baseline: str) -> dict[str, str]:
    """Every device polls once through the server: what each is told (baseline or challenger)."""
    served = {}
    with requests.Session() as session:
        for device in DEVICES:
            response = session.get(
                f"{server}/api/v1/sdk/assignments",
                params={"device_id": device, "sdk_version": "1.5.0"},
                headers={"Authorization": f"Bearer {key}"},
                timeout=5,
            )
            assert response.status_code == 200, response.text
            model_id = response.json()["models"][0]["model_id"]
            served[device] = "baseline" if model_id == baseline else "challenger"
    return served


def all_baseline_after(servers: dict, key: str, baseline: str, since: float) -> dict[str, float]:
    """Seconds from `since` until every device polled through each server gets the baseline."""
    seen: dict[str, float] = {}
    deadline = since + DB_CHECK_SECONDS + CHECK_SECONDS + SLACK_SECONDS + 10
    while len(seen) < len(servers) and time.monotonic() < deadline:
        for name, url in servers.items():
            if name not in seen and "challenger" not in models_served(url, key, baseline).values():
                seen[name] = time.monotonic() - since
        time.sleep(0.05)
    missing = set(servers) - set(seen)
    assert not missing, f"{missing} still served the challenger after {deadline - since:.0f} s"
    for url in servers.values():  # and it stays so
        assert "challenger" not in models_served(url, key, baseline).values()
    return seen


def challenger_served_through_both(servers: dict, key: str, baseline: str) -> None:
    for name, url in servers.items():
        served = models_served(url, key, baseline)
        share = sum(arm == "challenger" for arm in served.values())
        assert 0 < share < len(DEVICES), f"{name}: {share} of {len(DEVICES)} on the challenger"


def rollback_through(server: str, token: str, rollout: Rollout) -> tuple[requests.Response, float]:
    response = requests.post(
        f"{server}/api/v1/rollouts/{rollout.pk}/rollback",
        json={"reason": "crash reports"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    return response, time.monotonic()


def test_rollback_through_server_without_redis__200__both_servers_follow(
    sdk_setup, running, servers, token
):
    key, baseline = sdk_setup["key"], str(sdk_setup["baseline"].pk)
    challenger_served_through_both(servers, key, baseline)

    response, at = rollback_through(servers["cut_off"], token, running)

    assert response.status_code == 200, response.text
    assert response.json()["state"] == RolloutState.ROLLED_BACK
    running.refresh_from_db()
    assert running.state == RolloutState.ROLLED_BACK
    seen = all_baseline_after(servers, key, baseline, at)
    print(
        f"rollback through the Redis-less server: it served the baseline after "
        f"{seen['cut_off']:.2f} s, the healthy server after {seen['healthy']:.2f} s"
    )
    # The cut-off server reads the database at every check; the healthy one got no copy in
    # Redis, so it sees the change at its next database check.
    assert seen["cut_off"] <= CHECK_SECONDS + SLACK_SECONDS
    assert seen["healthy"] <= DB_CHECK_SECONDS + CHECK_SECONDS + SLACK_SECONDS


def test_rollback_through_healthy_server__server_without_redis_follows_at_next_check(
    sdk_setup, running, servers, token
):
    key, baseline = sdk_setup["key"], str(sdk_setup["baseline"].pk)
    challenger_served_through_both(servers, key, baseline)

    response, at = rollback_through(servers["healthy"], token, running)

    assert response.status_code == 200, response.text
    seen = all_baseline_after(servers, key, baseline, at)
    print(
        f"rollback through the healthy server: it served the baseline after "
        f"{seen['healthy']:.2f} s, the Redis-less server after {seen['cut_off']:.2f} s"
    )
    assert seen["healthy"] <= CHECK_SECONDS + SLACK_SECONDS
    assert seen["cut_off"] <= CHECK_SECONDS + SLACK_SECONDS
