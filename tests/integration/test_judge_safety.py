"""The judge's actions under failure and concurrency: never twice, never half."""

import threading
from unittest import mock

import pytest
from django.core import mail
from django.db import connections

from experiments import alerts
from experiments.judge import rollout_analyze
from experiments.models import Alert, AlertChannel, AlertDelivery, DeliveryStatus
from rollout.models import RolloutState

from .builders import populate


@pytest.mark.django_db(transaction=True)
def test_judge__two_workers_at_once__one_rollback_one_alert(running):
    AlertChannel.objects.create(
        app=running.flow.app, name="mail", kind="email", target="oncall@example.com"
    )
    populate(running, "baseline", 3000, 300)
    populate(running, "challenger-1", 3000, 150)
    barrier = threading.Barrier(2)
    results = []

    def judge():
        try:
            barrier.wait(10)
            results.append(rollout_analyze(rollout=running, act=True).action)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=judge) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    running.refresh_from_db()
    assert running.state == RolloutState.ROLLED_BACK
    assert running.events.filter(action="rollback").count() == 1
    assert Alert.objects.count() == 1
    assert len(results) == 2  # neither run failed
    assert "rolled_back" in results
    assert sorted(results)[0] in {"", "skipped", "rolled_back"}


@pytest.mark.django_db
def test_judge__crash_between_rollback_and_alert__neither_kept_then_retry_does_both(running):
    populate(running, "baseline", 3000, 300)
    populate(running, "challenger-1", 3000, 150)

    with (
        mock.patch("experiments.judge.alert_raise", side_effect=RuntimeError("worker killed")),
        pytest.raises(RuntimeError),
    ):
        rollout_analyze(rollout=running, act=True)
    running.refresh_from_db()
    assert running.state == RolloutState.RUNNING
    assert Alert.objects.count() == 0

    retried = rollout_analyze(rollout=running, act=True)

    running.refresh_from_db()
    assert retried.action == "rolled_back"
    assert running.state == RolloutState.ROLLED_BACK
    assert Alert.objects.count() == 1


@pytest.mark.django_db
def test_alert_email__sent_through_django_mail(
    running, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    AlertChannel.objects.create(
        app=running.flow.app, name="mail", kind="email", target="a@example.com, b@example.com"
    )
    populate(running, "baseline", 3000, 300)
    populate(running, "challenger-1", 3000, 150)

    with django_capture_on_commit_callbacks(execute=True):
        rollout_analyze(rollout=running, act=True)

    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["a@example.com", "b@example.com"]
    assert "Rolled back challenger-1" in mail.outbox[0].subject
    assert AlertDelivery.objects.get().status == DeliveryStatus.SENT


@pytest.mark.django_db
def test_alert_webhook__receiver_down__retried_then_failed_with_error(running, settings):
    channel = AlertChannel.objects.create(
        app=running.flow.app, name="hook", kind="webhook", target="http://127.0.0.1:1/nothing"
    )
    alert = Alert.objects.create(rollout=running, key="k", kind="rollback", title="t", text="x")
    delivery = AlertDelivery.objects.create(alert=alert, channel=channel)

    statuses = [
        alerts.alert_delivery_attempt(delivery_id=delivery.pk) for _ in range(alerts.MAX_ATTEMPTS)
    ]

    delivery.refresh_from_db()
    assert statuses[:-1] == [DeliveryStatus.PENDING] * (alerts.MAX_ATTEMPTS - 1)
    assert statuses[-1] == DeliveryStatus.FAILED
    assert delivery.attempts == alerts.MAX_ATTEMPTS
    assert "Connection refused" in delivery.last_error or "URLError" in delivery.last_error
    assert alerts.alert_delivery_attempt(delivery_id=delivery.pk) == DeliveryStatus.FAILED
    delivery.refresh_from_db()
    assert delivery.attempts == alerts.MAX_ATTEMPTS


@pytest.mark.django_db
def test_alert_webhook__sent_once__never_sent_again(running, webhook_receiver):
    channel = AlertChannel.objects.create(
        app=running.flow.app, name="hook", kind="webhook", target=webhook_receiver.url
    )
    alert = Alert.objects.create(
        rollout=running, key="k", kind="rollback", title="Rolled back", text="why",
        payload={"decision": "rollback"},
    )  # fmt: skip
    delivery = AlertDelivery.objects.create(alert=alert, channel=channel)

    first = alerts.alert_delivery_attempt(delivery_id=delivery.pk)
    second = alerts.alert_delivery_attempt(delivery_id=delivery.pk)

    assert (first, second) == (DeliveryStatus.SENT, DeliveryStatus.SENT)
    assert webhook_receiver.received == [{"text": "Rolled back\nwhy", "decision": "rollback"}]


@pytest.mark.django_db(transaction=True)
def test_alert_delivery__its_alert_row_locked_by_another_delivery__still_sent(
    running, webhook_receiver
):
    # Two channels of one alert are sent by two workers at once: each locks its delivery row
    # only, so neither skips the other's as if it were being sent.
    channel = AlertChannel.objects.create(
        app=running.flow.app, name="hook", kind="webhook", target=webhook_receiver.url
    )
    alert = Alert.objects.create(
        rollout=running, key="k", kind="rollback", title="Rolled back", text="why", payload={}
    )
    delivery = AlertDelivery.objects.create(alert=alert, channel=channel)
    locked, release = threading.Event(), threading.Event()

    def hold_alert_and_channel():
        from django.db import transaction

        try:
            with transaction.atomic():
                Alert.objects.select_for_update().get(pk=alert.pk)
                AlertChannel.objects.select_for_update().get(pk=channel.pk)
                locked.set()
                release.wait(10)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_alert_and_channel)
    holder.start()
    try:
        assert locked.wait(10)
        status = alerts.alert_delivery_attempt(delivery_id=delivery.pk)
    finally:
        release.set()
        holder.join(10)

    assert status == DeliveryStatus.SENT
    assert len(webhook_receiver.received) == 1
