"""
`POST /api/v1/sdk/events` (CONTRACT.md, SDK part): a device reports outcomes in batches.

A plain Django view like the poll, authenticated the same way (the app's SDK key). It answers
with what was kept and, so one request does both, the device's current assignments (the body
of `GET /api/v1/sdk/assignments`, exposures noted on the way). Every bad input is a 4xx in the
contract's error shape; valid events are kept even when neighbours are rejected.
"""

import json

from django.http import HttpResponse

from rollout.poll import device_assignments_encoded
from rollout.sdk_requests import (
    SdkRequestError,
    app_doc_for,
    base_url_of,
    device_from,
    json_object_body,
    sdk_method,
    sdk_rate_limit_check,
)

from .events.validation import MAX_BODY_BYTES, MAX_EVENTS
from .services import events_ingest

_TOO_LARGE = SdkRequestError(
    413,
    "too_large",
    f"A request carries at most {MAX_EVENTS} events and {MAX_BODY_BYTES // 1024 // 1024} MiB; "
    "send them in smaller batches.",
)


def _events(payload: dict) -> list:
    events = payload.get("events")
    if not isinstance(events, list):
        raise SdkRequestError(
            400, "invalid_events", "events is required: a list of event objects (it may be empty)."
        )
    if len(events) > MAX_EVENTS:
        raise _TOO_LARGE
    return events


@sdk_method("POST")
def sdk_events(request):
    try:
        doc = app_doc_for(request)
        payload = json_object_body(request, max_bytes=MAX_BODY_BYTES, too_large=_TOO_LARGE)
        # device_from expects text; anything else is simply missing (a clear 400, never a 500).
        device_id, sdk, sdk_text = device_from(
            {
                name: payload[name]
                for name in ("device_id", "sdk_version")
                if isinstance(payload.get(name), str)
            }
        )
        sdk_rate_limit_check(request, doc, device_id)
        result = events_ingest(
            doc, device_id=device_id, sdk=sdk, sdk_text=sdk_text, raw_events=_events(payload)
        )
        assignments = device_assignments_encoded(
            doc, device_id=device_id, sdk=sdk, sdk_text=sdk_text, base_url=base_url_of(request)
        )
    except SdkRequestError as error:
        return error.response()
    # The assignments are bytes the poll encoded before (one per arm combination): spliced in
    # as they are rather than decoded and encoded again.
    head = json.dumps(
        {
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "rejected": [rejection.as_dict() for rejection in result.rejected],
        },
        separators=(",", ":"),
    ).encode()
    return HttpResponse(
        head[:-1] + b',"assignments":' + assignments + b"}", content_type="application/json"
    )
