"""
End to end through a ramp, with real processes (gunicorn, a Celery worker with beat running the
judge every few seconds, PostgreSQL, Redis, an alert receiver): devices keep arriving and
polling, the challenger's share grows, devices move into it, and every device reports its
outcome seconds after it entered its arm, so at every look the newest devices have not
reported yet. The judge must leave an equal challenger alone however the shares move, and
still roll a harmful one back, with one alert.
"""

import itertools
import random
import threading
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

SDK = "1.5.0"

pytestmark = pytest.mark.e2e


class Fleet:
    """Devices that poll and, some seconds after each new arm, report one outcome in it."""

    def __init__(self, server: str, key: str, rates: dict[str, float], seed: int):
        self.server, self.rates = server, rates
        self.headers = {"Authorization": f"Bearer {key}"}
        self.random = random.Random(seed)
        self.session = requests.Session()
        self.arm_of: dict[str, str] = {}
        self.due: list[tuple[float, str, dict]] = []  # (when, device, event)
        self.lock = threading.Lock()
        self.ids = itertools.count()
        self.pool = ThreadPoolExecutor(max_workers=8)

    def _poll(self, device_id: str) -> tuple[str, dict]:
        response = self.session.get(
            f"{self.server}/api/v1/sdk/assignments",
            params={"device_id": device_id, "sdk_version": SDK},
            headers=self.headers,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return device_id, response.json()["models"][0]

    def poll(self, device_ids: list[str]) -> None:
        for device_id, entry in self.pool.map(self._poll, device_ids):
            arm = (entry["rollout"] or {}).get("arm", BASELINE)
            if self.arm_of.get(device_id) == arm:
                continue
            self.arm_of[device_id] = arm  # a new device, or one that moved: a new outcome
            converted = self.random.random() < self.rates[arm]
            event = {
                "id": f"00000000-0000-4000-8000-{next(self.ids):012d}",
                "flow": entry["flow"],
                "model_id": entry["model_id"],
                "outcome": "Purchased" if converted else "Dismissed",
            }
            self.due.append((time.monotonic() + self.random.uniform(3, 40), device_id, event))

    def _report(self, item) -> None:
        _, device_id, event = item
        response = self.session.post(
            f"{self.server}/api/v1/sdk/events",
            json={
                "device_id": device_id,
                "sdk_version": SDK,
                "events": [{**event, "ts": timezone.now().isoformat()}],
            },
            headers=self.headers,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == 1, response.text

    def report_due(self, *, everything: bool = False) -> None:
        now = time.monotonic()
        ready = [d for d in self.due if everything or d[0] <= now]
        self.due = [d for d in self.due if not (everything or d[0] <= now)]
        list(self.pool.map(self._report, ready))

    def run(self, seconds: float, new_per_second: int, returning_per_second: int, stop=None):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (stop and stop()):
            started = time.monotonic()
            known = list(self.arm_of)
            new = [f"device-{len(known) + i:05d}" for i in range(new_per_second)]
            returning = self.random.sample(known, min(len(known), returning_per_second))
            self.poll(new + returning)
            self.report_due()
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


@pytest.fixture
def ramping_rollout(sdk_setup, webhook_receiver):
    AlertChannel.objects.create(
        app=sdk_setup["flow"].app, name="on-call", kind="webhook", target=webhook_receiver.url
    )
    rollout = services.rollout_create(
        flow=sdk_setup["flow"],
        challengers=[{"model_id": str(sdk_setup["challenger"].pk), "stages": [10, 30, 60]}],
        actor="test",
        auto_advance=True,
        stage_min_minutes=0,
        min_devices_per_arm=100,
        # Advance as soon as 100 devices per arm are in: the ramp comes while most devices
        # are still young, which is what used to make an equal challenger look worse.
        advance_detectable_lift=0.9,
        planned_sample=4000,
    )
    fast_schedule()
    return services.rollout_start(rollout=rollout, actor="test")


def test_equal_challenger__ramped_with_late_outcomes__never_rolled_back(
    sdk_setup, ramping_rollout, server, beat_worker, webhook_receiver
):
    rollout = ramping_rollout
    fleet = Fleet(server, sdk_setup["key"], {BASELINE: 0.2, "challenger-1": 0.2}, seed=4)

    fleet.run(seconds=70, new_per_second=40, returning_per_second=40)
    fleet.report_due(everything=True)
    looks_before = Analysis.objects.filter(rollout=rollout).count()
    wait_until(
        lambda: Analysis.objects.filter(rollout=rollout).count() >= looks_before + 4,
        60,
        "four more judge runs after the last outcome",
        beat_worker,
    )

    rollout.refresh_from_db()
    advances = rollout.events.filter(action="advance")
    assert advances.count() >= 1, "the judge never advanced: the test did not ramp"
    assert {e.actor for e in advances} == {"system"}
    assert rollout.state == RolloutState.RUNNING
    analyses = Analysis.objects.filter(rollout=rollout)
    assert analyses.count() >= 15
    assert "rollback" not in set(analyses.values_list("decision", flat=True))
    assert [a["decision"] for a in webhook_receiver.received] == ["advance"] * advances.count()
    latest = analyses.first()
    challenger = next(a for a in latest.body["arms"] if a["arm"] == "challenger-1")
    assert challenger["metrics"]["conversion"]["strata"] >= 2


def test_harmful_challenger__ramped_with_late_outcomes__rolled_back_once(
    sdk_setup, ramping_rollout, server, beat_worker, webhook_receiver
):
    rollout = ramping_rollout
    fleet = Fleet(server, sdk_setup["key"], {BASELINE: 0.25, "challenger-1": 0.08}, seed=5)

    def rolled_back():
        rollout.refresh_from_db()
        return rollout.state == RolloutState.ROLLED_BACK

    fleet.run(seconds=150, new_per_second=40, returning_per_second=40, stop=rolled_back)
    fleet.report_due(everything=True)
    wait_until(rolled_back, 60, "the automatic rollback", beat_worker)

    event = rollout.events.get(action="rollback")
    assert event.actor == "system"
    analysis = Analysis.objects.get(pk=event.evidence["analysis_id"])
    assert analysis.decision == "rollback"
    wait_until(
        lambda: any(a["decision"] == "rollback" for a in webhook_receiver.received),
        30,
        "the rollback alert",
        beat_worker,
    )
    time.sleep(8)  # further judge runs must not alert again
    assert [a["decision"] for a in webhook_receiver.received].count("rollback") == 1
    assert Alert.objects.filter(rollout=rollout, kind="rollback").count() == 1

    # The rollback reaches every device: on its next poll each gets the baseline, outside
    # any rollout (the servers notice the change within their check interval).
    time.sleep(1.5)
    answers = list(fleet.pool.map(fleet._poll, list(fleet.arm_of)))
    assert {entry["model_id"] for _, entry in answers} == {str(sdk_setup["baseline"].pk)}
    assert {entry["rollout"] is None for _, entry in answers} == {True}
