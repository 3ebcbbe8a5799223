"""
Outcome events from devices: validation of a batch with partial acceptance, and its bulk write.

Contract (CONTRACT.md, `POST /api/v1/sdk/events`):
- Each event is checked on its own (`events_validate`); an invalid one is reported by index and
  never costs its valid neighbours their place. A repeated id inside one batch counts once.
- The valid events are written in one `INSERT ... ON CONFLICT (app_id, event_id) DO NOTHING
  RETURNING event_id` per chunk (`events_write`): the unique constraint arbitrates between
  retries, even concurrent ones, so an event is accepted exactly once and every later copy is
  a duplicate.
- Events with nothing to attribute them to (no active or recently rolled-back rollout on the
  flow, or a device whose SDK cannot run the rollout's models) are written as attributed
  already, so the attribution job never looks at them.
"""

import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import DEFAULT_DB_ALIAS, connections
from django.utils import timezone

from registry.models import Flow
from rollout.assignment import FlowDoc, SdkVersion
from rollout.documents import AppDoc

from .models import MODEL_ERROR, OutcomeEvent

MAX_EVENTS = 1000
MAX_BODY_BYTES = 1024 * 1024
MAX_OUTCOME_CHARS = 100
MAX_SIGNALS = 100
MAX_SIGNAL_NAME_CHARS = 100
MAX_SIGNAL_TEXT_CHARS = 200
MAX_FUTURE = timedelta(days=1)
MAX_AGE = timedelta(days=90)
# Rows per INSERT: SQLite binds 14 parameters per row (its limit is 32 766); PostgreSQL one.
WRITE_CHUNK = 1000

_COLUMNS = (
    "app",
    "event_id",
    "flow",
    "device_id",
    "sdk_version",
    "model_id",
    "outcome",
    "value",
    "occurred_at",
    "received_at",
    "signals",
    "attributed",
    "rollout",
    "arm",
)


@dataclass(slots=True)
class ValidEvent:
    index: int
    event_id: uuid.UUID
    flow: FlowDoc
    outcome: str
    occurred_at: datetime
    model_id: uuid.UUID | None = None
    value: float | None = None
    signals: dict | None = None


@dataclass(frozen=True)
class Rejection:
    index: int
    error: str
    detail: str

    def as_dict(self) -> dict:
        return {"index": self.index, "error": self.error, "detail": self.detail}


@dataclass(frozen=True)
class Validated:
    events: list[ValidEvent]  # distinct ids, in batch order
    rejected: list[Rejection]
    repeated: int  # valid events whose id appeared earlier in the same batch


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: list[Rejection]


class _Invalid(Exception):
    def __init__(self, error: str, detail: str):
        super().__init__(detail)
        self.error, self.detail = error, detail


# --------------------------------------------------------------------------- validation


def _storable(text: str) -> bool:
    """PostgreSQL stores neither NUL characters nor lone surrogates (JSON allows both)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _event_id(raw) -> uuid.UUID:
    if not isinstance(raw, str):
        raise _Invalid("invalid_id", "id is required: a UUID, unique per event.")
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise _Invalid("invalid_id", f"id {_shown(raw)} is not a UUID.") from None


def _flow(raw, flows: dict[str, FlowDoc]) -> FlowDoc:
    if not isinstance(raw, str) or not raw:
        raise _Invalid("invalid_flow", "flow is required: the name of one of the app's flows.")
    flow = flows.get(raw)
    if flow is None:
        raise _Invalid("unknown_flow", f"This app has no flow {_shown(raw)}.")
    return flow


def _outcome(raw) -> str:
    if (
        not isinstance(raw, str)
        or not raw.strip()
        or len(raw) > MAX_OUTCOME_CHARS
        or not _storable(raw)
    ):
        raise _Invalid(
            "invalid_outcome",
            f"outcome is required: the flow's label (such as Purchased) or '{MODEL_ERROR}', "
            f"1-{MAX_OUTCOME_CHARS} characters.",
        )
    return raw


def _occurred_at(raw, now: datetime) -> datetime:
    message = "ts is required: an ISO 8601 time with its time zone, such as 2026-11-28T10:00:00Z."
    if not isinstance(raw, str) or len(raw) > 64:
        raise _Invalid("invalid_ts", message)
    try:
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise _Invalid("invalid_ts", f"ts {_shown(raw)} has no time zone; {message}")
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise _Invalid("invalid_ts", f"ts {_shown(raw)} is not a valid time; {message}") from None
    if moment > now + MAX_FUTURE:
        raise _Invalid(
            "ts_in_future",
            f"ts {_shown(raw)} is more than {MAX_FUTURE.days} day ahead of the server's clock.",
        )
    if moment < now - MAX_AGE:
        raise _Invalid(
            "ts_too_old", f"ts {_shown(raw)} is more than {MAX_AGE.days} days old; it is dropped."
        )
    return moment


def _model_id(raw) -> uuid.UUID | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            return uuid.UUID(raw)
        except ValueError:
            pass
    raise _Invalid(
        "invalid_model_id", "model_id is the id (UUID) of the model that ran, or null for the "
        "bundled model.",
    )  # fmt: skip


def _number(raw) -> float | None:
    """A finite float from a JSON number (not a boolean), or None."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    try:
        number = float(raw)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _value(raw) -> float | None:
    if raw is None:
        return None
    number = _number(raw)
    if number is None:
        raise _Invalid("invalid_value", "value, when given, is a finite number (such as 4.99).")
    return number


def _signals(raw) -> dict | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _Invalid("invalid_signals", "signals, when given, is an object of name → value.")
    if len(raw) > MAX_SIGNALS:
        raise _Invalid("invalid_signals", f"signals has {len(raw)} entries; at most {MAX_SIGNALS}.")
    clean = {}
    for name, value in raw.items():
        if not name or len(name) > MAX_SIGNAL_NAME_CHARS or not _storable(name):
            raise _Invalid(
                "invalid_signals",
                f"signal name {_shown(name)} must be 1-{MAX_SIGNAL_NAME_CHARS} characters.",
            )
        if isinstance(value, bool):
            clean[name] = value
        elif isinstance(value, int | float):
            number = _number(value)
            if number is None:
                raise _Invalid("invalid_signals", f"signal {_shown(name)} is not a finite number.")
            clean[name] = value if isinstance(value, int) and abs(value) < 2**53 else number
        elif isinstance(value, str):
            if len(value) > MAX_SIGNAL_TEXT_CHARS or not _storable(value):
                raise _Invalid(
                    "invalid_signals",
                    f"signal {_shown(name)} is text longer than {MAX_SIGNAL_TEXT_CHARS} "
                    "characters or not storable.",
                )
            clean[name] = value
        else:
            raise _Invalid(
                "invalid_signals",
                f"signal {_shown(name)} must be a number, a boolean or a text, not "
                f"{type(value).__name__ if value is not None else 'null'}.",
            )
    return clean


def event_validate(index: int, raw, flows: dict[str, FlowDoc], now: datetime) -> ValidEvent:
    """Return the checked event, or raise `_Invalid` for the first thing wrong with it."""
    if not isinstance(raw, dict):
        raise _Invalid("invalid_event", "Each event is an object with id, flow, outcome and ts.")
    return ValidEvent(
        index=index,
        event_id=_event_id(raw.get("id")),
        flow=_flow(raw.get("flow"), flows),
        outcome=_outcome(raw.get("outcome")),
        occurred_at=_occurred_at(raw.get("ts"), now),
        model_id=_model_id(raw.get("model_id")),
        value=_value(raw.get("value")),
        signals=_signals(raw.get("signals")),
    )


def events_validate(raw_events: list, *, flows: dict[str, FlowDoc], now: datetime) -> Validated:
    """Check every event of a batch; keep the valid ones, each id once."""
    events: list[ValidEvent] = []
    rejected: list[Rejection] = []
    seen: set[uuid.UUID] = set()
    repeated = 0
    for index, raw in enumerate(raw_events):
        try:
            event = event_validate(index, raw, flows, now)
        except _Invalid as invalid:
            rejected.append(Rejection(index, invalid.error, invalid.detail))
            continue
        if event.event_id in seen:
            repeated += 1
            continue
        seen.add(event.event_id)
        events.append(event)
    return Validated(events=events, rejected=rejected, repeated=repeated)


# --------------------------------------------------------------------------- the write


class _FlowIds:
    """Flow name → Flow primary key per app snapshot: one query each time a snapshot is rebuilt.

    The snapshot (`AppDoc`) names flows but does not carry their primary keys; it is rebuilt
    whenever the configuration changes, so the map is rebuilt with it.
    """

    def __init__(self):
        self._by_app: dict[str, tuple[AppDoc, dict[str, uuid.UUID]]] = {}

    def for_doc(self, doc: AppDoc) -> dict[str, uuid.UUID]:
        cached = self._by_app.get(doc.app_id)
        if cached is not None and cached[0] is doc:
            return cached[1]
        ids = dict(Flow.objects.filter(app_id=doc.app_id).values_list("name", "pk"))
        self._by_app[doc.app_id] = (doc, ids)
        return ids

    def clear(self) -> None:
        self._by_app.clear()


flow_ids = _FlowIds()


def nothing_to_attribute(flow: FlowDoc, sdk: SdkVersion) -> bool:
    """Whether no rollout can ever count this device's events of this flow (as of the snapshot).

    True when the flow has no active rollout, or the device's SDK cannot run the rollout's
    models (it is never exposed), and no recently rolled-back rollout may still claim late
    events.
    """
    if flow.rolled_back:
        return False
    return flow.rollout is None or not flow.rollout.runs_on(sdk)


# Columns that differ from event to event; the others usually repeat down a batch.
_PER_EVENT = frozenset({"event_id", "model_id", "outcome", "value", "occurred_at", "signals"})


def _uuid_text(value) -> str | None:
    return None if value is None else str(value)


def _time_text(value) -> str:
    if value.utcoffset() is None:
        raise ValueError("outcome event times must be aware datetimes")
    return value.isoformat()


def _same(value):
    return value


def _json_form(name: str, value):
    """A value in the JSON form PostgreSQL's input function for its column type reads."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return _time_text(value)
    return value


# Per-event columns' JSON forms, by the types validation gives them.
_PER_EVENT_JSON = {
    "event_id": _uuid_text,
    "model_id": _uuid_text,
    "outcome": _same,
    "value": _same,
    "occurred_at": _time_text,
    "signals": _same,
}


def _columns_of(rows: list[dict], prepare, per_event=None) -> dict[str, list]:
    """The rows' values by column, each through `prepare(name, value)` (per-event columns
    through `per_event[name](value)` when given). A column's repeated values are prepared
    once, and a column holding one value in every row is returned as that single value's list.
    """
    columns = {}
    for name in _COLUMNS:
        if name in _PER_EVENT:
            convert = (per_event or {}).get(name)
            if convert is not None:
                columns[name] = [convert(row[name]) for row in rows]
            else:
                columns[name] = [prepare(name, row[name]) for row in rows]
            continue
        memo: dict = {}
        column = []
        for row in rows:
            value = row[name]
            if value not in memo:
                memo[value] = prepare(name, value)
            column.append(memo[value])
        columns[name] = list(memo.values()) if len(memo) == 1 else column
    return columns


_CAST_TYPES: dict[str, dict[str, str]] = {}


def _cast_types(db) -> dict[str, str]:
    """Each column's SQL type as its field casts to it; the same for every connection of a
    vendor, and computed once (it is not free)."""
    casts = _CAST_TYPES.get(db.vendor)
    if casts is None:
        meta = OutcomeEvent._meta
        casts = {name: meta.get_field(name).cast_db_type(db) for name in _COLUMNS}
        _CAST_TYPES[db.vendor] = casts
    return casts


def _postgresql_insert(chunk: list[dict], fields: dict, db, target: str, conflict: str):
    """The statement and its parameters: a column with one value for the whole chunk is one
    parameter; the others travel as one JSON array of records that `jsonb_to_recordset`
    turns into the columns' own types (each field's `cast_db_type`).

    One short statement (the driver caches its parsing) instead of a VALUES list of 14
    placeholders per row, which made psycopg parse and quote ~700 values in Python.
    """
    quote = db.ops.quote_name
    casts = _cast_types(db)
    columns = _columns_of(chunk, _json_form, _PER_EVENT_JSON)
    varying = [name for name in _COLUMNS if name in _PER_EVENT or len(columns[name]) != 1]
    selected, params = [], []
    for name in _COLUMNS:
        field = fields[name]
        if name in varying:
            selected.append(f"r.{quote(field.column)}")
        else:
            selected.append(f"%s::{casts[name]}")
            value = columns[name][0]
            params.append(value)
    types = ", ".join(f"{quote(fields[name].column)} {casts[name]}" for name in varying)
    names = [fields[name].column for name in varying]
    records = [
        dict(zip(names, values, strict=True))
        for values in zip(*(columns[name] for name in varying), strict=True)
    ]
    params.append(json.dumps(records, separators=(",", ":")))
    sql = (
        f"{target} SELECT {', '.join(selected)} "
        f"FROM jsonb_to_recordset(%s::jsonb) AS r({types}) {conflict}"
    )
    return sql, params


def events_write(rows: list[dict]) -> int:
    """Insert outcome events, skipping ids the app already has; return how many were inserted.

    Each row maps `_COLUMNS` names to Python values. One `INSERT ... ON CONFLICT DO NOTHING
    RETURNING` per `WRITE_CHUNK` rows: on PostgreSQL with the rows as one JSON parameter
    (`_postgresql_insert`: preparing each value with its field's `get_db_prep_save` there
    took a third of the endpoint's CPU, and the typing happens in the database anyway);
    elsewhere (SQLite >= 3.35) as a multi-row VALUES list of values prepared by each field
    (`get_db_prep_save`: a missing JSON value is SQL NULL).
    """
    if not rows:
        return 0
    db = connections[DEFAULT_DB_ALIAS]
    meta = OutcomeEvent._meta
    fields = {name: meta.get_field(name) for name in _COLUMNS}
    quote = db.ops.quote_name
    target = (
        f"INSERT INTO {quote(meta.db_table)} "
        f"({', '.join(quote(field.column) for field in fields.values())})"
    )
    conflict = (
        f"ON CONFLICT ({quote(fields['app'].column)}, {quote(fields['event_id'].column)}) "
        f"DO NOTHING RETURNING {quote(fields['event_id'].column)}"
    )
    inserted = 0
    with db.cursor() as cursor:
        for start in range(0, len(rows), WRITE_CHUNK):
            chunk = rows[start : start + WRITE_CHUNK]
            if db.vendor == "postgresql":
                sql, params = _postgresql_insert(chunk, fields, db, target, conflict)
            else:
                prepared = _columns_of(
                    chunk, lambda name, value: fields[name].get_db_prep_save(value, db)
                )
                width = len(chunk)
                table = [
                    column if len(column) == width else column * width
                    for column in prepared.values()
                ]
                placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
                sql = f"{target} VALUES {', '.join([placeholder] * width)} {conflict}"
                params = [value for row in zip(*table, strict=True) for value in row]
            cursor.execute(sql, params)
            inserted += len(cursor.fetchall())
    return inserted


def events_ingest(
    doc: AppDoc,
    *,
    device_id: str,
    sdk: SdkVersion,
    sdk_text: str,
    raw_events: list,
    now: datetime | None = None,
) -> IngestResult:
    """Validate a device's batch against the app's snapshot and write the valid events."""
    now = now or timezone.now()
    validated = events_validate(raw_events, flows=doc.flows, now=now)
    ids = flow_ids.for_doc(doc) if validated.events else {}
    rows = []
    rejected = list(validated.rejected)
    settled = {name: nothing_to_attribute(flow, sdk) for name, flow in doc.flows.items()}
    for event in validated.events:
        flow_pk = ids.get(event.flow.name)
        if flow_pk is None:  # renamed or deleted since the snapshot was built
            rejected.append(
                Rejection(event.index, "unknown_flow", f"This app has no flow '{event.flow.name}'.")
            )
            continue
        rows.append(
            {
                "app": doc.app_id,
                "event_id": event.event_id,
                "flow": flow_pk,
                "device_id": device_id,
                "sdk_version": sdk_text,
                "model_id": event.model_id,
                "outcome": event.outcome,
                "value": event.value,
                "occurred_at": event.occurred_at,
                "received_at": now,
                "signals": event.signals,
                "attributed": settled[event.flow.name],
                "rollout": None,
                "arm": "",
            }
        )
    accepted = events_write(rows)
    rejected.sort(key=lambda r: r.index)
    return IngestResult(
        accepted=accepted,
        duplicates=len(rows) - accepted + validated.repeated,
        rejected=rejected,
    )
