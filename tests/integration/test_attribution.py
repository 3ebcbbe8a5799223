"""Attribution: outcome events become per-device outcomes of rollout arms, exactly once."""

import random
import threading
import uuid
from datetime import timedelta
from importlib import import_module

import pytest
from django.apps import apps as django_apps
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from experiments.events import attribution
from experiments.events.attribution import events_attribute, ledger_catch_up
from experiments.events.store import EventBatch, EventRow, events_write
from experiments.models import DeviceOutcome, OutcomeEvent
from experiments.selectors import arm_sufficient_statistics, exposure_counts
from rollout import services
from rollout.cache import assignment_cache
from rollout.exposures import exposure_buffer_flush
from rollout.models import Exposure, Rollout
from rollout.poll import device_assignments
from tests.integration.counting_reference import counting_reference

pytestmark = pytest.mark.django_db

SKEW = timedelta(seconds=300)  # EVENT_CLOCK_SKEW_SECONDS
WINDOW = timedelta(hours=72)  # Flow.attribution_window_hours


def start_rollout(setup, stages=(50,)):
    rollout = services.rollout_create(
        flow=setup["flow"],
        challengers=[{"model_id": str(setup["challenger"].pk), "stages": list(stages)}],
        actor="test",
    )
    return services.rollout_start(rollout=rollout, actor="test")


def expose(setup, devices) -> dict[str, str]:
    """Poll each device through the endpoint's code, flush the ledger; return device → arm."""
    assignment_cache.clear()
    doc = assignment_cache.app_for_key(setup["key"])
    arms = {}
    for device in devices:
        body = device_assignments(
            doc, device_id=device, sdk=(1, 5, 0), sdk_text="1.5.0", base_url="http://testserver/"
        )
        arms[device] = body["models"][0]["rollout"]["arm"]
    exposure_buffer_flush()
    return arms


def one_per_arm(setup) -> dict[str, str]:
    """Expose devices until each arm has one; return arm → device."""
    arms = expose(setup, [f"device-{i}" for i in range(40)])
    chosen = {}
    for device, arm in arms.items():
        chosen.setdefault(arm, device)
    assert set(chosen) == {"baseline", "challenger-1"}
    return chosen


def report(setup, device, *, outcome="Purchased", at, model_id=None, value=None, received=None):
    """Store one event as ingestion does (unattributed); return its event id."""
    event_id = uuid.uuid4()
    events_write(
        EventBatch(
            app_id=setup["flow"].app_id,
            device_id=device,
            sdk_version="1.5.0",
            received_at=received or timezone.now(),
            events=[
                EventRow(
                    event_id=str(event_id),
                    flow_id=setup["flow"].pk,
                    attributed=False,
                    outcome=outcome,
                    occurred_at=at,
                    model_id=None if model_id is None else str(model_id),
                    value=value,
                )
            ],
        )
    )
    return event_id


def outcome_of(rollout, device) -> dict:
    return DeviceOutcome.objects.filter(rollout=rollout, device_id=device).values(
        "arm",
        "events",
        "conversions",
        "value_sum",
        "model_errors",
        "ran_assigned_model",
        "outcome_counts",
        "last_event_at",
    )[0]


def backdate(rollout, since):
    """Pretend the rollout started, and its devices entered their arms, at `since`."""
    Rollout.objects.filter(pk=rollout.pk).update(started_at=since, stage_started_at=since)
    Exposure.objects.filter(rollout=rollout).update(arm_since=since, first_exposed_at=since)
    rollout.refresh_from_db()


@pytest.fixture
def running(sdk_setup):
    rollout = start_rollout(sdk_setup)
    devices = one_per_arm(sdk_setup)
    since = timezone.now() - timedelta(hours=1)
    backdate(rollout, since)
    return {
        **sdk_setup,
        "rollout": rollout,
        "since": since,
        "b": devices["baseline"],
        "c": devices["challenger-1"],
    }


def test_attribute__exposed_devices__aggregated_per_device_and_arm(running):
    since, baseline_model = running["since"], running["baseline"].pk
    report(
        running, running["b"], at=since + timedelta(minutes=1), model_id=baseline_model, value=4.99
    )
    report(running, running["b"], outcome="Dismissed", at=since + timedelta(minutes=9))
    report(
        running, running["b"], at=since + timedelta(minutes=5), model_id=baseline_model, value=1.0
    )
    report(running, running["c"], outcome="model_error", at=since + timedelta(minutes=2))
    report(running, running["c"], outcome="Dismissed", at=since + timedelta(minutes=3), value=0.5)

    settled = events_attribute()

    assert settled == 5
    assert outcome_of(running["rollout"], running["b"]) == {
        "arm": "baseline",
        "events": 3,
        "conversions": 2,
        "value_sum": pytest.approx(5.99),
        "model_errors": 0,
        "ran_assigned_model": True,
        "outcome_counts": {"Purchased": 2, "Dismissed": 1},
        "last_event_at": since + timedelta(minutes=9),
    }
    assert outcome_of(running["rollout"], running["c"]) == {
        "arm": "challenger-1",
        "events": 2,
        "conversions": 0,
        "value_sum": 0.5,
        "model_errors": 1,
        "ran_assigned_model": False,
        "outcome_counts": {"model_error": 1, "Dismissed": 1},
        "last_event_at": since + timedelta(minutes=3),
    }
    marks = set(OutcomeEvent.objects.values_list("device_id", "attributed", "rollout_id", "arm"))
    assert marks == {
        (running["b"], True, running["rollout"].pk, "baseline"),
        (running["c"], True, running["rollout"].pk, "challenger-1"),
    }


def test_attribute__challenger_ran__ran_assigned_model_true(running):
    report(
        running,
        running["c"],
        at=running["since"] + timedelta(minutes=1),
        model_id=running["challenger"].pk,
    )

    events_attribute()

    assert outcome_of(running["rollout"], running["c"])["ran_assigned_model"] is True


@pytest.mark.parametrize(
    ("offset", "counted"),
    [
        (-SKEW - timedelta(seconds=1), False),
        (-SKEW + timedelta(seconds=1), True),
        (WINDOW - timedelta(seconds=1), True),
        (WINDOW + timedelta(seconds=1), False),
    ],
)
def test_attribute__event_time_against_arm_window__counted_only_inside(running, offset, counted):
    since = running["since"] - WINDOW  # so that every offset is in the past
    backdate(running["rollout"], since - SKEW - timedelta(minutes=1))
    Exposure.objects.filter(rollout=running["rollout"]).update(arm_since=since)
    report(running, running["b"], at=since + offset)

    settled = events_attribute()

    assert settled == 1
    event = OutcomeEvent.objects.get()
    assert event.attributed is True
    assert (event.rollout_id, event.arm) == (
        (running["rollout"].pk, "baseline") if counted else (None, "")
    )
    rows = DeviceOutcome.objects.filter(rollout=running["rollout"])
    assert [row.events for row in rows] == ([1] if counted else [])


def test_attribute__device_not_comparable__not_counted(running):
    Exposure.objects.filter(device_id=running["c"]).update(comparable=False)
    report(running, running["c"], at=running["since"] + timedelta(minutes=1))
    report(running, running["b"], at=running["since"] + timedelta(minutes=1))

    assert events_attribute() == 2

    assert list(DeviceOutcome.objects.values_list("device_id", "events")) == [(running["b"], 1)]
    assert OutcomeEvent.objects.get(device_id=running["c"]).rollout_id is None


def test_attribute__exposure_still_buffered__waits_then_counted_after_flush(running, client):
    import json

    event = {
        "id": str(uuid.uuid4()),
        "flow": "onboarding_upsell",
        "outcome": "Purchased",
        "ts": (timezone.now() - timedelta(seconds=30)).isoformat(),
    }
    assignment_cache.clear()
    response = client.post(
        "/api/v1/sdk/events",
        data=json.dumps({"device_id": "new-device", "sdk_version": "1.5.0", "events": [event]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {running['key']}",
    )
    arm = response.json()["assignments"]["models"][0]["rollout"]["arm"]

    assert events_attribute() == 0
    assert OutcomeEvent.objects.get().attributed is False

    exposure_buffer_flush()
    assert events_attribute() == 1

    assert outcome_of(running["rollout"], "new-device")["arm"] == arm
    assert outcome_of(running["rollout"], "new-device")["conversions"] == 1


def test_attribute__never_exposed__settled_with_no_rollout_after_patience(running, settings):
    received = timezone.now() - timedelta(seconds=settings.EVENT_ATTRIBUTION_PATIENCE_SECONDS)
    old = report(running, "ghost", at=received, received=received - timedelta(seconds=1))
    fresh = report(running, "ghost", at=timezone.now())

    assert events_attribute() == 1

    assert OutcomeEvent.objects.get(event_id=old).attributed is True
    assert OutcomeEvent.objects.get(event_id=old).rollout_id is None
    assert OutcomeEvent.objects.get(event_id=fresh).attributed is False
    assert DeviceOutcome.objects.count() == 0


def test_attribute__waiting_events__do_not_hold_up_later_ones(running):
    for _ in range(5):
        report(running, "ghost", at=timezone.now())
    later = report(running, running["b"], at=running["since"] + timedelta(minutes=1))

    assert events_attribute(batch=2) == 1

    assert OutcomeEvent.objects.get(event_id=later).arm == "baseline"
    assert OutcomeEvent.objects.filter(attributed=False).count() == 5


def test_attribute__run_again__changes_nothing(running):
    report(running, running["b"], at=running["since"] + timedelta(minutes=1), value=2.0)
    report(running, running["c"], at=running["since"] + timedelta(minutes=1), value=3.0)
    events_attribute()
    before = sorted(DeviceOutcome.objects.values_list("device_id", "events", "value_sum"))

    assert events_attribute() == 0
    assert ledger_catch_up() == 0

    after = sorted(DeviceOutcome.objects.values_list("device_id", "events", "value_sum"))
    assert after == before == sorted([(running["b"], 1, 2.0), (running["c"], 1, 3.0)])


def test_attribute__later_events__added_to_the_device_totals(running):
    since = running["since"]
    report(running, running["b"], at=since + timedelta(minutes=1), value=2.0)
    report(running, running["b"], outcome="Dismissed", at=since + timedelta(minutes=2))
    events_attribute()
    report(running, running["b"], at=since + timedelta(minutes=30), value=1.5)
    report(running, running["b"], outcome="model_error", at=since + timedelta(minutes=20))

    assert events_attribute() == 2

    row = outcome_of(running["rollout"], running["b"])
    assert (row["events"], row["conversions"], row["value_sum"], row["model_errors"]) == (
        4,
        2,
        3.5,
        1,
    )
    assert row["outcome_counts"] == {"Purchased": 2, "Dismissed": 1, "model_error": 1}
    assert row["last_event_at"] == since + timedelta(minutes=30)


def test_attribute__device_moved_to_another_arm__row_starts_again_for_new_arm(running):
    device, since = running["b"], running["since"]
    report(running, device, at=since + timedelta(minutes=1), value=9.0)
    events_attribute()
    moved = since + timedelta(minutes=30)
    Exposure.objects.filter(device_id=device).update(arm="challenger-1", arm_since=moved)
    report(running, device, outcome="Dismissed", at=moved + timedelta(minutes=1))
    report(running, device, at=since + timedelta(minutes=2))  # before the move: not counted

    assert events_attribute() == 2

    row = outcome_of(running["rollout"], device)
    assert (row["arm"], row["events"], row["value_sum"], row["outcome_counts"]) == (
        "challenger-1",
        1,
        0.0,
        {"Dismissed": 1},
    )


def test_attribute__rolled_back_rollout__counts_only_events_before_the_end(running):
    services.rollout_rollback(rollout=running["rollout"], actor="test")
    running["rollout"].refresh_from_db()
    ended = running["rollout"].ended_at
    before = report(running, running["c"], at=ended - timedelta(minutes=1))
    after = report(running, running["c"], at=ended + SKEW + timedelta(minutes=1))

    assert events_attribute() == 2

    assert OutcomeEvent.objects.get(event_id=before).arm == "challenger-1"
    assert OutcomeEvent.objects.get(event_id=after).rollout_id is None
    assert outcome_of(running["rollout"], running["c"])["events"] == 1


def test_attribute__completed_rollout__late_event_from_before_the_end_counted(running, client):
    rollout = services.rollout_promote(rollout=running["rollout"], actor="test")
    ended = rollout.ended_at
    late = {
        "id": str(uuid.uuid4()),
        "flow": "onboarding_upsell",
        "outcome": "Purchased",
        "ts": (ended - timedelta(minutes=10)).isoformat(),
    }
    assignment_cache.clear()
    response = client.post(
        "/api/v1/sdk/events",
        data={"device_id": running["c"], "sdk_version": "1.5.0", "events": [late]},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {running['key']}",
    )
    assert response.json()["accepted"] == 1

    assert events_attribute() == 1

    assert OutcomeEvent.objects.get().arm == "challenger-1"
    assert outcome_of(rollout, running["c"])["conversions"] == 1


def test_attribute__event_before_rollout_started__settled_at_once(running):
    started = running["rollout"].started_at
    report(running, running["b"], at=started - SKEW - timedelta(hours=1))

    assert events_attribute() == 1

    assert OutcomeEvent.objects.get().rollout_id is None
    assert DeviceOutcome.objects.count() == 0


def test_attribute__bigger_batch__same_number_of_queries(running):
    arms = expose(running, [f"many-{i}" for i in range(150)])
    Exposure.objects.update(arm_since=running["since"])

    def queries_for(devices):
        for device in devices:
            report(running, device, at=running["since"] + timedelta(minutes=1), value=1.0)
        with CaptureQueriesContext(connection) as captured:
            assert events_attribute() == len(devices)
        return len(captured)

    # Events are marked with one UPDATE per arm they count for: both sets reach both arms.
    first_of_each = [
        next(d for d, arm in arms.items() if arm == name) for name in set(arms.values())
    ]
    small = queries_for(first_of_each)
    large = queries_for([device for device in arms if device not in first_of_each])

    assert small == large
    assert large <= 12


def test_ledger_catch_up__polled_and_reported__counted(sdk_setup, client):
    import json

    rollout = start_rollout(sdk_setup, stages=(100,))
    assignment_cache.clear()
    client.get(
        "/api/v1/sdk/assignments",
        {"device_id": "IDFV-9", "sdk_version": "1.5.0"},
        HTTP_AUTHORIZATION=f"Bearer {sdk_setup['key']}",
    )
    event = {
        "id": str(uuid.uuid4()),
        "flow": "onboarding_upsell",
        "outcome": "Purchased",
        "ts": timezone.now().isoformat(),
        "value": 4.99,
        "model_id": str(sdk_setup["challenger"].pk),
    }
    client.post(
        "/api/v1/sdk/events",
        data=json.dumps({"device_id": "IDFV-9", "sdk_version": "1.5.0", "events": [event]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {sdk_setup['key']}",
    )

    assert ledger_catch_up() == 1

    row = outcome_of(rollout, "IDFV-9")
    assert (row["arm"], row["conversions"], row["value_sum"], row["ran_assigned_model"]) == (
        "challenger-1",
        1,
        4.99,
        True,
    )


@pytest.mark.django_db(transaction=True)
def test_attribute__concurrent_runs__every_event_counted_once(sdk_setup):
    assert connection.vendor == "postgresql"
    rollout = start_rollout(sdk_setup)
    devices = list(expose(sdk_setup, [f"device-{i}" for i in range(30)]))
    since = timezone.now() - timedelta(hours=1)
    backdate(rollout, since)
    per_device = 20
    for index in range(per_device):
        for device in devices:
            outcome = "Purchased" if index % 4 == 0 else "Dismissed"
            report(
                sdk_setup, device, outcome=outcome, at=since + timedelta(seconds=index), value=1.0
            )
    barrier = threading.Barrier(4)
    settled = [0] * 4
    errors = []

    def run(slot):
        try:
            barrier.wait(10)
            while count := events_attribute(batch=37):
                settled[slot] += count
        except Exception as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert errors == []
    assert sum(settled) == per_device * len(devices)
    assert OutcomeEvent.objects.filter(attributed=False).count() == 0
    rows = list(DeviceOutcome.objects.filter(rollout=rollout))
    assert len(rows) == len(devices)
    assert {row.events for row in rows} == {per_device}
    assert {row.conversions for row in rows} == {per_device // 4}
    assert {row.value_sum for row in rows} == {float(per_device)}
    assert {tuple(sorted(row.outcome_counts.items())) for row in rows} == {
        (("Dismissed", per_device * 3 // 4), ("Purchased", per_device // 4))
    }


def test_events_attribute_task__buffered_exposure__flushed_and_counted(sdk_setup):
    from experiments.tasks import events_attribute_task

    rollout = start_rollout(sdk_setup, stages=(100,))
    assignment_cache.clear()
    doc = assignment_cache.app_for_key(sdk_setup["key"])
    device_assignments(
        doc, device_id="IDFV-3", sdk=(1, 5, 0), sdk_text="1.5.0", base_url="http://testserver/"
    )  # the exposure is only in the Redis buffer
    report(sdk_setup, "IDFV-3", at=timezone.now(), value=2.5)

    events_attribute_task.delay()

    row = outcome_of(rollout, "IDFV-3")
    assert (row["arm"], row["events"], row["value_sum"]) == ("challenger-1", 1, 2.5)


# ------------------------------------------------------- outcome rows follow the ledger


def ledger_reference(rollout, labels=()) -> dict:
    """Per-arm, per-stratum sums the slow way: every exposure judged by the pure rule of
    experiments.counting, its outcome row checked against the ledger one by one."""
    return counting_reference(rollout, labels)


def assert_rows_name_current_arms(rollout):
    exposures = {
        e.device_id: (e.arm, e.comparable) for e in Exposure.objects.filter(rollout=rollout)
    }
    for row in DeviceOutcome.objects.filter(rollout=rollout):
        assert exposures[row.device_id] == (row.arm, True), row.device_id


def reported_and_attributed(setup, devices, since):
    for index, device in enumerate(devices):
        outcome = "Purchased" if index % 3 == 0 else "Dismissed"
        report(setup, device, outcome=outcome, at=since + timedelta(minutes=1), value=1.0 + index)
    assert events_attribute() == len(devices)


def test_share_grows__moved_devices_rows_deleted_others_kept(sdk_setup):
    rollout = start_rollout(sdk_setup, stages=(10, 50))
    devices = [f"device-{i}" for i in range(300)]
    before = expose(sdk_setup, devices)
    since = timezone.now() - timedelta(hours=1)
    backdate(rollout, since)
    reported_and_attributed(sdk_setup, devices, since)
    assert DeviceOutcome.objects.filter(rollout=rollout).count() == 300

    rollout = services.rollout_advance(rollout=rollout, actor="test")
    after = expose(sdk_setup, devices)

    moved = {d for d in devices if before[d] != after[d]}
    assert moved and all(before[d] == "baseline" for d in moved)
    rows = set(DeviceOutcome.objects.filter(rollout=rollout).values_list("device_id", flat=True))
    assert rows == set(devices) - moved
    assert_rows_name_current_arms(rollout)
    labels = ("Purchased",)
    counted = exposure_counts(rollout=rollout).counted
    assert arm_sufficient_statistics(
        rollout=rollout, counted=counted, outcome_labels=labels
    ) == ledger_reference(rollout, labels)


def test_share_lowered__rows_of_devices_no_longer_comparable_deleted(sdk_setup):
    rollout = start_rollout(sdk_setup, stages=(50,))
    devices = [f"device-{i}" for i in range(300)]
    expose(sdk_setup, devices)
    since = timezone.now() - timedelta(hours=1)
    backdate(rollout, since)
    reported_and_attributed(sdk_setup, devices, since)

    services.rollout_set_share(rollout=rollout, arm="challenger-1", share=1000, actor="test")

    not_comparable = set(
        Exposure.objects.filter(rollout=rollout, comparable=False).values_list(
            "device_id", flat=True
        )
    )
    assert not_comparable
    rows = set(DeviceOutcome.objects.filter(rollout=rollout).values_list("device_id", flat=True))
    assert rows == set(devices) - not_comparable
    assert_rows_name_current_arms(rollout)
    counted = exposure_counts(rollout=rollout).counted
    assert arm_sufficient_statistics(rollout=rollout, counted=counted) == ledger_reference(rollout)


def test_exposure_counts__one_scan__comparable_per_arm_and_this_stage_per_sdk(running):
    rollout = running["rollout"]
    stage_start = timezone.now()
    Rollout.objects.filter(pk=rollout.pk).update(stage_started_at=stage_start)
    rollout.refresh_from_db()
    earlier = exposure_counts(rollout=rollout)  # the fixture's devices, exposed before
    assert earlier.this_stage == {}
    assert set(earlier.counted_per_arm) == {"baseline", "challenger-1"}
    later = stage_start + timedelta(seconds=1)
    Exposure.objects.bulk_create(
        Exposure(
            rollout=rollout, device_id=f"new-{i}", arm="challenger-1", bucket=0,
            sdk_version="1.4.0", first_exposed_at=later, arm_since=later, comparable=i % 2 == 0,
        )
        for i in range(4)
    )  # fmt: skip

    counts = exposure_counts(rollout=rollout)

    assert counts.counted_per_arm == {
        "baseline": earlier.counted_per_arm["baseline"],
        "challenger-1": earlier.counted_per_arm["challenger-1"] + 2,
    }
    assert counts.this_stage == {"1.4.0": {"challenger-1": 4}}


@pytest.mark.django_db(transaction=True)
def test_attribute__device_moves_meanwhile__its_row_never_names_the_old_arm(sdk_setup, monkeypatch):
    assert connection.vendor == "postgresql"
    rollout = start_rollout(sdk_setup, stages=(10, 50))
    devices = [f"device-{i}" for i in range(200)]
    before = expose(sdk_setup, devices)
    since = timezone.now() - timedelta(hours=1)
    backdate(rollout, since)
    rollout = services.rollout_advance(rollout=rollout, actor="test")
    assignment_cache.clear()
    doc = assignment_cache.app_for_key(sdk_setup["key"])
    moving = []
    for device in devices:  # polled at 50 %: the notes wait in the Redis buffer
        body = device_assignments(
            doc, device_id=device, sdk=(1, 5, 0), sdk_text="1.5.0", base_url="http://testserver/"
        )
        if body["models"][0]["rollout"]["arm"] != before[device]:
            moving.append(device)
    assert moving
    for device in moving:  # happened while they were still on the baseline
        report(sdk_setup, device, at=since + timedelta(minutes=1))

    read, resume, flushed = threading.Event(), threading.Event(), threading.Event()
    original = attribution._device_outcomes_read

    def paused(pairs):
        read.set()  # the exposures are read: hold on before writing the outcome rows
        resume.wait(10)
        return original(pairs)

    monkeypatch.setattr(attribution, "_device_outcomes_read", paused)
    errors = []

    def in_thread(target, done=None):
        def run():
            try:
                target()
            except Exception as error:
                errors.append(error)
            finally:
                connections.close_all()
                if done is not None:
                    done.set()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    attributing = in_thread(events_attribute)
    assert read.wait(10)
    flushing = in_thread(exposure_buffer_flush, done=flushed)
    moved_meanwhile = flushed.wait(1.5)  # the flush must wait for the attribution's locks
    resume.set()
    attributing.join(30)
    flushing.join(30)

    assert errors == []
    assert not moved_meanwhile
    assert set(
        Exposure.objects.filter(rollout=rollout, device_id__in=moving).values_list("arm", flat=True)
    ) == {"challenger-1"}
    assert_rows_name_current_arms(rollout)
    assert not DeviceOutcome.objects.filter(rollout=rollout, device_id__in=moving).exists()


def test_migration_0003__rows_naming_another_arm_or_not_comparable_deleted(running):
    rollout = running["rollout"]
    since = running["since"]
    report(running, running["b"], at=since + timedelta(minutes=1))
    report(running, running["c"], at=since + timedelta(minutes=1))
    events_attribute()
    Exposure.objects.filter(device_id=running["b"]).update(arm="challenger-1")  # stale now
    discard_stale = import_module(
        "experiments.migrations.0003_discard_stale_device_outcomes"
    ).discard_stale

    discard_stale(django_apps, None)

    rows = DeviceOutcome.objects.filter(rollout=rollout).values_list("device_id", flat=True)
    assert list(rows) == [running["c"]]
    Exposure.objects.filter(device_id=running["c"]).update(comparable=False)
    discard_stale(django_apps, None)
    assert not DeviceOutcome.objects.exists()


# ------------------------------------------------- counted on arrival = counted by the job


def outcome_rows(rollout) -> dict[str, tuple]:
    return {
        row.device_id: (
            row.arm, row.events, row.conversions, round(row.value_sum, 9), row.model_errors,
            row.ran_assigned_model, row.outcome_counts, row.last_event_at,
        )
        for row in DeviceOutcome.objects.filter(rollout=rollout)
    }  # fmt: skip


def random_events(rng, since, models) -> list[dict]:
    events = []
    for _ in range(rng.randint(1, 12)):
        event = {
            "id": str(uuid.UUID(int=rng.getrandbits(128))),
            "flow": "onboarding_upsell",
            "outcome": rng.choice(["Purchased", "Dismissed", "Dismissed", "model_error"]),
            # Before the start, inside the 1-hour window, and after it.
            "ts": (since + timedelta(minutes=rng.uniform(-20, 100))).isoformat(),
            "model_id": rng.choice(models),
        }
        if rng.random() < 0.5:
            event["value"] = round(rng.uniform(0, 10), 2)
        events.append(event)
    return events


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_counted_on_arrival__same_rows_as_the_attribution_job(sdk_setup, client, settings, seed):
    settings.EVENT_ATTRIBUTION_PATIENCE_SECONDS = 0
    rng = random.Random(seed)
    sdk_setup["flow"].attribution_window_hours = 1
    sdk_setup["flow"].save()
    rollout = start_rollout(sdk_setup)
    exposed = [f"device-{i}" for i in range(25)]
    expose(sdk_setup, exposed)
    since = timezone.now() - timedelta(hours=2)
    backdate(rollout, since)
    models = [None, str(sdk_setup["baseline"].pk), str(sdk_setup["challenger"].pk)]
    sent = 0
    for device in [*exposed, "never-polled-1", "never-polled-2"]:
        events = random_events(rng, since, models)
        for batch in (events, events[: len(events) // 2]):  # the second: a partial re-send
            assignment_cache.clear()
            response = client.post(
                "/api/v1/sdk/events",
                data={"device_id": device, "sdk_version": "1.5.0", "events": batch},
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {sdk_setup['key']}",
            )
            sent += response.json()["accepted"]
    counted_on_arrival = OutcomeEvent.objects.filter(rollout=rollout).count()
    events_attribute()  # the rest: outside the window, or never exposed
    on_arrival = outcome_rows(rollout)

    OutcomeEvent.objects.update(attributed=False, rollout=None, arm="")
    DeviceOutcome.objects.all().delete()
    events_attribute()

    assert OutcomeEvent.objects.count() == sent
    assert 0 < counted_on_arrival < sent
    assert OutcomeEvent.objects.filter(rollout=rollout).count() == counted_on_arrival
    assert outcome_rows(rollout) == on_arrival


@pytest.mark.django_db(transaction=True)
def test_counted_on_arrival__concurrent_senders_and_job__every_event_counted_once(sdk_setup):
    rollout = start_rollout(sdk_setup)
    devices = list(expose(sdk_setup, [f"device-{i}" for i in range(8)]))
    since = timezone.now() - timedelta(hours=1)
    backdate(rollout, since)
    for device in devices:  # some arrived before: left to the job
        report(sdk_setup, device, at=since + timedelta(minutes=1), value=1.0)
    batches = [
        (device, [an_event(since + timedelta(minutes=2)) for _ in range(10)])
        for device in devices
        for _ in range(6)
    ]
    batches += batches[::3]  # re-sent
    senders_done = threading.Event()
    errors = []

    def send(share):
        try:
            client = Client(HTTP_AUTHORIZATION=f"Bearer {sdk_setup['key']}")
            for device, events in share:
                body = {"device_id": device, "sdk_version": "1.5.0", "events": events}
                response = client.post("/api/v1/sdk/events", body, content_type="application/json")
                assert response.status_code == 200
        except Exception as error:
            errors.append(error)
        finally:
            connections.close_all()

    def attribute():
        try:
            while not senders_done.is_set():
                events_attribute(batch=7)
            events_attribute()
        except Exception as error:
            errors.append(error)
        finally:
            connections.close_all()

    senders = [threading.Thread(target=send, args=(batches[i::3],)) for i in range(3)]
    job = threading.Thread(target=attribute)
    for thread in [*senders, job]:
        thread.start()
    for thread in senders:
        thread.join(120)
    senders_done.set()
    job.join(120)

    assert errors == []
    stored = OutcomeEvent.objects.count()
    assert stored == len(devices) * (1 + 6 * 10)
    assert OutcomeEvent.objects.filter(attributed=False).count() == 0
    rows = DeviceOutcome.objects.filter(rollout=rollout)
    assert sum(row.events for row in rows) == stored
    assert {row.events for row in rows} == {1 + 6 * 10}


def an_event(at) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "flow": "onboarding_upsell",
        "outcome": "Dismissed",
        "ts": at.isoformat(),
    }
