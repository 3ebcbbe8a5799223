"""Background jobs of rollouts: thin, idempotent, and safe to run twice."""

from celery import shared_task


@shared_task(acks_late=True, ignore_result=True, time_limit=300, soft_time_limit=270)
def exposure_buffer_flush():
    """Move exposures buffered in Redis into the ledger (a no-op without Redis)."""
    from .exposures import exposure_buffer_flush as flush

    return flush()
