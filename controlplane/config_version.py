"""
One counter that says "what devices are told has changed".

Every change that alters an answer to a device (a baseline, a rollout's state or share, an SDK
key) bumps it after its transaction commits. Each web process caches the assignment documents
and re-reads the counter at most every `ROLLOUT_CONFIG_CHECK_SECONDS`, so a change reaches every
process within that time without a query per request. The counter lives in Redis when it is
configured (one shared INCR), else in the database.
"""

from functools import cache

from django.conf import settings
from django.db import transaction
from django.db.models import F

REDIS_KEY = "cohort:config-version"


@cache
def _redis(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _bump_now() -> None:
    if settings.REDIS_URL:
        _redis(settings.REDIS_URL).incr(REDIS_KEY)
        return
    from .models import ConfigVersion

    updated = ConfigVersion.objects.filter(pk=1).update(version=F("version") + 1)
    if not updated:
        ConfigVersion.objects.get_or_create(pk=1, defaults={"version": 1})


def config_version_bump() -> None:
    """Bump the counter once the current transaction commits (at once outside one)."""
    transaction.on_commit(_bump_now)


def config_version_read() -> int:
    if settings.REDIS_URL:
        value = _redis(settings.REDIS_URL).get(REDIS_KEY)
        return int(value) if value is not None else 0
    from .models import ConfigVersion

    row = ConfigVersion.objects.filter(pk=1).values_list("version", flat=True).first()
    return row or 0
