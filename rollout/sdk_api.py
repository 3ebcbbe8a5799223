"""
The endpoints every device polls (CONTRACT.md, SDK part).

Plain Django views, not DRF: the poll is the hottest path of the system and is answered from
the in-process snapshot (`rollout.cache`) with no database or Redis round trip in steady state.
"""

from django.http import HttpResponse, HttpResponseNotModified

from .poll import assignments_encoded, assignments_for, current_models
from .sdk_requests import (
    SdkRequestError,
    app_doc_for,
    base_url_of,
    device_from,
    query_params,
    sdk_method,
    sdk_rate_limit_check,
)


def _answer(request, payload: bytes, etag: str) -> HttpResponse:
    if etag in request.META.get("HTTP_IF_NONE_MATCH", ""):
        response = HttpResponseNotModified()
    else:
        response = HttpResponse(payload, content_type="application/json")
    response["ETag"] = etag
    response["Cache-Control"] = "private, no-cache"
    return response


def _poll(request, *, flow_name: str | None, single: bool) -> HttpResponse:
    try:
        doc = app_doc_for(request)
        params = query_params(request)
        device_id, sdk, sdk_text = device_from(params)
        sdk_rate_limit_check(request, doc, device_id)
        assignments = assignments_for(
            doc,
            device_id=device_id,
            sdk=sdk,
            sdk_text=sdk_text,
            flow_name=flow_name,
            current=current_models(params.get("current", "")),
        )
    except SdkRequestError as error:
        return error.response()
    return _answer(
        request,
        *assignments_encoded(doc, assignments, base_url=base_url_of(request), single=single),
    )


@sdk_method("GET")
def sdk_assignments(request):
    return _poll(request, flow_name=query_params(request).get("flow") or None, single=False)


@sdk_method("GET")
def sdk_flow_latest(request, flow_name: str):
    """One flow's entry, for the simplest clients that read `url` from a fixed address."""
    return _poll(request, flow_name=flow_name, single=True)
