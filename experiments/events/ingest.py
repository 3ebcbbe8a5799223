"""
Taking in a device's batch of outcome events: validated (`validation`), stored, and counted.

Contract (CONTRACT.md, `POST /api/v1/sdk/events`):
- Each event is checked on its own (`validation.events_validate`); an invalid one is reported by index and
  never costs its valid neighbours their place. A repeated id inside one batch counts once.
- The valid events are written in one statement per batch (`store.events_write`), which
  stores each event id once per app, even under concurrent retries. While a flow has an active
  rollout, its events are counted for the device's arm in the same transaction
  (`count_on_arrival.events_write_counted`).
- Events no rollout can count are written as attributed already, so the attribution job never
  looks at them: the flow has no active rollout the device's SDK can run, and the event
  happened after the flow's last rollout ended (`rules.countable_until`). Late events of an ended
  rollout still go to attribution.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from registry.models import Flow
from rollout.assignment import SdkVersion
from rollout.documents import AppDoc

from .count_on_arrival import events_write_counted
from .rules import RolloutTerms, countable_until, rollout_terms_of
from .store import EventBatch, EventRow, events_write
from .validation import Rejection, events_validate

# --------------------------------------------------------------------------- the write


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: list[Rejection]


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
