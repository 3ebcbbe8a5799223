"""Alerts nobody received: a channel created or enabled later gets the recent ones it missed,
and an alert of an app with no channel goes to the site admins. A channel disabled gets
nothing more: its pending deliveries are cancelled, and resumed if it is enabled again."""

import logging
from datetime import timedelta
from smtplib import SMTPException
from unittest import mock

import pytest
from django.core import mail
from django.db import transaction
from django.utils import timezone

from experiments import alerts
from experiments.models import Alert, AlertChannel, AlertDelivery, DeliveryStatus

pytestmark = pytest.mark.django_db

CHANNELS_URL = "/admin/experiments/alertchannel/"


@pytest.fixture(autouse=True)
def mail_settings(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ADMINS = []
    settings.ALERT_BACKFILL_HOURS = 24


def raise_alert(rollout, key, title=None, *, hours_ago=0):
    """Raise an alert as the judge does, committed (its on-commit work runs), `hours_ago` old."""
    alert = alerts.alert_raise(
        rollout=rollout,
        key=key,
        kind="rollback",
        title=title or f"Rolled back ({key})",
        text="why",
        payload={"decision": "rollback", "key": key},
    )
    if hours_ago:
        Alert.objects.filter(pk=alert.pk).update(
            created_at=timezone.now() - timedelta(hours=hours_ago)
        )
    return alert


def hook(rollout, url, *, enabled=True):
    return AlertChannel.objects.create(
        app=rollout.flow.app, name="on-call", kind="webhook", target=url, enabled=enabled
    )


def test_backfill__alert_raised_with_no_channel__new_channel_receives_it(
    running, webhook_receiver, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        alert = raise_alert(running, "k1", "Rolled back challenger-1")
    assert not AlertDelivery.objects.exists()

    channel = hook(running, webhook_receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        count = alerts.channel_backfill(channel=channel)

    assert count == 1
    delivery = AlertDelivery.objects.get()
    assert (delivery.alert, delivery.channel, delivery.status) == (alert, channel, "sent")
    assert webhook_receiver.received == [
        {"text": "Rolled back challenger-1\nwhy", "decision": "rollback", "key": "k1"}
    ]


def test_backfill__nothing_sent_before_commit(running, webhook_receiver):
    raise_alert(running, "k1")
    channel = hook(running, webhook_receiver.url)

    assert alerts.channel_backfill(channel=channel) == 1  # the test's transaction never commits

    assert AlertDelivery.objects.get().status == DeliveryStatus.PENDING
    assert webhook_receiver.received == []


def test_backfill__alerts_older_than_the_window__left_out(
    running, webhook_receiver, settings, django_capture_on_commit_callbacks
):
    settings.ALERT_BACKFILL_HOURS = 6
    raise_alert(running, "old", hours_ago=7)
    recent = raise_alert(running, "recent", hours_ago=5)
    channel = hook(running, webhook_receiver.url)

    with django_capture_on_commit_callbacks(execute=True):
        count = alerts.channel_backfill(channel=channel)

    assert count == 1
    assert AlertDelivery.objects.get().alert == recent
    assert [body["key"] for body in webhook_receiver.received] == ["recent"]


def test_backfill__window_counted_from_now_argument(running, webhook_receiver):
    alert = raise_alert(running, "k1")
    channel = hook(running, webhook_receiver.url)

    later = timezone.now() + timedelta(hours=25)
    assert alerts.channel_backfill(channel=channel, now=later) == 0
    assert alerts.channel_backfill(channel=channel, now=alert.created_at) == 1


def test_backfill__zero_hours_or_disabled_channel__sends_nothing(
    running, webhook_receiver, settings
):
    raise_alert(running, "k1")
    disabled = hook(running, webhook_receiver.url, enabled=False)
    assert alerts.channel_backfill(channel=disabled) == 0

    settings.ALERT_BACKFILL_HOURS = 0
    enabled = hook(running, webhook_receiver.url)
    assert alerts.channel_backfill(channel=enabled) == 0
    assert not AlertDelivery.objects.exists()


def test_backfill__called_twice__no_duplicate_delivery_nor_message(
    running, webhook_receiver, django_capture_on_commit_callbacks
):
    raise_alert(running, "k1")
    raise_alert(running, "k2")
    channel = hook(running, webhook_receiver.url)

    with django_capture_on_commit_callbacks(execute=True):
        first = alerts.channel_backfill(channel=channel)
        second = alerts.channel_backfill(channel=channel)
    with django_capture_on_commit_callbacks(execute=True):
        third = alerts.channel_backfill(channel=channel)

    assert (first, second, third) == (2, 0, 0)
    assert AlertDelivery.objects.filter(channel=channel).count() == 2
    assert sorted(body["key"] for body in webhook_receiver.received) == ["k1", "k2"]


def test_backfill__skips_alerts_of_other_apps(running, webhook_receiver):
    from registry import services

    other_app = services.app_create(name="Other", bundle_identifiers=["com.example.other"])
    raise_alert(running, "k1")
    channel = AlertChannel.objects.create(
        app=other_app, name="other", kind="webhook", target=webhook_receiver.url
    )

    assert alerts.channel_backfill(channel=channel) == 0


def test_backfill__alert_committed_after_the_backfill_looked__delivered_on_commit(
    running, webhook_receiver, django_capture_on_commit_callbacks
):
    """An alert raised in a transaction that did not see the new channel, and committed after
    the channel's backfill looked, is found by the backfill's pass after commit."""
    channel = hook(running, webhook_receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        assert alerts.channel_backfill(channel=channel) == 0
        Alert.objects.create(rollout=running, key="late", kind="rollback", title="t", text="x")

    assert AlertDelivery.objects.get().status == DeliveryStatus.SENT
    assert len(webhook_receiver.received) == 1


def test_alert_raise__channel_committed_while_alert_transaction_ran__delivered_on_commit(
    running, webhook_receiver, settings, django_capture_on_commit_callbacks
):
    """The alert did not see the channel, and the channel's backfill did not see the alert:
    the alert's own pass after commit delivers it, and the admins get nothing."""
    settings.ADMINS = [("ops", "ops@example.com")]
    with django_capture_on_commit_callbacks(execute=True):
        raise_alert(running, "k1")
        assert not AlertDelivery.objects.exists()
        hook(running, webhook_receiver.url)  # as if committed by another transaction

    assert AlertDelivery.objects.get().status == DeliveryStatus.SENT
    assert len(webhook_receiver.received) == 1
    assert mail.outbox == []


def test_admin__new_channel__receives_recent_alerts_with_a_message(
    running, admin_client, django_capture_on_commit_callbacks
):
    raise_alert(running, "k1", "Rolled back challenger-1")
    raise_alert(running, "k2", "Advanced the rollout")
    raise_alert(running, "k3", "Long ago", hours_ago=48)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            CHANNELS_URL + "add/",
            {
                "app": running.flow.app.pk,
                "name": "mail",
                "kind": "email",
                "target": "a@example.com, b@example.com",
                "enabled": "on",
            },
            follow=True,
        )

    assert response.status_code == 200
    assert "Sending 2 alerts of the last 24 hours to this channel." in [
        str(message) for message in response.context["messages"]
    ]
    assert sorted(message.subject for message in mail.outbox) == [
        "[Cohort] Advanced the rollout",
        "[Cohort] Rolled back challenger-1",
    ]
    assert all(message.to == ["a@example.com", "b@example.com"] for message in mail.outbox)
    assert set(AlertDelivery.objects.values_list("status", flat=True)) == {"sent"}


def test_admin__channel_enabled_again__receives_what_it_missed_only(
    running, admin_client, webhook_receiver, django_capture_on_commit_callbacks
):
    channel = hook(running, webhook_receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        raise_alert(running, "while-enabled")
    form = {
        "app": running.flow.app.pk,
        "name": "on-call",
        "kind": "webhook",
        "target": webhook_receiver.url,
    }
    admin_client.post(f"{CHANNELS_URL}{channel.pk}/change/", form)  # disabled: no "enabled"
    channel.refresh_from_db()
    assert channel.enabled is False
    with django_capture_on_commit_callbacks(execute=True):
        raise_alert(running, "while-disabled")
    assert [body["key"] for body in webhook_receiver.received] == ["while-enabled"]

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"{CHANNELS_URL}{channel.pk}/change/", {**form, "enabled": "on"}, follow=True
        )

    assert "Sending 1 alert of the last 24 hours to this channel." in [
        str(message) for message in response.context["messages"]
    ]
    assert [body["key"] for body in webhook_receiver.received] == [
        "while-enabled",
        "while-disabled",
    ]
    assert AlertDelivery.objects.filter(channel=channel, status="sent").count() == 2


def test_admin__enabled_channel_edited__no_backfill(running, admin_client, webhook_receiver):
    channel = hook(running, webhook_receiver.url)
    raise_alert(running, "k1")  # in this test transaction it got its delivery at once
    AlertDelivery.objects.all().delete()  # as if the channel had missed it

    admin_client.post(
        f"{CHANNELS_URL}{channel.pk}/change/",
        {
            "app": running.flow.app.pk,
            "name": "renamed",
            "kind": "webhook",
            "target": webhook_receiver.url,
            "enabled": "on",
        },
    )

    channel.refresh_from_db()
    assert channel.name == "renamed"
    assert not AlertDelivery.objects.exists()  # no backfill: it was receiving all along


def test_no_channel__alert_mailed_to_admins(running, settings, django_capture_on_commit_callbacks):
    settings.ADMINS = [("ops@example.com", "ops@example.com")]

    with django_capture_on_commit_callbacks(execute=True):
        raise_alert(running, "k1", "Rolled back challenger-1")

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ops@example.com"]
    assert message.subject == "[Cohort] Rolled back challenger-1"
    assert message.from_email == settings.DEFAULT_FROM_EMAIL
    assert "why" in message.body
    assert running.flow.app.name in message.body
    assert not AlertDelivery.objects.exists()


def test_no_channel_no_admins__only_logged(running, caplog, django_capture_on_commit_callbacks):
    with (
        caplog.at_level(logging.WARNING, logger="experiments.alerts"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        raise_alert(running, "k1")

    assert mail.outbox == []
    assert "alert.no_channel" in caplog.text


def test_channel_exists__admins_not_mailed(
    running, settings, webhook_receiver, django_capture_on_commit_callbacks
):
    settings.ADMINS = [("ops@example.com", "ops@example.com")]
    hook(running, webhook_receiver.url)

    with django_capture_on_commit_callbacks(execute=True):
        raise_alert(running, "k1")

    assert mail.outbox == []
    assert len(webhook_receiver.received) == 1


def test_no_channel__admin_mail_fails__alert_and_action_kept(
    running, settings, caplog, django_capture_on_commit_callbacks
):
    settings.ADMINS = [("ops@example.com", "ops@example.com")]

    with (
        mock.patch("experiments.alerts.mail_admins", side_effect=SMTPException("refused")),
        caplog.at_level(logging.ERROR, logger="experiments.alerts"),
        django_capture_on_commit_callbacks(execute=True),
        transaction.atomic(),
    ):
        alert = raise_alert(running, "k1")

    assert Alert.objects.filter(pk=alert.pk).exists()
    assert "alert.admins_mail_failed" in caplog.text


def test_no_channel__no_admin_mail_before_commit(running, settings):
    settings.ADMINS = [("ops@example.com", "ops@example.com")]

    raise_alert(running, "k1")  # the test's transaction never commits

    assert mail.outbox == []


def channel_form(channel, **changes):
    """The admin change form of `channel` as it is, with `changes`; enabled only when true."""
    form = {
        "app": channel.app_id,
        "name": channel.name,
        "kind": channel.kind,
        "target": channel.target,
        **changes,
    }
    if form.pop("enabled", channel.enabled):
        form["enabled"] = "on"
    return form


def test_disabled_channel__pending_delivery_attempted__cancelled_not_sent(
    running, webhook_receiver
):
    channel = hook(running, webhook_receiver.url)
    raise_alert(running, "k1")  # the test's transaction never commits: the delivery waits
    delivery = AlertDelivery.objects.get()
    AlertDelivery.objects.filter(pk=delivery.pk).update(attempts=2, last_error="HTTPError: 500")
    AlertChannel.objects.filter(pk=channel.pk).update(enabled=False)

    status = alerts.alert_delivery_attempt(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert status == DeliveryStatus.CANCELLED
    assert (delivery.status, delivery.attempts, delivery.sent_at) == ("cancelled", 2, None)
    assert delivery.last_error == "Not sent: the channel was disabled."
    assert webhook_receiver.received == []


def test_disabled_email_channel__task_not_retried__nothing_mailed(running):
    from experiments.tasks import alert_deliver

    channel = AlertChannel.objects.create(
        app=running.flow.app, name="mail", kind="email", target="a@example.com"
    )
    raise_alert(running, "k1")
    AlertChannel.objects.filter(pk=channel.pk).update(enabled=False)

    with mock.patch.object(alert_deliver, "retry") as retry:
        result = alert_deliver.apply(args=[AlertDelivery.objects.get().pk])

    assert result.get() == DeliveryStatus.CANCELLED
    retry.assert_not_called()
    assert mail.outbox == []
    assert AlertDelivery.objects.get().attempts == 0


def test_admin__channel_disabled__pending_cancelled_with_message_sent_untouched(
    running, admin_client, webhook_receiver, django_capture_on_commit_callbacks
):
    channel = hook(running, webhook_receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        raise_alert(running, "sent-before")
    raise_alert(running, "pending-1")  # not committed: pending, as if in retry backoff
    raise_alert(running, "pending-2")

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"{CHANNELS_URL}{channel.pk}/change/", channel_form(channel, enabled=False), follow=True
        )

    assert "2 pending alerts to this channel were cancelled." in [
        str(message) for message in response.context["messages"]
    ]
    statuses = dict(AlertDelivery.objects.values_list("alert__key", "status"))
    assert statuses == {"sent-before": "sent", "pending-1": "cancelled", "pending-2": "cancelled"}
    assert AlertDelivery.objects.get(alert__key="sent-before").last_error == ""
    assert [body["key"] for body in webhook_receiver.received] == ["sent-before"]


def test_admin__channel_disabled_with_nothing_pending__no_message(
    running, admin_client, webhook_receiver
):
    channel = hook(running, webhook_receiver.url)

    response = admin_client.post(
        f"{CHANNELS_URL}{channel.pk}/change/", channel_form(channel, enabled=False), follow=True
    )

    assert not any("cancelled" in str(message) for message in response.context["messages"])
    channel.refresh_from_db()
    assert channel.enabled is False


def test_admin__disabled_channel_edited__nothing_cancelled(running, admin_client, webhook_receiver):
    channel = hook(running, webhook_receiver.url)
    raise_alert(running, "k1")  # the test's transaction never commits: the delivery waits
    AlertChannel.objects.filter(pk=channel.pk).update(enabled=False)  # bypassing the admin
    channel.refresh_from_db()

    admin_client.post(f"{CHANNELS_URL}{channel.pk}/change/", channel_form(channel, name="renamed"))

    channel.refresh_from_db()
    assert channel.name == "renamed"
    assert AlertDelivery.objects.get().status == DeliveryStatus.PENDING  # not cancelled again


def test_disabled_channel__only_its_pending_deliveries_cancelled(running, webhook_receiver):
    channel = hook(running, webhook_receiver.url)
    other = AlertChannel.objects.create(
        app=running.flow.app, name="mail", kind="email", target="a@example.com"
    )
    raise_alert(running, "k1")

    assert alerts.channel_disable_pending(channel=channel) == 1

    assert AlertDelivery.objects.get(channel=channel).status == DeliveryStatus.CANCELLED
    assert AlertDelivery.objects.get(channel=other).status == DeliveryStatus.PENDING


def test_admin__channel_enabled_again__cancelled_delivery_sent_once(
    running, admin_client, webhook_receiver, django_capture_on_commit_callbacks
):
    channel = hook(running, webhook_receiver.url)
    raise_alert(running, "cancelled")  # not committed: pending
    admin_client.post(f"{CHANNELS_URL}{channel.pk}/change/", channel_form(channel, enabled=False))
    assert AlertDelivery.objects.get().status == DeliveryStatus.CANCELLED
    with django_capture_on_commit_callbacks(execute=True):
        raise_alert(running, "while-disabled")
    assert webhook_receiver.received == []

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"{CHANNELS_URL}{channel.pk}/change/", channel_form(channel, enabled=True), follow=True
        )
    with django_capture_on_commit_callbacks(execute=True):
        assert alerts.channel_backfill(channel=channel) == 0  # a second save resends nothing

    assert "Sending 2 alerts of the last 24 hours to this channel." in [
        str(message) for message in response.context["messages"]
    ]
    assert sorted(body["key"] for body in webhook_receiver.received) == [
        "cancelled",
        "while-disabled",
    ]
    delivery = AlertDelivery.objects.get(alert__key="cancelled")
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 1, "")


def test_backfill__cancelled_delivery_older_than_the_window__stays_cancelled(
    running, webhook_receiver, settings, django_capture_on_commit_callbacks
):
    settings.ALERT_BACKFILL_HOURS = 6
    channel = hook(running, webhook_receiver.url)
    raise_alert(running, "old", hours_ago=7)
    raise_alert(running, "recent", hours_ago=5)
    AlertChannel.objects.filter(pk=channel.pk).update(enabled=False)
    assert alerts.channel_disable_pending(channel=channel) == 2
    channel.enabled = True
    channel.save()

    with django_capture_on_commit_callbacks(execute=True):
        count = alerts.channel_backfill(channel=channel)

    assert count == 1
    statuses = dict(AlertDelivery.objects.values_list("alert__key", "status"))
    assert statuses == {"old": "cancelled", "recent": "sent"}
    assert AlertDelivery.objects.get(alert__key="old").last_error == (
        "Not sent: the channel was disabled."
    )
    assert [body["key"] for body in webhook_receiver.received] == ["recent"]


def test_backfill__cancelled_delivery_of_channel_moved_to_another_app__stays_cancelled(
    running, webhook_receiver
):
    from registry import services

    channel = hook(running, webhook_receiver.url)
    raise_alert(running, "k1")
    alerts.channel_disable_pending(channel=channel)
    channel.app = services.app_create(name="Other", bundle_identifiers=["com.example.other"])
    channel.save()

    assert alerts.channel_backfill(channel=channel) == 0
    assert AlertDelivery.objects.get().status == DeliveryStatus.CANCELLED


def test_redeliver__cancelled_deliveries_not_queued_again(running, webhook_receiver):
    from experiments.tasks import alerts_redeliver

    channel = hook(running, webhook_receiver.url)
    raise_alert(running, "cancelled")
    alerts.channel_disable_pending(channel=channel)
    raise_alert(running, "pending")
    pending = AlertDelivery.objects.get(alert__key="pending")

    with mock.patch("experiments.tasks.alert_deliver.delay") as delay:
        alerts_redeliver()

    delay.assert_called_once_with(pending.pk)


def test_admin__alerts_show_cancelled_deliveries(running, admin_client, webhook_receiver):
    channel = hook(running, webhook_receiver.url)
    alert = raise_alert(running, "k1")
    alerts.channel_disable_pending(channel=channel)

    listing = admin_client.get("/admin/experiments/alert/")
    page = admin_client.get(f"/admin/experiments/alert/{alert.pk}/change/")

    assert "on-call: cancelled" in listing.content.decode()
    assert "Cancelled (channel disabled)" in page.content.decode()
    assert "Not sent: the channel was disabled." in page.content.decode()
