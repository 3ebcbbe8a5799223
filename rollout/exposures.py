"""
The exposure ledger's write path: cheap on the poll, exact in the database.

A poll that assigns a device a rollout arm notes it here. Each process remembers the arms it
has noted (bounded), so a device's repeated polls cost nothing. New notes go to a Redis list
when Redis is configured (one RPUSH, no database write on the request) and a Celery task moves
them into the database in bulk; without Redis, or while Redis is unreachable, they are written
to the database at once (`_direct`). The database write is an idempotent upsert, so a note
written twice, or by two processes, changes nothing.

One flusher at a time holds the buffer, on a short lease renewed before each batch
(`_Lease`): a flusher killed midway frees it within `FLUSH_LEASE_SECONDS`. Nothing a request
does waits for a flusher longer than a few seconds.
"""

import hashlib
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from contextlib import suppress
from datetime import UTC, datetime
from functools import cache

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models.functions import Collate
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .models import Exposure
from .signals import exposures_changed

logger = logging.getLogger(__name__)

BUFFER_KEY = "cohort:exposure-buffer"
FLUSH_LOCK_KEY = "cohort:exposure-buffer:lock"
# When a flusher last found the buffer empty (Unix time): every note pushed before then is in
# the database. The watermark of a catch-up that could not flush itself.
DRAINED_AT_KEY = "cohort:exposure-buffer:drained-at"
FLUSH_BATCH = 5000
# A batch of 5 000 notes takes well under a second to write; the lease is renewed before each
# one. So a live flusher never loses it, and a dead one's lease runs out within this.
FLUSH_LEASE_SECONDS = 20

# A poll waits for the note's RPUSH: an unreachable Redis must cost it little, and after a
# failure the process writes notes to the database and leaves Redis alone this long.
NOTE_REDIS_TIMEOUT_SECONDS = 0.25
NOTE_REDIS_RETRY_SECONDS = 30.0
# The direct write runs on the request: a statement that waits longer (behind attribution's
# row locks) is cancelled, and its notes are kept for the process's next note.
DIRECT_WRITE_TIMEOUT_MS = 1000
DIRECT_PENDING_MAX = 10_000

EXPOSE = "expose"
CONFIRM = "confirm"


class ExposureBufferUnavailable(Exception):
    """The buffer could not be flushed now: another flusher holds it, its lease ran out, or
    Redis is unreachable. Nothing is lost: the notes stay in the list for the next flusher."""


@cache
def _redis(url: str, timeout: float = 5.0):
    import redis

    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


# The lease's operations check the token first, so a flusher whose lease ran out (and was
# perhaps taken by another) can neither extend, release nor trim what is no longer its own.
_RENEW = """if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"""
_RELEASE = """if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1]) end return 0"""
# Trimming is fenced: two flushers that both read the same first rows (one of them past its
# lease) would otherwise each trim that many, and the second trim would drop rows never written.
_TRIM = """if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('ltrim', KEYS[2], ARGV[2], -1) return 1 end return 0"""


class _Lease:
    """A Redis lock that expires unless renewed: SET NX PX with a random token."""

    def __init__(self, client, key: str, seconds: float):
        self.client, self.key = client, key
        self.ms = int(seconds * 1000)
        self.token = secrets.token_hex(16)

    def acquire(self, wait: float) -> bool:
        deadline = time.monotonic() + wait
        while not self.client.set(self.key, self.token, nx=True, px=self.ms):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def renew(self) -> bool:
        return bool(self.client.eval(_RENEW, 1, self.key, self.token, self.ms))

    def trim(self, list_key: str, count: int) -> bool:
        return bool(self.client.eval(_TRIM, 2, self.key, list_key, self.token, count))

    def release(self) -> None:
        self.client.eval(_RELEASE, 1, self.key, self.token)


class _Remembered:
    """A bounded memory of (kind, rollout, device) → arm, oldest forgotten first."""

    def __init__(self):
        self._items: OrderedDict[bytes, str] = OrderedDict()

    @staticmethod
    def _key(kind: str, rollout_id: str, device_id: str) -> bytes:
        return hashlib.blake2b(
            f"{kind}\0{rollout_id}\0{device_id}".encode(), digest_size=12
        ).digest()

    def seen(self, kind, rollout_id, device_id, arm) -> bool:
        return self._items.get(self._key(kind, rollout_id, device_id)) == arm

    def remember(self, kind, rollout_id, device_id, arm) -> None:
        key = self._key(kind, rollout_id, device_id)
        self._items[key] = arm
        self._items.move_to_end(key)
        while len(self._items) > settings.ROLLOUT_EXPOSURE_MEMORY:
            self._items.popitem(last=False)

    def forget(self, kind, rollout_id, device_id) -> None:
        self._items.pop(self._key(kind, rollout_id, device_id), None)

    def clear(self) -> None:
        self._items.clear()


remembered = _Remembered()


class _Direct:
    """Notes written to the database by the web process itself: without Redis, and while Redis
    is unreachable (so no exposure waits for the device's next poll, which may never come).

    Each write is one bounded upsert. Notes whose write failed are kept (at most
    `DIRECT_PENDING_MAX`, oldest dropped and forgotten) and written with the process's next note.
    """

    def __init__(self):
        self._pending: deque[dict] = deque()
        self._lock = threading.Lock()
        self.redis_resting_until = 0.0

    def redis_usable(self) -> bool:
        return bool(settings.REDIS_URL) and time.monotonic() >= self.redis_resting_until

    def redis_failed(self) -> None:
        self.redis_resting_until = time.monotonic() + NOTE_REDIS_RETRY_SECONDS

    def write(self, note: dict) -> None:
        with self._lock:
            self._pending.append(note)
            while len(self._pending) > DIRECT_PENDING_MAX:
                dropped = self._pending.popleft()
                remembered.forget(dropped["kind"], dropped["rollout_id"], dropped["device_id"])
            notes = list(self._pending)
            # SET LOCAL lasts until the outermost transaction ends: only bound one of our own.
            bounded = connection.vendor == "postgresql" and not connection.in_atomic_block
            try:
                with transaction.atomic():
                    if bounded:
                        with connection.cursor() as cursor:
                            cursor.execute(
                                f"SET LOCAL statement_timeout = {int(DIRECT_WRITE_TIMEOUT_MS)}"
                            )
                    ledger_write(notes)
            except Exception:  # the poll answers whatever happens to the note
                logger.exception(
                    "exposure.note_failed; %d notes kept for this process's next note", len(notes)
                )
                return
            self._pending.clear()

    def pending(self) -> int:
        return len(self._pending)

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
        self.redis_resting_until = 0.0


direct = _Direct()


def _note(kind: str, row: dict) -> None:
    rollout_id, device_id, arm = row["rollout_id"], row["device_id"], row.get("arm", "")
    if remembered.seen(kind, rollout_id, device_id, arm):
        return
    remembered.remember(kind, rollout_id, device_id, arm)
    note = {"kind": kind, **row}
    if direct.redis_usable():
        try:
            _redis(settings.REDIS_URL, NOTE_REDIS_TIMEOUT_SECONDS).rpush(
                BUFFER_KEY, json.dumps(note)
            )
            return
        except Exception:
            direct.redis_failed()
            logger.warning(
                "exposure.buffer_unreachable; writing notes to the database for %g s",
                NOTE_REDIS_RETRY_SECONDS,
                exc_info=True,
            )
    direct.write(note)


def exposure_note(*, rollout_id: str, device_id: str, arm: str, bucket: int, sdk_version: str):
    if remembered.seen(EXPOSE, rollout_id, device_id, arm):
        return  # the steady state: nothing to build, nothing to write
    _note(
        EXPOSE,
        {
            "rollout_id": rollout_id,
            "device_id": device_id,
            "arm": arm,
            "bucket": bucket,
            "sdk_version": sdk_version,
            "at": timezone.now().isoformat(),
        },
    )


def exposure_remember_recorded(*, rollout_id: str, device_id: str, arm: str) -> None:
    """The ledger holds this device in this arm already (read from the database just now):
    a note of the same would change nothing, so the device's next answers skip it."""
    remembered.remember(EXPOSE, rollout_id, device_id, arm)


def baseline_confirmation_note(*, rollout_id: str, device_id: str):
    _note(
        CONFIRM,
        {"rollout_id": rollout_id, "device_id": device_id, "at": timezone.now().isoformat()},
    )


def device_lock_order():
    """Device ids in code-point order, as Python sorts them: the order rows are locked in.

    (Device ids are printable ASCII; PostgreSQL's default collation would order them otherwise.)
    """
    if connection.vendor == "postgresql":
        return Collate("device_id", "C")
    return "device_id"


def _latest_notes(rows: list[dict]) -> list[dict]:
    """The newest note of each (rollout, device), in lock order: device, then rollout.

    Every writer of exposure rows (this upsert, attribution, a lowered share) locks them in
    that order, so two of them never wait for each other in a cycle.
    """
    latest: dict[tuple, dict] = {}
    for row in sorted(rows, key=lambda r: r["at"]):
        latest[(row["device_id"], row["rollout_id"])] = row
    return [latest[key] for key in sorted(latest)]


def _exposures_upsert(rows: list[dict]) -> None:
    """Insert new exposures; move a device to a new arm only when the note is newer, and mark
    a moved device as no longer comparable.

    Rows are one note per (rollout, device), in lock order. Data derived from a device's
    arm is told (`exposures_changed`) while the rows are still locked.
    """
    if not rows:
        return
    fields = {f.name: f for f in Exposure._meta.fields}
    table = Exposure._meta.db_table
    values = []
    for row in rows:
        at = parse_datetime(row["at"]) if isinstance(row["at"], str) else row["at"]
        values.extend(
            [
                fields["rollout"].get_db_prep_value(row["rollout_id"], connection),
                row["device_id"],
                row["arm"],
                row["bucket"],
                row["sdk_version"],
                fields["first_exposed_at"].get_db_prep_value(at, connection),
                fields["arm_since"].get_db_prep_value(at, connection),
                True,
            ]
        )
    placeholders = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
    sql = (
        f"INSERT INTO {table} (rollout_id, device_id, arm, bucket, sdk_version, "
        f"first_exposed_at, arm_since, comparable) VALUES {placeholders} "
        # A device that changes arm has run both models: it leaves the comparison
        # (experiments.counting explains why).
        "ON CONFLICT (rollout_id, device_id) DO UPDATE SET arm = excluded.arm, "
        "arm_since = excluded.arm_since, bucket = excluded.bucket, "
        "sdk_version = excluded.sdk_version, comparable = false "
        f"WHERE {table}.arm <> excluded.arm AND excluded.arm_since > {table}.arm_since"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
    by_rollout: dict[str, list[str]] = {}
    for row in rows:
        by_rollout.setdefault(str(row["rollout_id"]), []).append(row["device_id"])
    for rollout_id, device_ids in by_rollout.items():
        exposures_changed.send(sender=Exposure, rollout_id=rollout_id, device_ids=device_ids)


def _confirmations_apply(rows: list[dict]) -> None:
    by_rollout: dict[tuple[str, datetime], list[str]] = {}
    for row in rows:
        at = parse_datetime(row["at"]) if isinstance(row["at"], str) else row["at"]
        by_rollout.setdefault((row["rollout_id"], at.replace(microsecond=0)), []).append(
            row["device_id"]
        )
    for (rollout_id, at), devices in by_rollout.items():
        Exposure.objects.filter(
            rollout_id=rollout_id, device_id__in=devices, baseline_confirmed_at__isnull=True
        ).update(baseline_confirmed_at=at)


def ledger_write(rows: list[dict]) -> None:
    """Write notes to the database: exposures first, so a confirmation finds its exposure."""
    with transaction.atomic():
        # Chunks keep each statement's parameters well under the databases' limits.
        exposures = _latest_notes([r for r in rows if r["kind"] == EXPOSE])
        for start in range(0, len(exposures), 1000):
            _exposures_upsert(exposures[start : start + 1000])
        _confirmations_apply([r for r in rows if r["kind"] == CONFIRM])


def _drained_at_store(client, moment: float) -> None:
    # Inside a transaction (a lowered share flushes in its own), the rows are only in the
    # database once it commits.
    def store():
        with suppress(Exception):
            client.set(DRAINED_AT_KEY, repr(moment))

    transaction.on_commit(store) if connection.in_atomic_block else store()


def exposure_buffer_flush(*, max_batches: int = 100, wait: float = 0.0) -> int:
    """Move buffered notes from Redis into the database; return how many were written (0 once
    the buffer is empty).

    One flusher at a time, on a lease (`_Lease`): rows are read, written, and only then trimmed
    from the list, with the lease still held, so a flusher killed midway leaves them for the
    next one, which can start within `FLUSH_LEASE_SECONDS`. `wait` is how long to wait for
    another flusher's lease. Raises `ExposureBufferUnavailable` when it cannot flush now.
    """
    from redis.exceptions import RedisError

    if not settings.REDIS_URL:
        return 0
    client = _redis(settings.REDIS_URL)
    lease = _Lease(client, FLUSH_LOCK_KEY, FLUSH_LEASE_SECONDS)
    try:
        if not lease.acquire(wait):
            raise ExposureBufferUnavailable("another flusher holds the exposure buffer")
    except RedisError as error:
        raise ExposureBufferUnavailable(f"Redis is unreachable: {error}") from error
    written = 0
    try:
        for _ in range(max_batches):
            if not lease.renew():
                raise ExposureBufferUnavailable("the flush lease ran out")
            reading = time.time()  # every note pushed before this read is in what it returns
            raw = client.lrange(BUFFER_KEY, 0, FLUSH_BATCH - 1)
            if not raw:
                _drained_at_store(client, reading)
                break
            rows = []
            for item in raw:
                try:
                    rows.append(json.loads(item))
                except ValueError:
                    logger.error("exposure.buffer_bad_row %r", item[:200])
            try:
                ledger_write(rows)
            except DatabaseError:
                logger.exception("exposure.flush_failed; the rows stay buffered")
                raise
            if not lease.trim(BUFFER_KEY, len(raw)):
                # Another flusher has the lease and rewrites these rows (an idempotent upsert).
                logger.warning("exposure.flush_lease_lost after %d rows", written)
                raise ExposureBufferUnavailable("the flush lease ran out")
            written += len(rows)
    except RedisError as error:
        raise ExposureBufferUnavailable(f"Redis is unreachable: {error}") from error
    finally:
        with suppress(RedisError):
            lease.release()
    return written


def exposure_buffer_drained_at() -> datetime | None:
    """When a flusher last found the buffer empty: every note pushed before is in the database.

    Now without Redis (nothing is buffered); None when unknown (Redis unreachable, or never).
    """
    if not settings.REDIS_URL:
        return timezone.now()
    try:
        raw = _redis(settings.REDIS_URL).get(DRAINED_AT_KEY)
    except Exception:
        return None
    return datetime.fromtimestamp(float(raw), UTC) if raw else None
