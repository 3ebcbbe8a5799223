"""
One counter that says "what devices are told has changed".

The counter is a database row (`ConfigVersion`). Every change that alters an answer to a device
(a baseline, a rollout's state or share, an SDK key) bumps it inside the change's own
transaction, so a committed change always carries its bump and a rolled-back one never does.
`UPDATE … SET version = version + 1` locks the row, so concurrent writers are serialised and
each commits a version of its own.

Redis is only the fast path: once the transaction commits, the new version is copied to
`cohort:config-version`, best effort. A failure there is logged, never raised: the change is
committed already, and answering 500 would only invite a retry of something that happened.

Each web process watches the counter with `ConfigVersionWatch`: the Redis key at every check
(`ROLLOUT_CONFIG_CHECK_SECONDS`, cheap), and the row at most every
`ROLLOUT_CONFIG_DB_CHECK_SECONDS`, or at every check while its Redis is unreachable. So a change
reaches every process within the check interval normally, and within the database check
interval when its copy to Redis was lost. Without Redis the row is read at every check.
"""

import logging
from functools import cache, partial

from django.conf import settings
from django.db import transaction
from django.db.models import F

logger = logging.getLogger(__name__)

REDIS_KEY = "cohort:config-version"
# A poll that runs the check waits for this read: an unreachable Redis must cost it little.
REDIS_READ_TIMEOUT_SECONDS = 0.25
# After a failed read, a process reads the database at every check and leaves Redis alone this
# long, so a Redis that times out does not slow one poll per check.
REDIS_RETRY_SECONDS = 30.0


@cache
def _redis(url: str, timeout: float):
    import redis

    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def config_version_bump() -> int:
    """Bump the counter in the current transaction; copy it to Redis once that commits.

    Call it inside the transaction of the change it announces. Returns the new version.
    """
    from .models import ConfigVersion

    with transaction.atomic():
        rows = ConfigVersion.objects.filter(pk=1)
        if not rows.update(version=F("version") + 1):
            # The row is created on first use. get_or_create survives a concurrent creator;
            # the UPDATE after it then queues behind that creator's lock.
            ConfigVersion.objects.get_or_create(pk=1)
            rows.update(version=F("version") + 1)
        version = rows.values_list("version", flat=True).get()
    if settings.REDIS_URL:
        transaction.on_commit(partial(_publish, settings.REDIS_URL, version), robust=True)
    return version


def _publish(url: str, version: int) -> None:
    # SET rather than INCR: the key is a copy of the row, so it heals itself on the next change
    # after Redis lost it. Two copies landing out of order only cost a needless rebuild
    # (a watch ignores a published version lower than its own) until the next database check.
    try:
        _redis(url, 2.0).set(REDIS_KEY, version)
    except Exception:
        logger.warning(
            "config_version.publish_failed version=%s; web processes see it within "
            "ROLLOUT_CONFIG_DB_CHECK_SECONDS from the database",
            version,
            exc_info=True,
        )


def config_version_read() -> int:
    """The committed version: the database row (0 before the first change)."""
    from .models import ConfigVersion

    row = ConfigVersion.objects.filter(pk=1).values_list("version", flat=True).first()
    return row or 0


def config_version_published() -> int | None:
    """The version last copied to Redis (None when it holds none); raises when unreachable."""
    value = _redis(settings.REDIS_URL, REDIS_READ_TIMEOUT_SECONDS).get(REDIS_KEY)
    return int(value) if value is not None else None


class ConfigVersionWatch:
    """Whether the config version moved since the last check, for one process's snapshot.

    Not thread-safe: the caller holds its own lock around `moved`.
    """

    def __init__(self):
        # The committed version the process's snapshot is at least as new as.
        self.version: int | None = None
        # The last value read from Redis: only a change of it says something new.
        self._published: int | None = None
        self._db_checked_at = float("-inf")
        self._redis_retry_at = float("-inf")

    def moved(self, now: float) -> bool:
        """Read Redis, and the database when due; True when the snapshot must be rebuilt.

        Never raises: a failed read leaves the snapshot as it is until a later check.
        """
        moved = redis_answered = False
        if settings.REDIS_URL and now >= self._redis_retry_at:
            try:
                published = config_version_published()
                redis_answered = True
            except Exception:
                self._redis_retry_at = now + REDIS_RETRY_SECONDS
                logger.warning(
                    "config_version.redis_read_failed; reading the database at every check "
                    "for %s s",
                    REDIS_RETRY_SECONDS,
                )
            else:
                if published is not None and published != self._published:
                    self._published = published
                    if self.version is None or published > self.version:
                        self.version, moved = published, True
        db_interval = settings.ROLLOUT_CONFIG_DB_CHECK_SECONDS if redis_answered else 0
        if now - self._db_checked_at >= db_interval:
            try:
                version = config_version_read()
            except Exception:
                logger.warning("config_version.db_read_failed; serving the cached snapshot")
            else:
                self._db_checked_at = now
                # Any difference counts, a lower one too: the database may have been restored.
                if version != self.version:
                    self.version, moved = version, True
        return moved
