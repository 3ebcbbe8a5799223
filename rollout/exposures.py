"""
The exposure ledger's write path: cheap on the poll, exact in the database.

A poll that assigns a device a rollout arm notes it here. Each process remembers the arms it
has noted (bounded), so a device's repeated polls cost nothing. New notes go to a Redis list
when Redis is configured (one RPUSH, no database write on the request) and a Celery task moves
them into the database in bulk; without Redis they are written at once. The database write is
an idempotent upsert, so a note written twice, or by two processes, changes nothing.
"""

import hashlib
import json
import logging
from collections import OrderedDict
from datetime import datetime
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
FLUSH_BATCH = 5000

EXPOSE = "expose"
CONFIRM = "confirm"


@cache
def _redis(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)


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


def _note(kind: str, row: dict) -> None:
    rollout_id, device_id, arm = row["rollout_id"], row["device_id"], row.get("arm", "")
    if remembered.seen(kind, rollout_id, device_id, arm):
        return
    remembered.remember(kind, rollout_id, device_id, arm)
    try:
        if settings.REDIS_URL:
            _redis(settings.REDIS_URL).rpush(BUFFER_KEY, json.dumps({"kind": kind, **row}))
        else:
            ledger_write([{"kind": kind, **row}])
    except Exception:
        remembered.forget(kind, rollout_id, device_id)
        logger.exception("exposure.note_failed kind=%s rollout=%s", kind, rollout_id)


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


def exposure_buffer_flush(*, max_batches: int = 100) -> int:
    """Move buffered notes from Redis into the database; return how many were written.

    One flusher at a time (a Redis lock): rows are read, written, and only then trimmed from
    the list, so a flusher killed midway leaves them for the next one.
    """
    if not settings.REDIS_URL:
        return 0
    client = _redis(settings.REDIS_URL)
    written = 0
    with client.lock(FLUSH_LOCK_KEY, timeout=300, blocking_timeout=30):
        for _ in range(max_batches):
            raw = client.lrange(BUFFER_KEY, 0, FLUSH_BATCH - 1)
            if not raw:
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
            client.ltrim(BUFFER_KEY, len(raw), -1)
            written += len(rows)
    return written
