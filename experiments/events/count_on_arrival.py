"""
Counting events as they arrive: a batch comes from one device, so on PostgreSQL its events are
counted for the device's arm by the statement that stores them, and the attribution job only
takes what is left.

Contract:
- The rules are the attribution job's (`RolloutTerms.counts`): an event counts for the arm of
  the device's exposure in the flow's active rollout when the rollout covers its time, the
  exposure is comparable, and it happened inside the arm's window. They are applied here to
  the exposure as read just before; the statement then locks that exposure row (as the job
  and the ledger's writers do) and counts the events only if the row is still what was read.
  Otherwise they are stored unattributed, for the job.
- Only events new to the database are counted (the statement aggregates what its insert
  returns), so a re-sent batch counts nothing twice. The device's outcome row is updated by
  addition in the same statement, under the exposure row's lock.
- An event not counted now (its exposure is still buffered in Redis, it falls outside the
  arm's window, or only an ended rollout could count it) is stored unattributed.
- Two statements per batch (the exposure read and one write), prepared once per connection;
  no ORM query building, no explicit transaction. Other databases store the events
  unattributed and leave all counting to the job.
"""

import json
import uuid
from datetime import timedelta

from django.db import connection

from rollout.exposures import exposure_remember_recorded
from rollout.metrics import MODEL_ERROR
from rollout.models import Exposure

from ..models import DeviceOutcome, OutcomeEvent
from .rules import ExposureView, RolloutTerms
from .store import (
    EventBatch,
    EventRow,
    events_write,
    fast_cursor,
    own_record,
    own_record_columns,
)


def _exposures_read(
    cursor, device_id: str, rollout_ids: list[uuid.UUID]
) -> dict[uuid.UUID, ExposureView]:
    """rollout id → the device's exposure, as committed now (no lock)."""
    cursor.execute(
        f"SELECT rollout_id, {', '.join(ExposureView._fields)} FROM {Exposure._meta.db_table} "
        "WHERE device_id = %s AND rollout_id = ANY(%s)",
        [device_id, rollout_ids],
    )
    return {rollout_id: ExposureView(*exposure) for rollout_id, *exposure in cursor}


def _counting_insert_sql() -> str:
    events, outcomes, exposures = (
        OutcomeEvent._meta.db_table,
        DeviceOutcome._meta.db_table,
        Exposure._meta.db_table,
    )
    same = "d.arm = excluded.arm"

    def added(column: str) -> str:
        return f"{column} = CASE WHEN {same} THEN d.{column} + excluded.{column} ELSE excluded.{column} END"

    return f"""
WITH exposure AS MATERIALIZED (
    SELECT 1 FROM {exposures}
    WHERE rollout_id = %(rollout)s AND device_id = %(device)s AND arm = %(arm)s
      AND arm_since = %(arm_since)s AND comparable
    FOR NO KEY UPDATE
), still AS (
    SELECT EXISTS (SELECT 1 FROM exposure) AS counted
), inserted AS (
    INSERT INTO {events} (app_id, event_id, flow_id, device_id, sdk_version, model_id,
        outcome, value, occurred_at, received_at, signals, attributed, rollout_id, arm)
    SELECT %(app)s::uuid, r.e, %(flow)s::uuid, %(device)s, %(sdk)s, r.m, r.o, r.v, r.t,
        %(received)s::timestamptz, r.s, still.counted,
        CASE WHEN still.counted THEN %(rollout)s::uuid END,
        CASE WHEN still.counted THEN %(arm)s ELSE '' END
    FROM jsonb_to_recordset(%(records)s::jsonb) AS r({own_record_columns(connection)}), still
    ON CONFLICT (app_id, event_id) DO NOTHING
    RETURNING attributed, outcome, value, model_id, occurred_at
), counted AS (
    SELECT * FROM inserted WHERE attributed
), per_outcome AS (
    SELECT jsonb_object_agg(outcome, n) AS counts
    FROM (SELECT outcome, count(*) AS n FROM counted GROUP BY outcome) AS grouped
), written AS (
    INSERT INTO {outcomes} AS d (rollout_id, device_id, arm, arm_since, bucket, events,
        conversions, value_sum, model_errors, ran_assigned_model, outcome_counts, last_event_at)
    SELECT %(rollout)s::uuid, %(device)s, %(arm)s, %(arm_since)s, %(bucket)s, count(*),
        count(*) FILTER (WHERE outcome = %(label)s),
        coalesce(sum(value), 0),
        count(*) FILTER (WHERE outcome = '{MODEL_ERROR}'),
        coalesce(bool_or(model_id IS NOT DISTINCT FROM %(arm_model)s::uuid), false),
        (SELECT counts FROM per_outcome),
        max(occurred_at)
    FROM counted HAVING count(*) > 0
    ON CONFLICT (rollout_id, device_id) DO UPDATE SET
        {added("events")},
        {added("conversions")},
        {added("value_sum")},
        {added("model_errors")},
        ran_assigned_model = CASE WHEN {same}
            THEN d.ran_assigned_model OR excluded.ran_assigned_model
            ELSE excluded.ran_assigned_model END,
        outcome_counts = CASE WHEN {same} THEN (
            SELECT coalesce(jsonb_object_agg(key, total), '{{}}'::jsonb)
            FROM (SELECT key, sum(value::bigint) AS total
                  FROM (SELECT * FROM jsonb_each_text(d.outcome_counts)
                        UNION ALL SELECT * FROM jsonb_each_text(excluded.outcome_counts)) AS both_
                  GROUP BY key) AS summed
        ) ELSE excluded.outcome_counts END,
        last_event_at = CASE WHEN {same}
            THEN greatest(d.last_event_at, excluded.last_event_at)
            ELSE excluded.last_event_at END,
        arm = excluded.arm, arm_since = excluded.arm_since, bucket = excluded.bucket
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM counted)"""


_COUNTING_INSERT: list[str] = []  # built once: the table names are fixed


def _insert_counting(cursor, batch: EventBatch, rows: list[EventRow], rollout, exposure) -> int:
    """Store rows of one rollout's flow and count them for the arm of `exposure`, if the
    exposure row is still as read; return how many rows were new."""
    if not _COUNTING_INSERT:
        _COUNTING_INSERT.append(_counting_insert_sql())
    arm = exposure.arm
    cursor.execute(
        _COUNTING_INSERT[0],
        {
            "rollout": rollout.id,
            "device": batch.device_id,
            "arm": arm,
            "arm_since": exposure.arm_since,
            "bucket": exposure.bucket,
            "app": str(batch.app_id),
            "flow": str(rollout.flow_id),
            "sdk": batch.sdk_version,
            "received": batch.received_at,
            "records": json.dumps([own_record(row) for row in rows], separators=(",", ":")),
            "label": rollout.positive_label,
            "arm_model": rollout.arm_models.get(arm),
        },
    )
    inserted, _ = cursor.fetchone()
    return inserted


def events_write_counted(
    batch: EventBatch, terms: dict[uuid.UUID, RolloutTerms], skew: timedelta
) -> int:
    """Store the batch, counting what can be counted now; return how many events were new.

    `terms`: by flow id, the flow's active rollout, when the device's SDK can run it.
    """
    if connection.vendor != "postgresql":
        return events_write(batch)
    device_id = batch.device_id
    with fast_cursor(connection) as cursor:
        exposures = _exposures_read(cursor, device_id, sorted({t.id for t in terms.values()}))
        by_rollout: dict[uuid.UUID, list[EventRow]] = {}
        rest = []
        for row in batch.events:
            rollout = terms.get(row.flow_id)
            exposure = rollout and exposures.get(rollout.id)
            if exposure and rollout.counts(row.occurred_at, exposure, skew):
                by_rollout.setdefault(rollout.id, []).append(row)
            else:
                rest.append(row)
        inserted = 0
        for rollout_id, rows in sorted(by_rollout.items()):
            rollout = next(t for t in terms.values() if t.id == rollout_id)
            inserted += _insert_counting(cursor, batch, rows, rollout, exposures[rollout_id])
    if rest:
        inserted += events_write(
            EventBatch(batch.app_id, device_id, batch.sdk_version, batch.received_at, rest)
        )
    for rollout_id, exposure in exposures.items():
        exposure_remember_recorded(
            rollout_id=str(rollout_id), device_id=device_id, arm=exposure.arm
        )
    return inserted
