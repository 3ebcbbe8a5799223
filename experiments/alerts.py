"""Alerts: raised once per decision, delivered to each of the app's channels with retries."""

import json
import logging
import urllib.request
from urllib.error import URLError

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from rollout.models import Rollout

from .models import Alert, AlertChannel, AlertDelivery, Analysis, ChannelKind, DeliveryStatus

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
WEBHOOK_TIMEOUT_SECONDS = 10


def alert_raise(
    *,
    rollout: Rollout,
    key: str,
    kind: str,
    title: str,
    text: str,
    payload: dict,
    analysis: Analysis | None = None,
) -> Alert | None:
    """Record an alert and queue its deliveries after commit; None when the key was raised before.

    Called inside the transaction of the action it reports, so the action and its alert
    commit together: a retried job finds both done and raises nothing twice.
    """
    if Alert.objects.filter(key=key).exists():
        return None
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                rollout=rollout,
                key=key,
                kind=kind,
                title=title,
                text=text,
                payload=payload,
                analysis=analysis,
            )
    except IntegrityError:
        return None  # raised by a concurrent run
    channels = AlertChannel.objects.filter(app_id=rollout.flow.app_id, enabled=True)
    deliveries = AlertDelivery.objects.bulk_create(
        AlertDelivery(alert=alert, channel=channel) for channel in channels
    )
    if not deliveries:
        logger.warning("alert.no_channel app=%s alert=%s", rollout.flow.app_id, title)

    def enqueue():
        from .tasks import alert_deliver

        for delivery in deliveries:
            alert_deliver.delay(delivery.pk)

    transaction.on_commit(enqueue)
    return alert


def _webhook_body(alert: Alert) -> bytes:
    # Slack reads "text"; other receivers get the structured fields beside it.
    return json.dumps({"text": f"{alert.title}\n{alert.text}", **alert.payload}).encode()


def _send(delivery: AlertDelivery) -> None:
    channel, alert = delivery.channel, delivery.alert
    if channel.kind == ChannelKind.WEBHOOK:
        request = urllib.request.Request(
            channel.target,
            data=_webhook_body(alert),
            headers={"Content-Type": "application/json", "User-Agent": "Cohort alerts"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
            if not 200 <= response.status < 300:
                raise URLError(f"HTTP {response.status}")
        return
    recipients = [address.strip() for address in channel.target.split(",") if address.strip()]
    send_mail(
        subject=f"[Cohort] {alert.title}",
        message=alert.text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=recipients,
    )


def alert_delivery_attempt(*, delivery_id: int) -> str:
    """Try one delivery; return its status afterwards ("sent", "failed" or "pending").

    The row stays locked while sending, so two workers never send the same delivery at once,
    and a sent delivery is never sent again.
    """
    with transaction.atomic():
        delivery = (
            AlertDelivery.objects.select_for_update(skip_locked=True)
            .select_related("alert", "channel")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None or delivery.status != DeliveryStatus.PENDING:
            return delivery.status if delivery else DeliveryStatus.SENT
        delivery.attempts += 1
        try:
            _send(delivery)
        except Exception as error:
            delivery.last_error = f"{type(error).__name__}: {error}"[:2000]
            if delivery.attempts >= MAX_ATTEMPTS:
                delivery.status = DeliveryStatus.FAILED
            logger.warning("alert.delivery_failed delivery=%s error=%s", delivery.pk, error)
        else:
            delivery.status = DeliveryStatus.SENT
            delivery.sent_at = timezone.now()
            delivery.last_error = ""
        delivery.save(update_fields=["attempts", "last_error", "status", "sent_at"])
        return delivery.status
