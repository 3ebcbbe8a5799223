"""
`POST /api/v1/sdk/events` (CONTRACT.md, SDK part): a device reports outcomes in batches.

A plain Django view like the poll, authenticated the same way (the app's SDK key). It answers
with what was kept and, so one request does both, the device's current assignments (the body
of `GET /api/v1/sdk/assignments`, exposures noted on the way). Every bad input is a 4xx in the
contract's error shape; valid events are kept even when neighbours are rejected.
"""

import json

from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from controlplane.exceptions import error_body
from rollout.sdk_api import (
    SdkRequestError,
    app_doc_for,
    base_url_of,
    device_assignments_encoded,
    device_from,
)

from .ingest import MAX_BODY_BYTES, MAX_EVENTS, events_ingest

_TOO_LARGE = (
    f"A request carries at most {MAX_EVENTS} events and {MAX_BODY_BYTES // 1024 // 1024} MiB; "
    "send them in smaller batches."
)


def _too_large() -> SdkRequestError:
    return SdkRequestError(413, "too_large", _TOO_LARGE)


def _declared_length_check(request) -> None:
    """Refuse an announced oversize body before reading a byte of it."""
    declared = request.META.get("CONTENT_LENGTH") or "0"
    try:
        length = int(declared)
    except ValueError:
        raise SdkRequestError(
            400, "invalid_content_length", "The Content-Length header is not a number."
        ) from None
    if length > MAX_BODY_BYTES:
        raise _too_large()


def _payload(request) -> dict:
    try:
        body = request.body
    except RequestDataTooBig:
        raise _too_large() from None
    if len(body) > MAX_BODY_BYTES:
        raise _too_large()
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise SdkRequestError(
            400, "invalid_json", "The body must be a JSON object (UTF-8): {device_id, ...}."
        ) from None
    if not isinstance(payload, dict):
        raise SdkRequestError(
            400, "invalid_json", "The body must be a JSON object: {device_id, sdk_version, events}."
        )
    return payload


def _events(payload: dict) -> list:
    events = payload.get("events")
    if not isinstance(events, list):
        raise SdkRequestError(
            400, "invalid_events", "events is required: a list of event objects (it may be empty)."
        )
    if len(events) > MAX_EVENTS:
        raise _too_large()
    return events


@csrf_exempt
def sdk_events(request):
    if request.method != "POST":
        response = JsonResponse(
            error_body("method_not_allowed", "Send events with POST."), status=405
        )
        response["Allow"] = "POST"
        return response
    try:
        _declared_length_check(request)
        doc = app_doc_for(request)
        payload = _payload(request)
        # device_from expects text; anything else is simply missing (a clear 400, never a 500).
        device_id, sdk, sdk_text = device_from(
            {
                name: payload[name]
                for name in ("device_id", "sdk_version")
                if isinstance(payload.get(name), str)
            }
        )
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
