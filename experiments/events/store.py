"""
Writing outcome events: one statement per batch, de-duplicated by the database.

Contract: `events_write` inserts a batch's events with `INSERT ... ON CONFLICT (app, event_id)
DO NOTHING`; the unique constraint arbitrates between retries, even concurrent ones, so an
event is stored exactly once and every later copy is a duplicate.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import DEFAULT_DB_ALIAS, connections

from ..models import OutcomeEvent

# Rows per INSERT: SQLite binds 14 parameters per row (its limit is 32 766); PostgreSQL one.
WRITE_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class EventRow:
    """One event's own values, as stored."""

    event_id: str  # canonical UUID text
    flow_id: uuid.UUID
    attributed: bool  # True: nothing can count it, so the attribution job never looks at it
    outcome: str
    occurred_at: datetime  # aware
    model_id: str | None = None
    value: float | None = None
    signals: dict | None = None


@dataclass(frozen=True)
class EventBatch:
    """The events of one request, ready to write: what they share, and each one's own values."""

    app_id: str | uuid.UUID
    device_id: str
    sdk_version: str
    received_at: datetime
    events: list[EventRow]


# Each event's own columns, with their short keys in the JSON records of `_postgresql_insert`.
_OWN = (
    ("event_id", "e"),
    ("model_id", "m"),
    ("outcome", "o"),
    ("value", "v"),
    ("occurred_at", "t"),
    ("signals", "s"),
)
# Columns that usually hold one value down a batch: parameters then, record keys otherwise.
_USUALLY_SHARED = (("flow", "f"), ("attributed", "a"))
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


def own_record(row: EventRow) -> dict:
    """An event's own values as a JSON record (keys of `_OWN`); a missing key reads as NULL,
    so empty values are left out."""
    record = {"e": row.event_id, "o": row.outcome, "t": row.occurred_at.isoformat()}
    if row.model_id is not None:
        record["m"] = row.model_id
    if row.value is not None:
        record["v"] = row.value
    if row.signals is not None:
        record["s"] = row.signals
    return record


def own_record_columns(db) -> str:
    """The column list that reads `own_record`s in `jsonb_to_recordset`, in the columns' types."""
    casts = _cast_types(db)
    return ", ".join(f"{key} {casts[name]}" for name, key in _OWN)


def _record(row: EventRow, shared: bool) -> dict:
    record = own_record(row)
    if not shared:
        record.update(f=str(row.flow_id), a=row.attributed)
    return record


def _postgresql_insert(batch: EventBatch, rows: list[EventRow], db, target: str, tail: str):
    """The statement and its parameters: what the events share is one parameter each, and
    their own values travel as one JSON array of records that `jsonb_to_recordset` turns
    into the columns' own types (each field's `cast_db_type`).

    One short statement instead of a VALUES list of 14 placeholders per row, which made the
    driver quote ~700 values in Python; the records' short keys keep the JSON small to write
    and to parse.
    """
    casts = _cast_types(db)
    first = rows[0]
    shared = all(r.flow_id == first.flow_id and r.attributed == first.attributed for r in rows)
    values = {
        "app": str(batch.app_id),
        "device_id": batch.device_id,
        "sdk_version": batch.sdk_version,
        "received_at": batch.received_at.isoformat(),
        "rollout": None,
        "arm": "",
    }
    if shared:
        values.update(flow=str(first.flow_id), attributed=first.attributed)
    keys = dict(_OWN if shared else _OWN + _USUALLY_SHARED)
    selected, params = [], []
    for name in _COLUMNS:
        if name in values:
            selected.append(f"%s::{casts[name]}")
            params.append(values[name])
        else:
            selected.append(f"r.{keys[name]}")
    types = ", ".join(f"{key} {casts[name]}" for name, key in keys.items())
    params.append(json.dumps([_record(r, shared) for r in rows], separators=(",", ":")))
    sql = (
        f"{target} SELECT {', '.join(selected)} "
        f"FROM jsonb_to_recordset(%s::jsonb) AS r({types}) {tail}"
    )
    return sql, params


def _values_insert(batch: EventBatch, rows: list[EventRow], fields: dict, db, target, conflict):
    """The statement for other databases (SQLite >= 3.24): a multi-row VALUES list of values
    prepared by each field (`get_db_prep_save`: a missing JSON value is SQL NULL)."""
    params = []
    for row in rows:
        values = {
            "app": batch.app_id,
            "event_id": row.event_id,
            "flow": row.flow_id,
            "device_id": batch.device_id,
            "sdk_version": batch.sdk_version,
            "model_id": row.model_id,
            "outcome": row.outcome,
            "value": row.value,
            "occurred_at": row.occurred_at,
            "received_at": batch.received_at,
            "signals": row.signals,
            "attributed": row.attributed,
            "rollout": None,
            "arm": "",
        }
        params += [fields[name].get_db_prep_save(values[name], db) for name in _COLUMNS]
    placeholder = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
    return f"{target} VALUES {', '.join([placeholder] * len(rows))} {conflict}", params


def fast_cursor(db):
    """On PostgreSQL, a cursor that sends parameters apart from the statement, so psycopg
    prepares a statement it sees again and again once per connection: the database then
    skips parsing and planning it (a fifth of its work per batch for the insert). Django's own
    cursors bind on the client, which suits everything else. Wrapped like Django's, so it is
    logged and its errors translated.
    """
    if db.vendor != "postgresql":
        return db.cursor()
    from django.db.backends.postgresql.base import ServerBindingCursor

    db.close_if_health_check_failed()
    db.ensure_connection()
    raw = ServerBindingCursor(db.connection)
    return db.make_debug_cursor(raw) if db.queries_logged else db.make_cursor(raw)


def events_write(batch: EventBatch) -> int:
    """Insert a batch's events, skipping ids the app already has; return how many were new.

    One `INSERT ... ON CONFLICT (app, event_id) DO NOTHING` per `WRITE_CHUNK` events, whose
    row count is the events inserted. On PostgreSQL the events travel as one JSON parameter
    (`_postgresql_insert`); preparing each value with its field's `get_db_prep_save` took a
    third of the endpoint's CPU, and the typing happens in the database anyway.
    """
    if not batch.events:
        return 0
    if batch.received_at.utcoffset() is None:
        raise ValueError("outcome event times must be aware datetimes")
    db = connections[DEFAULT_DB_ALIAS]
    meta = OutcomeEvent._meta
    fields = {name: meta.get_field(name) for name in _COLUMNS}
    quote = db.ops.quote_name
    target = (
        f"INSERT INTO {quote(meta.db_table)} "
        f"({', '.join(quote(field.column) for field in fields.values())})"
    )
    tail = (
        f"ON CONFLICT ({quote(fields['app'].column)}, {quote(fields['event_id'].column)}) "
        "DO NOTHING"
    )
    inserted = 0
    with fast_cursor(db) as cursor:
        for start in range(0, len(batch.events), WRITE_CHUNK):
            rows = batch.events[start : start + WRITE_CHUNK]
            if db.vendor == "postgresql":
                sql, params = _postgresql_insert(batch, rows, db, target, tail)
            else:
                sql, params = _values_insert(batch, rows, fields, db, target, tail)
            cursor.execute(sql, params)
            inserted += cursor.rowcount
    return inserted
