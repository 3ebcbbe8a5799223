"""Background jobs of rollouts: thin, idempotent, and safe to run twice."""

from celery import shared_task


@shared_task(acks_late=True, ignore_result=True, time_limit=300, soft_time_limit=270)
def exposure_buffer_flush():
    """Move exposures buffered in Redis into the ledger (a no-op without Redis)."""
    import logging

    from .exposures import ExposureBufferUnavailable
    from .exposures import exposure_buffer_flush as flush

    try:
        return flush()
    except ExposureBufferUnavailable as error:
        # Another flusher is at it, or a dead one's lease runs out within seconds: the next
        # run, 10 s on, takes over. Nothing is lost either way.
        logging.getLogger(__name__).info("exposure.flush_skipped: %s", error)
        return 0
