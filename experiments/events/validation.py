"""
Checking a device's batch of outcome events, one event at a time (pure: no Django).

Contract (CONTRACT.md, `POST /api/v1/sdk/events`): each event is checked on its own; an
invalid one is reported by index with a stable code and a sentence, and never costs its valid
neighbours their place. A repeated id inside one batch counts once. What is kept is what the
database can store: no NUL characters or lone surrogates, finite numbers within bounds.
"""

import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rollout.assignment import FlowDoc
from rollout.metrics import MODEL_ERROR

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


class _Invalid(Exception):
    def __init__(self, error: str, detail: str):
        super().__init__(detail)
        self.error, self.detail = error, detail


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
