"""Background jobs of experiments: thin, idempotent, and safe to run twice."""

from celery import shared_task


@shared_task(acks_late=True, ignore_result=True, time_limit=300, soft_time_limit=270)
def events_attribute_task():
    """Count new outcome events for their devices' rollout arms (exactly once; safe to overlap).

    Buffered exposures are flushed first, so an event rarely waits for its device's exposure,
    and the ledger's checkpoint moves (what an analyze request takes as its watermark).
    """
    from .services import ledger_catch_up

    return ledger_catch_up(passes=1)


ALERT_RETRY_BASE_SECONDS = 30


@shared_task(acks_late=True, ignore_result=True, time_limit=120, soft_time_limit=100)
def judge_all():
    """Fan out one judge task per active rollout."""
    from .selectors import rollouts_to_judge

    for rollout_id in rollouts_to_judge():
        judge_rollout.delay(rollout_id)


@shared_task(acks_late=True, ignore_result=True, time_limit=600, soft_time_limit=540)
def judge_rollout(rollout_id: str):
    """Analyse one rollout and act on it. A rerun acts at most once: actions carry the revision
    they were decided on, and alerts carry a key."""
    from rollout.models import Rollout

    from .services import rollout_analyze

    rollout = Rollout.objects.filter(pk=rollout_id).first()
    if rollout is None or not rollout.is_active:
        return None
    return rollout_analyze(rollout=rollout, act=True).decision


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=None, time_limit=60)
def alert_deliver(self, delivery_id: int):
    """Deliver one alert to one channel; retry with exponential backoff until sent or failed."""
    from .models import AlertDelivery, DeliveryStatus
    from .services import alert_delivery_attempt

    status = alert_delivery_attempt(delivery_id=delivery_id)
    if status == DeliveryStatus.PENDING:
        attempts = AlertDelivery.objects.filter(pk=delivery_id).values_list("attempts", flat=True)
        attempt = attempts.first() or 1
        raise self.retry(countdown=min(ALERT_RETRY_BASE_SECONDS * 2 ** (attempt - 1), 3600))
    return status


def on_alert_deliveries_pending(sender, *, delivery_ids, **kwargs) -> None:
    """Queue one delivery task per delivery the alerts module recorded (signals.py says why)."""
    for delivery_id in delivery_ids:
        alert_deliver.delay(delivery_id)


@shared_task(acks_late=True, ignore_result=True, time_limit=120)
def alerts_redeliver():
    """Queue again every delivery still pending, in case its task was lost with a broker.

    An attempt locks its row and skips a sent one, so a duplicate queue entry sends nothing twice.
    """
    from .models import AlertDelivery, DeliveryStatus

    for delivery_id in AlertDelivery.objects.filter(status=DeliveryStatus.PENDING).values_list(
        "pk", flat=True
    ):
        alert_deliver.delay(delivery_id)
