"""
Attribution: turn outcome events into per-device outcomes of rollout arms, exactly once.

Contract:
- An event counts for a rollout when the rollout covers the time it happened (the rollout is
  running or paused, or ended after it, give or take the clock skew), its device has a
  *comparable* exposure in that rollout, and it happened inside the arm's window:
  `arm_since - EVENT_CLOCK_SKEW_SECONDS <= occurred_at <= arm_since + attribution window`.
  It counts for the arm the exposure names now.
- A `DeviceOutcome` row holds only outcomes of the arm its device is in, and exists only while
  the device's exposure is comparable and names that arm, so the analysis sums the rows per arm
  without looking at the ledger. When a device moves to another arm (a share grew) or stops
  being comparable (a share was lowered), its row is deleted in the same transaction
  (`device_outcomes_discard_stale`, on `exposures_changed`), and a new one starts from the new
  arm's events. Attribution locks the exposures it reads until it has written the rows, so a
  move cannot slip in between.
- An event whose device has no exposure yet may be waiting for one still buffered in Redis: it
  stays unattributed until `EVENT_ATTRIBUTION_PATIENCE_SECONDS` after it was received, and is
  then settled with no rollout. Every other event is settled at once, counted or not.
- Exactly once: each batch locks its events (`FOR UPDATE SKIP LOCKED`), so concurrent runs take
  different events; the exposures of their devices are locked (in the ledger's order), which
  serialises every writer of those devices' rows; the rows are merged in Python and written
  back in the same transaction as the events are marked. A rerun finds nothing to do.
- Events are mostly counted as they arrive (`count_on_arrival`, with `rules.RolloutTerms.counts`
  and the same locks); this job takes the rest: events whose exposure was still buffered, and
  those only an ended rollout can count.
- Queries per batch are few and do not grow with events (only with chunks of thousands).
"""

import itertools
import logging
import uuid
from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from rollout.arms import BASELINE
from rollout.exposures import (
    FLUSH_LEASE_SECONDS,
    ExposureBufferUnavailable,
    device_lock_order,
    exposure_buffer_drained_at,
    exposure_buffer_flush,
)
from rollout.models import ACTIVE_STATES, ENDED_STATES, Exposure, Rollout, RolloutArm

from ..models import DeviceOutcome, LedgerCheckpoint, OutcomeEvent
from .rules import ExposureView, RolloutTerms, StoredEvent, Tally, tally_add

logger = logging.getLogger(__name__)

BATCH = 5000  # events per transaction
CHUNK = 2000  # values per IN (...) list or multi-row statement: under SQLite's variable limit

# A device's stored outcomes in one rollout (`DeviceOutcome`), besides its keys.
_OUTCOME_FIELDS = (
    "arm",
    "arm_since",
    "bucket",
    "events",
    "conversions",
    "value_sum",
    "model_errors",
    "ran_assigned_model",
    "outcome_counts",
    "last_event_at",
)
_EVENT_FIELDS = (
    "id",
    "flow_id",
    "device_id",
    "model_id",
    "outcome",
    "value",
    "occurred_at",
    "received_at",
)


def _text(value) -> str | None:
    return None if value is None else str(value)


def _chunks(items: list, size: int = CHUNK):
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --------------------------------------------------------------------------- reading


def _events_locked(after: tuple[datetime, int] | None, size: int) -> list[StoredEvent]:
    """The oldest unattributed events after the cursor, locked; rows others hold are skipped."""
    queryset = OutcomeEvent.objects.filter(attributed=False)
    if after is not None:
        received_at, pk = after
        queryset = queryset.filter(
            Q(received_at__gt=received_at) | Q(received_at=received_at, pk__gt=pk)
        )
    rows = (
        queryset.order_by("received_at", "pk")
        .select_for_update(skip_locked=True)
        .values_list(*_EVENT_FIELDS)[:size]
    )
    return [
        StoredEvent(
            pk, flow_id, device_id, _text(model_id), outcome, value, occurred_at, received_at
        )
        for pk, flow_id, device_id, model_id, outcome, value, occurred_at, received_at in rows
    ]


def _rollouts_for(
    events: list[StoredEvent], skew: timedelta
) -> dict[uuid.UUID, list[RolloutTerms]]:
    """Per flow: its active rollouts and those that ended after the oldest event, newest first."""
    flow_ids = {event.flow_id for event in events}
    oldest = min(event.occurred_at for event in events)
    rows = list(
        Rollout.objects.filter(flow_id__in=flow_ids)
        .filter(Q(state__in=ACTIVE_STATES) | Q(state__in=ENDED_STATES, ended_at__gte=oldest - skew))
        .order_by("-started_at")
        .values_list(
            "id",
            "flow_id",
            "started_at",
            "ended_at",
            "state",
            "baseline_id",
            "flow__attribution_window_hours",
            "flow__positive_label",
        )
    )
    if not rows:
        return {}
    arm_models: dict[uuid.UUID, dict[str, str | None]] = {
        row[0]: {BASELINE: _text(row[5])} for row in rows
    }
    for rollout_id, name, model_id in RolloutArm.objects.filter(
        rollout_id__in=list(arm_models)
    ).values_list("rollout_id", "name", "model_version_id"):
        arm_models[rollout_id][name] = _text(model_id)
    by_flow: dict[uuid.UUID, list[RolloutTerms]] = defaultdict(list)
    for rollout_id, flow_id, started, ended, state, _, hours, label in rows:
        by_flow[flow_id].append(
            RolloutTerms(
                id=rollout_id,
                flow_id=flow_id,
                started_at=started,
                ended_at=None if state in ACTIVE_STATES else ended,
                window=timedelta(hours=hours),
                positive_label=label,
                arm_models=arm_models[rollout_id],
            )
        )
    return by_flow


def _exposures_locked(
    rollout_ids: set[uuid.UUID], device_ids: set[str]
) -> dict[tuple[uuid.UUID, str], ExposureView]:
    """(rollout, device) → its exposure, for the given rollouts and devices.

    The rows stay locked until the batch commits, in the ledger's lock order (device, then
    rollout): a device cannot change arm between being read here and its outcome row being
    written, so that row always names the arm of the exposure.
    """
    found = {}
    for devices in _chunks(sorted(device_ids)):
        for rollout_id, device_id, *exposure in (
            Exposure.objects.filter(rollout_id__in=list(rollout_ids), device_id__in=devices)
            .order_by(device_lock_order(), "rollout_id")
            .select_for_update(no_key=True)
            .values_list("rollout_id", "device_id", *ExposureView._fields)
        ):
            found[(rollout_id, device_id)] = ExposureView(*exposure)
    return found


# --------------------------------------------------------------------------- writing


def _device_outcomes_read(pairs: list[tuple[uuid.UUID, str]]) -> dict[tuple, dict]:
    """The stored rows of these (rollout, device) pairs, those that exist.

    No lock of their own: every writer of a device's row holds its exposure row locked
    (`_exposures_locked`, or the ledger's own writes), so under that lock the row is as the
    last writer committed it and stays so until this transaction ends.
    """
    by_rollout: dict[uuid.UUID, list[str]] = defaultdict(list)
    for rollout_id, device_id in pairs:
        by_rollout[rollout_id].append(device_id)
    stored = {}
    for rollout_id, devices in sorted(by_rollout.items()):
        for chunk in _chunks(devices):
            for row in DeviceOutcome.objects.filter(
                rollout_id=rollout_id, device_id__in=chunk
            ).values("rollout_id", "device_id", *_OUTCOME_FIELDS):
                stored[(row["rollout_id"], row["device_id"])] = row
    return stored


def _device_outcomes_write(tallies: dict[tuple[uuid.UUID, str], Tally]) -> None:
    """Write the merged totals back: one multi-row upsert per chunk (the rows exist and are ours)."""
    meta = DeviceOutcome._meta
    fields = [meta.get_field(name) for name in ("rollout", "device_id", *_OUTCOME_FIELDS)]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    updates = ", ".join(f"{quote(f.column)} = excluded.{quote(f.column)}" for f in fields[2:])
    placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
    items = sorted(tallies.items())
    with connection.cursor() as cursor:
        for chunk in _chunks(items, CHUNK // len(fields)):
            params = []
            for (rollout_id, device_id), tally in chunk:
                values = (
                    rollout_id,
                    device_id,
                    tally.arm,
                    tally.arm_since,
                    tally.bucket,
                    tally.events,
                    tally.conversions,
                    tally.value_sum,
                    tally.model_errors,
                    tally.ran_assigned_model,
                    tally.outcome_counts,
                    tally.last_event_at,
                )
                params += [
                    f.get_db_prep_save(v, connection) for f, v in zip(fields, values, strict=True)
                ]
            cursor.execute(
                f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES "
                f"{', '.join([placeholder] * len(chunk))} "
                f"ON CONFLICT (rollout_id, device_id) DO UPDATE SET {updates}",
                params,
            )


def _tallies_store(tallies: dict[tuple[uuid.UUID, str], Tally]) -> None:
    """Add tallies to the devices' stored rows. The caller holds the devices' exposure rows
    locked (`_exposures_locked`), in the same transaction."""
    if not tallies:
        return
    stored = _device_outcomes_read(sorted(tallies))
    for key, tally in tallies.items():
        if key in stored:
            tally.merge(stored[key])
    _device_outcomes_write(tallies)


def _events_mark(settled: dict[tuple[uuid.UUID | None, str], list[int]]) -> None:
    for (rollout_id, arm), ids in settled.items():
        for chunk in _chunks(ids):
            OutcomeEvent.objects.filter(pk__in=chunk).update(
                attributed=True, rollout_id=rollout_id, arm=arm
            )


def device_outcomes_discard_stale(*, rollout_id, device_ids: list[str] | None = None) -> int:
    """Delete the outcome rows of devices (None: any device of the rollout) that are no longer
    in the arm their row names, or no longer comparable; return how many.

    Connected to `rollout.signals.exposures_changed`, so it runs in the transaction that moved
    them, while their exposure rows are locked: every outcome row names its device's arm
    (the analysis relies on it), and a device that moves starts again from its new arm's
    events.
    """
    current = Exposure.objects.filter(
        rollout_id=rollout_id, device_id=OuterRef("device_id"), arm=OuterRef("arm"), comparable=True
    )
    stale = DeviceOutcome.objects.filter(rollout_id=rollout_id).exclude(Exists(current))
    if device_ids is None:
        return stale.delete()[0]
    return sum(stale.filter(device_id__in=chunk).delete()[0] for chunk in _chunks(device_ids))


def on_exposures_changed(sender, *, rollout_id, device_ids, **kwargs) -> None:
    device_outcomes_discard_stale(rollout_id=rollout_id, device_ids=device_ids)


# --------------------------------------------------------------------------- the job


def _attribute_batch(events: list[StoredEvent], now: datetime) -> int:
    """Count, settle or leave each event of a locked batch; return how many were settled."""
    skew = timedelta(seconds=settings.EVENT_CLOCK_SKEW_SECONDS)
    patience = timedelta(seconds=settings.EVENT_ATTRIBUTION_PATIENCE_SECONDS)
    by_flow = _rollouts_for(events, skew)
    candidates = {
        event.id: [r for r in by_flow.get(event.flow_id, ()) if r.covers(event.occurred_at, skew)]
        for event in events
    }
    exposures = _exposures_locked(
        {r.id for rollouts in candidates.values() for r in rollouts},
        {event.device_id for event in events if candidates[event.id]},
    )

    settled: dict[tuple[uuid.UUID | None, str], list[int]] = defaultdict(list)
    tallies: dict[tuple[uuid.UUID, str], Tally] = {}
    for event in events:
        exposed = [
            (rollout, exposures[(rollout.id, event.device_id)])
            for rollout in candidates[event.id]
            if (rollout.id, event.device_id) in exposures
        ]
        if candidates[event.id] and not exposed and event.received_at > now - patience:
            continue  # its exposure may still be buffered: look again later
        for rollout, exposure in exposed:
            if rollout.counts(event.occurred_at, exposure, skew):
                tally_add(tallies, (rollout.id, event.device_id), exposure, event, rollout)
                settled[(rollout.id, exposure.arm)].append(event.id)
                break
        else:
            settled[(None, "")].append(event.id)

    _tallies_store(tallies)
    _events_mark(settled)
    return sum(len(ids) for ids in settled.values())


def _attribute(*, limit: int, batch: int, now: datetime | None) -> tuple[int, int]:
    """Return (events settled, events examined)."""
    now = now or timezone.now()
    settled, examined, after = 0, 0, None
    while examined < limit:
        size = min(batch, limit - examined)
        with transaction.atomic():
            events = _events_locked(after, size)
            if not events:
                break
            settled += _attribute_batch(events, now)
        examined += len(events)
        after = (events[-1].received_at, events[-1].id)
        if len(events) < size:
            break
    return settled, examined


def events_attribute(
    *, limit: int = 50_000, batch: int = BATCH, now: datetime | None = None
) -> int:
    """Attribute up to `limit` unattributed events, oldest received first; return how many
    were settled (counted for an arm, or closed with none).

    Each batch of `batch` events is one transaction. Events left waiting for an exposure are
    stepped over (the cursor moves past them), so they never hold up the events behind them.
    """
    return _attribute(limit=limit, batch=batch, now=now)[0]


def ledger_catch_up(
    *, limit: int = 50_000, wait: float = FLUSH_LEASE_SECONDS, passes: int | None = None
) -> int:
    """Flush buffered exposures, then attribute every event that can be; return events settled.

    The judge calls this first, so a device that polled and reported before the call is
    counted. It stops once a pass reaches the end of the unattributed events (or after
    `passes`). `wait` bounds the wait for another flusher's lease: workers only, never a request.

    When it ends complete, it moves the ledger's checkpoint (`ledger_complete_through`): to its
    own start when it drained the buffer itself, else to when another flusher last did. When
    the buffer could not be flushed and nobody drained it, the checkpoint stays where it was,
    and analyses say so through their watermark.
    """
    started = timezone.now()
    try:
        while exposure_buffer_flush(wait=wait):
            pass
        drained_at = started
    except ExposureBufferUnavailable as error:
        logger.warning("ledger.catch_up_without_flush: %s", error)
        drained_at = exposure_buffer_drained_at()
    total, complete = 0, False
    for _ in itertools.count() if passes is None else range(passes):
        settled, examined = _attribute(limit=limit, batch=BATCH, now=None)
        total += settled
        if examined < limit:
            complete = True
            break
        if not settled:
            break
    if complete and drained_at is not None:
        ledger_checkpoint_advance(drained_at)
    return total


def ledger_checkpoint_advance(moment: datetime) -> None:
    """Move the checkpoint forward to `moment` (never back: catch-ups may finish out of order)."""
    if not LedgerCheckpoint.objects.filter(pk=1, complete_through__lt=moment).update(
        complete_through=moment
    ):
        LedgerCheckpoint.objects.get_or_create(pk=1, defaults={"complete_through": moment})


def ledger_complete_through() -> datetime | None:
    """The time up to which the ledger is known complete (None: no catch-up has finished yet)."""
    return LedgerCheckpoint.objects.filter(pk=1).values_list("complete_through", flat=True).first()
