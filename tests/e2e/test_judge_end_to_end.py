"""
End to end, with real processes: gunicorn serves simulated devices, a Celery worker with beat
runs the judge on its own schedule, PostgreSQL and Redis underneath, an alert receiver on
loopback. A harmful challenger (true conversion 7 % against 10 %) is rolled back by itself, and
every device gets the baseline again. (That a challenger as good as the baseline never is, even
while the shares grow, is test_judge_ramp_end_to_end.py's.)
"""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.utils import timezone

from experiments.models import Alert, AlertChannel, Analysis
from rollout import services
from rollout.arms import BASELINE
from rollout.models import RolloutState

from .processes import fast_schedule, wait_until

pytestmark = pytest.mark.e2e

DEVICES = 5000
SDK = "1.5.0"


def simulate(server, key, rate_by_arm: dict[str, float]) -> dict[str, str]:
    """Every device polls; then each runs what it was given and reports one outcome with it.

    Exactly the true rate of each arm's devices convert (the k-th device of an arm converts
    when k % 100 < rate * 100), so the test does not hinge on a lucky sample.
    """
    session = requests.Session()
    headers = {"Authorization": f"Bearer {key}"}

    def poll(index: int) -> tuple[str, dict]:
        device_id = f"device-{index:05d}"
        response = session.get(
            f"{server}/api/v1/sdk/assignments",
            params={"device_id": device_id, "sdk_version": SDK},
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return device_id, response.json()["models"][0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        entries = dict(pool.map(poll, range(DEVICES)))
    position: dict[str, int] = {}
    reports = []
    for index, (device_id, entry) in enumerate(sorted(entries.items())):
        arm = entry["rollout"]["arm"]
        k = position[arm] = position.get(arm, -1) + 1
        converted = k % 100 < round(rate_by_arm[arm] * 100)
        reports.append((index, device_id, entry, converted))

    def report(item) -> None:
        index, device_id, entry, converted = item
        event = {
            "id": f"00000000-0000-4000-8000-{index:012d}",
            "flow": entry["flow"],
            "model_id": entry["model_id"],
            "outcome": "Purchased" if converted else "Dismissed",
            "ts": timezone.now().isoformat(),
        }
        if converted:
            event["value"] = 4.99
        response = session.post(
            f"{server}/api/v1/sdk/events",
            json={"device_id": device_id, "sdk_version": SDK, "events": [event]},
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == 1, response.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(report, reports))
    return {device_id: entry["rollout"]["arm"] for device_id, entry in entries.items()}


@pytest.fixture
def rollout_running(sdk_setup, webhook_receiver):
    AlertChannel.objects.create(
        app=sdk_setup["flow"].app, name="on-call", kind="webhook", target=webhook_receiver.url
    )
    rollout = services.rollout_create(
        flow=sdk_setup["flow"],
        challengers=[{"model_id": str(sdk_setup["challenger"].pk), "stages": [50]}],
        actor="test",
        planned_sample=DEVICES,
    )
    fast_schedule()
    return services.rollout_start(rollout=rollout, actor="test")


def test_harmful_challenger__judge_rolls_back_by_itself_and_alerts_once(
    sdk_setup, rollout_running, server, beat_worker, webhook_receiver
):
    rollout = rollout_running
    arms = simulate(server, sdk_setup["key"], {BASELINE: 0.10, "challenger-1": 0.07})
    assert 0.45 < sum(arm == "challenger-1" for arm in arms.values()) / DEVICES < 0.55

    def rolled_back():
        rollout.refresh_from_db()
        return rollout.state == RolloutState.ROLLED_BACK

    wait_until(rolled_back, 120, "the automatic rollback", beat_worker)
    event = rollout.events.get(action="rollback")
    assert event.actor == "system"
    analysis = Analysis.objects.get(pk=event.evidence["analysis_id"])
    assert analysis.decision == "rollback"
    challenger = next(a for a in analysis.body["arms"] if a["arm"] == "challenger-1")
    assert challenger["metrics"]["conversion"]["significant"] is True
    assert challenger["metrics"]["conversion"]["direction"] == "worse"
    wait_until(lambda: len(webhook_receiver.received) >= 1, 30, "the alert", beat_worker)
    time.sleep(10)  # further judge runs must not alert again
    assert len(webhook_receiver.received) == 1
    assert Alert.objects.filter(rollout=rollout).count() == 1
    assert webhook_receiver.received[0]["decision"] == "rollback"

    baseline = str(sdk_setup["baseline"].pk)
    time.sleep(1.5)  # the servers' snapshot check interval

    def next_poll(device_id):
        response = requests.get(
            f"{server}/api/v1/sdk/assignments",
            params={"device_id": device_id, "sdk_version": SDK},
            headers={"Authorization": f"Bearer {sdk_setup['key']}"},
            timeout=30,
        )
        return response.json()["models"][0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        entries = list(pool.map(next_poll, arms))
    assert {e["model_id"] for e in entries} == {baseline}
    assert {e["rollout"] is None for e in entries} == {True}
