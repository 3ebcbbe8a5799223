"""Alerts nobody received: a channel created or enabled later gets the recent ones it missed,
and an alert of an app with no channel goes to the site admins."""

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

    with mock.patch("experiments.admin.channel_backfill") as backfill:
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
    backfill.assert_not_called()


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
