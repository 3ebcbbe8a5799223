"""
Outcome events from devices: validation of a batch with partial acceptance, and its write.

Contract (CONTRACT.md, `POST /api/v1/sdk/events`):
- Each event is checked on its own (`events_validate`); an invalid one is reported by index and
  never costs its valid neighbours their place. A repeated id inside one batch counts once.
- The valid events are written in one statement per batch (`event_store.events_write`), which
  stores each event id once per app, even under concurrent retries. While a flow has an active
  rollout, its events are counted for the device's arm in the same transaction
  (`arrival.events_write_counted`).
- Events no rollout can count are written as attributed already, so the attribution job never
  looks at them: the flow has no active rollout the device's SDK can run, and the event
  happened after the flow's last rollout ended (`countable_until`). Late events of an ended
  rollout still go to attribution.
"""

import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone

from registry.models import Flow
from rollout.assignment import FlowDoc, SdkVersion
from rollout.documents import AppDoc

from .arrival import events_write_counted, rollout_terms_of
from .attribution import RolloutTerms
from .event_store import EventBatch, EventRow, events_write
from .models import MODEL_ERROR

MAX_EVENTS = 1000
MAX_BODY_BYTES = 1024 * 1024
MAX_OUTCOME_CHARS = 100
MAX_SIGNALS = 100
MAX_SIGNAL_NAME_CHARS = 100
MAX_SIGNAL_TEXT_CHARS = 200
MAX_FUTURE = timedelta(days=1)
MAX_AGE = timedelta(days=90)
# Revenue and counts fit well inside it, and per-arm sums of squares of millions of such
# values stay far from float overflow (two values of 1e154 already overflow one).
MAX_EVENT_VALUE_ABS = 1e9


@dataclass(slots=True)
class ValidEvent:
    index: int
    event_id: str  # canonical UUID text (lower case, hyphens)
    flow: FlowDoc
    outcome: str
    occurred_at: datetime
    model_id: str | None = None  # canonical UUID text; None: the bundled model
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


_CANONICAL_UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z", re.I
)


def _uuid_text(raw: str) -> str:
    """The canonical text of a UUID in any form `uuid.UUID` reads; ValueError if none.

    SDKs send the canonical form; matching it costs a fifth of building a `uuid.UUID`.
    """
    if _CANONICAL_UUID.match(raw):
        return raw.lower()
    return str(uuid.UUID(raw))


def _event_id(raw) -> str:
    if not isinstance(raw, str):
        raise _Invalid("invalid_id", "id is required: a UUID, unique per event.")
    try:
        return _uuid_text(raw)
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


def _model_id(raw) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            return _uuid_text(raw)
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
    """A finite number within ±MAX_EVENT_VALUE_ABS.

    A JSON number beyond the range of a double (1e400, a 400-digit integer) is `invalid_value`
    like Infinity: the parser turns 1e400 into infinity, and the spelling should not change the
    code.
    """
    if raw is None:
        return None
    number = _number(raw)
    if number is None:
        raise _Invalid("invalid_value", "value, when given, is a finite number (such as 4.99).")
    if abs(number) > MAX_EVENT_VALUE_ABS:
        raise _Invalid(
            "value_out_of_range",
            f"value {_shown(raw)} is out of range: it must be between "
            f"-{MAX_EVENT_VALUE_ABS:,.0f} and {MAX_EVENT_VALUE_ABS:,.0f}.",
        )
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
    seen: set[str] = set()
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


_ANY_TIME = datetime.min.replace(tzinfo=UTC)


def countable_until(flow: FlowDoc, sdk: SdkVersion, skew: timedelta) -> datetime | None:
    """The time after which no rollout can count this device's events of this flow (as of the
    snapshot), or None when any of them may count (a rollout is active and can run here).

    Events after it are stored as attributed already, so the attribution job never looks at
    them. An ended rollout (completed or rolled back) still counts the events that happened
    before its end, give or take the clock skew, however late they arrive.
    """
    if flow.rollout is not None and flow.rollout.runs_on(sdk):
        return None
    if flow.last_ended_at is None:
        return _ANY_TIME
    return flow.last_ended_at + skew


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
    skew = timedelta(seconds=settings.EVENT_CLOCK_SKEW_SECONDS)
    until = {name: countable_until(flow, sdk, skew) for name, flow in doc.flows.items()}
    terms: dict[uuid.UUID, RolloutTerms] = {}
    for event in validated.events:
        flow_pk = ids.get(event.flow.name)
        if flow_pk is None:  # renamed or deleted since the snapshot was built
            rejected.append(
                Rejection(event.index, "unknown_flow", f"This app has no flow '{event.flow.name}'.")
            )
            continue
        if until[event.flow.name] is None and flow_pk not in terms:
            terms[flow_pk] = rollout_terms_of(event.flow, flow_pk)
        rows.append(
            EventRow(
                event_id=event.event_id,
                flow_id=flow_pk,
                attributed=until[event.flow.name] is not None
                and event.occurred_at > until[event.flow.name],
                outcome=event.outcome,
                occurred_at=event.occurred_at,
                model_id=event.model_id,
                value=event.value,
                signals=event.signals,
            )
        )
    batch = EventBatch(
        app_id=doc.app_id, device_id=device_id, sdk_version=sdk_text, received_at=now, events=rows
    )
    # While a rollout may count them, they are counted as they arrive.
    accepted = events_write_counted(batch, terms, skew) if terms else events_write(batch)
    rejected.sort(key=lambda r: r.index)
    return IngestResult(
        accepted=accepted,
        duplicates=len(rows) - accepted + validated.repeated,
        rejected=rejected,
    )
