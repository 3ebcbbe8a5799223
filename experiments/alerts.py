"""Alerts: raised once per decision, delivered to each of the app's channels with retries."""

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import mail_admins, send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.errors import Conflict, InvalidInput
from registry.models import App
from rollout.models import Rollout

from . import webhook_targets
from .models import (
    Alert,
    AlertChannel,
    AlertDelivery,
    AlertStatus,
    AlertStatusChange,
    Analysis,
    ChannelKind,
    DeliveryStatus,
)
from .signals import alert_deliveries_pending

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
WEBHOOK_TIMEOUT_SECONDS = 10
CANCELLED_ERROR = "Not sent: the channel was disabled."


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
    app_id = rollout.flow.app_id
    _deliveries_create(alerts=[alert], channels=_enabled_channels(app_id))
    # Robust: the action has committed; a pending delivery is queued again by alerts_redeliver.
    transaction.on_commit(lambda: _alert_dispatch(alert_id=alert.pk, app_id=app_id), robust=True)
    return alert


# Where an alert may go from each status; dismissed and resolved are final.
ALERT_STATUS_MOVES: dict[str, tuple[str, ...]] = {
    AlertStatus.OPEN: (AlertStatus.ACKNOWLEDGED, AlertStatus.DISMISSED, AlertStatus.RESOLVED),
    AlertStatus.ACKNOWLEDGED: (AlertStatus.DISMISSED, AlertStatus.RESOLVED),
    AlertStatus.DISMISSED: (),
    AlertStatus.RESOLVED: (),
}


def alert_status_change(*, alert: Alert, status: str, actor: str, reason: str = "") -> Alert:
    """Acknowledge, dismiss or resolve an alert, logged with who, when and why.

    Dismissing needs a reason: it says the alert does not call for action, and whoever reads
    the log later must see why. The alert's row is locked, so two people moving it at once do
    not both succeed; a move the status does not allow is a Conflict.
    """
    reason = (reason or "").strip()
    if status not in AlertStatus.values:
        raise InvalidInput(f"'{status}' is not an alert status.", code="invalid_status")
    if status == AlertStatus.DISMISSED and not reason:
        raise InvalidInput(
            "Say why you dismiss this alert: the reason is logged.",
            code="reason_required",
            fields={"reason": ["Needed to dismiss an alert."]},
        )
    with transaction.atomic():
        locked = Alert.objects.select_for_update().get(pk=alert.pk)
        if status not in ALERT_STATUS_MOVES[locked.status]:
            raise Conflict(
                f"This alert is {locked.get_status_display().lower()}; it cannot become "
                f"{AlertStatus(status).label.lower()}.",
                code="invalid_status",
            )
        before = locked.status
        locked.status = status
        locked.save(update_fields=["status"])
        AlertStatusChange.objects.create(
            alert=locked, before=before, after=status, actor=actor, reason=reason
        )
    logger.info(
        "alert.status alert=%s %s->%s actor=%s reason=%r", locked.pk, before, status, actor, reason
    )
    return locked


def channel_backfill(*, channel: AlertChannel, now: datetime | None = None) -> int:
    """Give an enabled channel the app's recent alerts it has not received; return how many.

    Call it when a channel is created or enabled again. "Recent" is the last
    ALERT_BACKFILL_HOURS (0 turns backfilling off). The channel gets a delivery of each recent
    alert it has none of, and its deliveries of recent alerts cancelled when it was disabled
    are pending again. Both are queued once the caller's transaction commits; a second call
    creates and queues nothing twice.
    """
    if not channel.enabled or settings.ALERT_BACKFILL_HOURS <= 0:
        return 0
    now = now or timezone.now()
    since = now - timedelta(hours=settings.ALERT_BACKFILL_HOURS)
    revived_ids = _cancelled_revive(channel=channel, since=since)
    alert_ids = _backfill_missing(channel=channel, since=since)

    def dispatch():
        # An alert whose transaction was still open did not see this channel, and this
        # backfill did not see the alert: look once more now that the channel is committed.
        fresh = AlertChannel.objects.filter(pk=channel.pk, enabled=True).first()
        late = _backfill_missing(channel=fresh, since=since) if fresh else []
        _deliveries_enqueue(
            AlertDelivery.objects.filter(
                Q(alert_id__in=[*alert_ids, *late]) | Q(pk__in=revived_ids),
                channel_id=channel.pk,
                status=DeliveryStatus.PENDING,
            )
        )

    transaction.on_commit(dispatch, robust=True)
    count = len(alert_ids) + len(revived_ids)
    if count:
        logger.info(
            "alert.backfill channel=%s alerts=%s cancelled_resumed=%s",
            channel.pk,
            count,
            len(revived_ids),
        )
    return count


def channel_disable_pending(*, channel: AlertChannel) -> int:
    """Cancel the channel's pending deliveries, as it was disabled; return how many.

    Call it when a channel is disabled, in the same transaction. A cancelled delivery is
    neither sent nor retried; enabling the channel again (channel_backfill) makes those of
    recent alerts pending again. A delivery being sent right now is waited for, and stays sent.
    """
    count = AlertDelivery.objects.filter(channel=channel, status=DeliveryStatus.PENDING).update(
        status=DeliveryStatus.CANCELLED, last_error=CANCELLED_ERROR
    )
    if count:
        logger.info("alert.channel_disabled channel=%s cancelled=%s", channel.pk, count)
    return count


@dataclass(frozen=True)
class ChannelSaved:
    """A channel as saved, and what saving it did to deliveries."""

    channel: AlertChannel
    cancelled: int = 0  # pending deliveries cancelled, as it was disabled
    backfilled: int = 0  # recent alerts given to it, as it started receiving the app's alerts


def channel_create(
    *, app: App, name: str, kind: str, target: str, enabled: bool = True
) -> ChannelSaved:
    """Create an alert channel; an enabled one also gets the app's recent alerts."""
    channel = AlertChannel(app=app, name=name, kind=kind, target=target, enabled=enabled)
    _channel_validate(channel)
    with transaction.atomic():
        channel.save()
        backfilled = channel_backfill(channel=channel) if channel.enabled else 0
    return ChannelSaved(channel, backfilled=backfilled)


def channel_update(
    *, channel: AlertChannel, app: App, name: str, kind: str, target: str, enabled: bool
) -> ChannelSaved:
    """Change an alert channel.

    Disabled, it stops receiving at once: its pending deliveries are cancelled. Starting to
    receive an app's alerts (enabled again, or moved to another app), it gets the recent ones
    it missed. What changed is read from the stored row, locked.
    """
    with transaction.atomic():
        stored = AlertChannel.objects.select_for_update().get(pk=channel.pk)
        channel.app, channel.name, channel.kind = app, name, kind
        channel.target, channel.enabled = target, enabled
        _channel_validate(channel)
        channel.save()
        stops = stored.enabled and not channel.enabled
        starts = channel.enabled and (not stored.enabled or stored.app_id != channel.app_id)
        cancelled = channel_disable_pending(channel=channel) if stops else 0
        backfilled = channel_backfill(channel=channel) if starts else 0
    return ChannelSaved(channel, cancelled=cancelled, backfilled=backfilled)


def channel_delete(*, channel: AlertChannel) -> None:
    """Delete an alert channel with its deliveries."""
    channel.delete()


def _channel_validate(channel: AlertChannel) -> None:
    # The model's checks, a webhook's target among them (only public addresses by default).
    try:
        channel.full_clean()
    except ValidationError as error:
        fields = {name: [str(m) for m in messages] for name, messages in error.message_dict.items()}
        detail = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in fields.items())
        raise InvalidInput(detail, fields=fields) from None


def _enabled_channels(app_id) -> list[AlertChannel]:
    return list(AlertChannel.objects.filter(app_id=app_id, enabled=True))


def _deliveries_create(*, alerts: list[Alert], channels: list[AlertChannel]) -> None:
    # The unique constraint one_delivery_per_channel makes a repeated or concurrent call a no-op.
    AlertDelivery.objects.bulk_create(
        (AlertDelivery(alert=alert, channel=channel) for alert in alerts for channel in channels),
        ignore_conflicts=True,
    )


def _backfill_missing(*, channel: AlertChannel, since: datetime) -> list[int]:
    """Create the channel's missing deliveries of the app's alerts since `since`; their alert ids."""
    alerts = list(
        Alert.objects.filter(rollout__flow__app_id=channel.app_id, created_at__gte=since)
        .exclude(deliveries__channel=channel)
        .only("pk")
    )
    _deliveries_create(alerts=alerts, channels=[channel])
    return [alert.pk for alert in alerts]


def _cancelled_revive(*, channel: AlertChannel, since: datetime) -> list[int]:
    """Make the channel's cancelled deliveries of the app's alerts since `since` pending; ids."""
    cancelled = AlertDelivery.objects.filter(
        channel=channel,
        status=DeliveryStatus.CANCELLED,
        alert__rollout__flow__app_id=channel.app_id,
        alert__created_at__gte=since,
    )
    with transaction.atomic():
        # Locked, so a concurrent backfill waits and then finds them pending: none counted twice.
        ids = list(cancelled.select_for_update(of=("self",)).values_list("pk", flat=True))
        AlertDelivery.objects.filter(pk__in=ids).update(
            status=DeliveryStatus.PENDING, last_error=""
        )
    return ids


def _deliveries_enqueue(deliveries) -> None:
    # The tasks layer queues them (see experiments/signals.py for why not a direct call).
    delivery_ids = list(deliveries.values_list("pk", flat=True))
    if delivery_ids and not alert_deliveries_pending.send(
        sender=AlertDelivery, delivery_ids=delivery_ids
    ):
        # Nothing listening (the app's ready() did not run): alerts_redeliver queues them later.
        logger.error("alert.enqueue_unheard deliveries=%s", delivery_ids)


def _alert_dispatch(*, alert_id: int, app_id) -> None:
    """After the alert committed: queue its deliveries, or tell the site admins if it has none.

    A channel enabled while the alert's transaction ran was not seen by it, and the channel's
    backfill did not see the uncommitted alert: whichever commits last creates the delivery.
    """
    alert = Alert.objects.filter(pk=alert_id).first()
    if alert is None:
        return
    _deliveries_create(alerts=[alert], channels=_enabled_channels(app_id))
    deliveries = AlertDelivery.objects.filter(alert=alert)
    if deliveries.exists():
        _deliveries_enqueue(deliveries.filter(status=DeliveryStatus.PENDING))
        return
    logger.warning("alert.no_channel app=%s alert=%s", app_id, alert.title)
    _admins_notify(alert)


def _admins_notify(alert: Alert) -> None:
    """E-mail an alert no channel received to the site admins (ADMINS); best effort."""
    if not settings.ADMINS:
        return
    app = alert.rollout.flow.app
    hours = settings.ALERT_BACKFILL_HOURS
    later = f": it receives the alerts of the last {hours} hours" if hours > 0 else ""
    try:
        mail_admins(
            subject=alert.title,
            message=f"{alert.text}\n\nThe app {app.name} has no enabled alert channel, so this "
            "alert went to the site admins (ADMINS). Add one under Experiments > Alert channels"
            f"{later}.\n\n{json.dumps(alert.payload, indent=2)}",
        )
    except Exception as error:
        logger.exception("alert.admins_mail_failed alert=%s error=%s", alert.pk, error)


def _webhook_body(alert: Alert) -> bytes:
    # Slack reads "text"; other receivers get the structured fields beside it.
    return json.dumps({"text": f"{alert.title}\n{alert.text}", **alert.payload}).encode()


class WebhookRejected(Exception):
    """The receiver answered, but not with success; retried like a network error."""


def _webhook_send(url: str, body: bytes) -> None:
    # Checked again now, not only when the channel was saved: its name may resolve elsewhere
    # today, and the post connects to the addresses this check accepted (DNS rebinding).
    checked = webhook_targets.target_check(url, allow_private=settings.ALERT_WEBHOOK_ALLOW_PRIVATE)
    status = webhook_targets.post(
        checked,
        body,
        headers={"Content-Type": "application/json", "User-Agent": "Cohort alerts"},
        timeout=WEBHOOK_TIMEOUT_SECONDS,
    )
    if 300 <= status < 400:
        raise WebhookRejected(f"HTTP {status}: redirects are not followed")
    if not 200 <= status < 300:
        raise WebhookRejected(f"HTTP {status}")


def _send(delivery: AlertDelivery) -> None:
    channel, alert = delivery.channel, delivery.alert
    if channel.kind == ChannelKind.WEBHOOK:
        _webhook_send(channel.target, _webhook_body(alert))
        return
    recipients = [address.strip() for address in channel.target.split(",") if address.strip()]
    send_mail(
        subject=f"[Cohort] {alert.title}",
        message=alert.text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=recipients,
    )


def alert_delivery_attempt(*, delivery_id: int) -> str:
    """Try one delivery; return its status afterwards ("sent", "failed", "pending", "cancelled").

    The row stays locked while sending, so two workers never send the same delivery at once,
    and a sent delivery is never sent again. A delivery whose channel has been disabled is
    cancelled instead, without counting an attempt. A webhook whose target is refused (not a
    public address) fails at once with the reason: retrying would be refused again.
    """
    with transaction.atomic():
        delivery = (
            AlertDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("alert", "channel")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None or delivery.status != DeliveryStatus.PENDING:
            return delivery.status if delivery else DeliveryStatus.SENT
        if not delivery.channel.enabled:
            delivery.status = DeliveryStatus.CANCELLED
            delivery.last_error = CANCELLED_ERROR
            delivery.save(update_fields=["status", "last_error"])
            logger.info("alert.delivery_cancelled delivery=%s", delivery.pk)
            return delivery.status
        delivery.attempts += 1
        try:
            _send(delivery)
        except webhook_targets.TargetRefused as error:
            delivery.status = DeliveryStatus.FAILED
            delivery.last_error = f"Refused: {error}"[:2000]
            logger.warning("alert.delivery_refused delivery=%s error=%s", delivery.pk, error)
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
