"""
Request plumbing shared by the SDK endpoints (the poll and the events): authentication by the
app's SDK key, the device's identity, the rate limits, the contract's JSON errors, the request
body, and the one-method rule.

Plain Django, no DRF: the poll is the hottest path of the system, and every answer here is
built without a database or Redis round trip.
"""

import json
import math
import re
from functools import wraps
from urllib.parse import parse_qsl

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.signals import setting_changed
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from controlplane.exceptions import error_body
from registry.sdk_versions import InvalidSdkVersion, parse_sdk_version

from .cache import assignment_cache
from .documents import AppDoc
from .rate_limit import SdkRateLimits

DEVICE_ID = re.compile(r"[\x20-\x7e]{1,128}")


class SdkRequestError(Exception):
    def __init__(self, status: int, code: str, detail: str, *, retry_after: int | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.retry_after = retry_after

    def response(self) -> JsonResponse:
        response = JsonResponse(error_body(self.code, self.detail), status=self.status)
        if self.status == 401:
            response["WWW-Authenticate"] = "Bearer"
        if self.retry_after is not None:
            response["Retry-After"] = str(self.retry_after)
        return response


def query_params(request) -> dict[str, str]:
    """The query string as a plain dict (last value wins, like QueryDict.get), parsed once.

    Cheaper than building Django's QueryDict on the hottest path; every value the SDK
    endpoints accept is ASCII, so the answers are the same.
    """
    params = getattr(request, "_sdk_query", None)
    if params is None:
        params = dict(parse_qsl(request.META.get("QUERY_STRING", ""), keep_blank_values=True))
        request._sdk_query = params
    return params


def sdk_key_from(request) -> str:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise SdkRequestError(
                401, "authentication_failed", "The Authorization header must be 'Bearer <sdk key>'."
            )
        return value.strip()
    key = query_params(request).get("key", "")
    if not key:
        raise SdkRequestError(
            401,
            "not_authenticated",
            "Send the app's SDK key as 'Authorization: Bearer <key>' or the 'key' parameter.",
        )
    return key


def app_doc_for(request) -> AppDoc:
    doc = assignment_cache.app_for_key(sdk_key_from(request))
    if doc is None:
        raise SdkRequestError(401, "authentication_failed", "Unknown or revoked SDK key.")
    return doc


def device_from(params) -> tuple[str, tuple[int, int, int], str]:
    """Return (device_id, parsed sdk version, sdk version text), or raise a 400."""
    device_id = params.get("device_id")
    if not device_id or not DEVICE_ID.fullmatch(device_id):
        raise SdkRequestError(
            400,
            "invalid_device_id",
            "device_id is required: 1-128 printable ASCII characters (such as the IDFV UUID).",
        )
    sdk_text = params.get("sdk_version") or ""
    try:
        sdk = parse_sdk_version(sdk_text)
    except InvalidSdkVersion as error:
        raise SdkRequestError(400, "invalid_sdk_version", f"sdk_version: {error}") from None
    return device_id, sdk, sdk_text


_RATE_LIMIT_SETTINGS = frozenset(
    {
        "SDK_RATE_LIMIT_PER_MINUTE",
        "SDK_RATE_LIMIT_PER_DEVICE_PER_MINUTE",
        "SDK_RATE_LIMIT_TRACKED_DEVICES",
        "WEB_PROCESSES",
    }
)
_rate_limits: SdkRateLimits | None = None


def sdk_rate_limits() -> SdkRateLimits:
    """This process's buckets, made from the settings at first use (again after they change).

    Each web process sees its share of a key's traffic (the load balancer spreads a fleet's
    requests evenly), so it admits its share of the key's limit, `1 / WEB_PROCESSES`. A device's
    few requests are not spread evenly, so each process applies the whole per-device limit.
    """
    global _rate_limits
    limits = _rate_limits
    if limits is None:
        limits = _rate_limits = SdkRateLimits(
            key_per_minute=settings.SDK_RATE_LIMIT_PER_MINUTE / max(1, settings.WEB_PROCESSES),
            device_per_minute=settings.SDK_RATE_LIMIT_PER_DEVICE_PER_MINUTE,
            max_devices=settings.SDK_RATE_LIMIT_TRACKED_DEVICES,
        )
    return limits


def _rate_limit_settings_changed(*, setting, **kwargs) -> None:
    global _rate_limits
    if setting in _RATE_LIMIT_SETTINGS:
        _rate_limits = None


setting_changed.connect(_rate_limit_settings_changed)

_RATE_LIMITED = {
    "device": "Too many requests from this device",
    "key": "Too many requests with this SDK key",
}


def sdk_rate_limit_check(request, doc: AppDoc, device_id: str) -> None:
    """Take this request's tokens (its SDK key's and its device's), or raise the 429.

    In memory only: no database or Redis round trip. Per device, the device id within its app.
    """
    refusal = sdk_rate_limits().admit(sdk_key_from(request), (doc.app_id, device_id))
    if refusal is not None:
        retry_after = max(1, math.ceil(refusal.wait))
        raise SdkRequestError(
            429,
            "rate_limited",
            f"{_RATE_LIMITED[refusal.limit]}; retry after {retry_after} s (Retry-After).",
            retry_after=retry_after,
        )


_base_urls: dict[tuple[str, str], str] = {}


def base_url_of(request) -> str:
    """Scheme and host of the request, validated by `get_host` once per distinct pair."""
    key = (request.scheme, request.META.get("HTTP_HOST", ""))
    base = _base_urls.get(key)
    if base is None:
        if len(_base_urls) > 256:
            _base_urls.clear()
        base = _base_urls[key] = f"{request.scheme}://{request.get_host()}/"
    return base


def sdk_method(method: str):
    """Allow one HTTP method (GET also allows HEAD); others get the contract's JSON 405.

    CSRF does not apply: SDK requests carry a key, never a browser session cookie.
    """

    def decorator(view):
        @csrf_exempt
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if request.method != method and not (method == "GET" and request.method == "HEAD"):
                response = JsonResponse(
                    error_body("method_not_allowed", f"Use {method} for this endpoint."),
                    status=405,
                )
                response["Allow"] = method
                return response
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def json_object_body(request, *, max_bytes: int, too_large: SdkRequestError) -> dict:
    """The request's JSON object body, read within `max_bytes`, or a 4xx `SdkRequestError`.

    An announced oversize body is refused before a byte of it is read. A chunked body (no
    Content-Length) is read from the server's decoded stream: Django reads only as many bytes
    as Content-Length says, so it would see an empty body. Gunicorn decodes the chunks and says
    so with `wsgi.input_terminated`; a server that does not is sent the 411 it implies.
    """
    declared = request.META.get("CONTENT_LENGTH") or ""
    if not declared and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        if not request.META.get("wsgi.input_terminated"):
            raise SdkRequestError(
                411, "length_required", "Send the body with a Content-Length header."
            )
        try:
            body = request.META["wsgi.input"].read(max_bytes + 1)
        except Exception:
            raise SdkRequestError(
                400, "invalid_body", "The chunked body could not be read: a chunk is malformed."
            ) from None
    else:
        try:
            length = int(declared or "0")
        except ValueError:
            length = -1
        if length < 0:
            raise SdkRequestError(
                400, "invalid_content_length", "The Content-Length header is not a number."
            )
        if length > max_bytes:
            raise too_large
        try:
            body = request.body
        except RequestDataTooBig:
            raise too_large from None
    if len(body) > max_bytes:
        raise too_large
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise SdkRequestError(
            400, "invalid_json", "The body must be a JSON object (UTF-8)."
        ) from None
    if not isinstance(payload, dict):
        raise SdkRequestError(400, "invalid_json", "The body must be a JSON object.")
    return payload
