"""
The endpoints every device polls (CONTRACT.md, SDK part).

Plain Django views, not DRF: the poll is the hottest path of the system and is answered from
the in-process snapshot (`rollout.cache`) with no database or Redis round trip in steady state.
"""

import hashlib
import json
import re
import uuid
from functools import wraps
from urllib.parse import parse_qsl

from django.http import HttpResponse, HttpResponseNotModified, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from controlplane.exceptions import error_body
from registry.sdk_versions import InvalidSdkVersion, parse_sdk_version
from registry.storage import model_file_url

from .allocation import arm_for_bucket
from .assignment import Assignment, assign
from .cache import assignment_cache
from .documents import AppDoc
from .exposures import baseline_confirmation_note, exposure_note
from .hashing import bucket as bucket_of

DEVICE_ID = re.compile(r"[\x20-\x7e]{1,128}")
MAX_CURRENT_MODELS = 100


class SdkRequestError(Exception):
    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail

    def response(self) -> JsonResponse:
        response = JsonResponse(error_body(self.code, self.detail), status=self.status)
        if self.status == 401:
            response["WWW-Authenticate"] = "Bearer"
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


def _current_models(text: str) -> frozenset[str]:
    if not text:
        return frozenset()
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if len(ids) > MAX_CURRENT_MODELS:
        raise SdkRequestError(400, "invalid_current", "current lists too many model ids.")
    try:
        return frozenset(str(uuid.UUID(part)) for part in ids)
    except ValueError:
        raise SdkRequestError(
            400, "invalid_current", "current must be comma-separated model ids (UUIDs)."
        ) from None


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


def _entry(assignment: Assignment, base_url: str) -> dict:
    flow, model = assignment.flow, assignment.model
    entry = {
        "flow": flow.name,
        "flow_id": flow.flow_id,
        "model_id": None,
        "url": None,
        "sha256": None,
        "size": None,
        "format": None,
        "signature": None,
        "rollout": None,
    }
    if model is not None:
        entry.update(
            model_id=model.model_id,
            url=model_file_url(model.storage_key, base_url=base_url),
            sha256=model.sha256,
            size=model.size,
            format=model.format,
        )
    if assignment.rollout_id is not None:
        entry["rollout"] = {"id": assignment.rollout_id, "arm": assignment.arm}
    return entry


def _record(assignment: Assignment, device_id: str, sdk_text: str, current: frozenset[str]):
    """Note the exposure, and after a rollback, whether the device confirmed the baseline."""
    if assignment.rollout_id is not None:
        exposure_note(
            rollout_id=assignment.rollout_id,
            device_id=device_id,
            arm=assignment.arm,
            bucket=assignment.bucket,
            sdk_version=sdk_text,
        )
    if not current:
        return
    for rolled_back in assignment.flow.rolled_back:
        bad = {arm.model.model_id for arm in rolled_back.arms}
        if current & bad:
            continue  # still runs a rolled-back model
        runs_baseline = assignment.model is None or assignment.model.model_id in current
        if rolled_back.baseline is not None and rolled_back.baseline.model_id in current:
            runs_baseline = True
        if not runs_baseline:
            continue  # the ids it sent say nothing about this flow
        arm = arm_for_bucket(
            bucket_of(rolled_back.salt, device_id), [a.allocation for a in rolled_back.arms]
        )
        if arm is not None:
            baseline_confirmation_note(rollout_id=rolled_back.id, device_id=device_id)


def _assignments(
    doc: AppDoc,
    *,
    device_id: str,
    sdk: tuple[int, int, int],
    sdk_text: str,
    flow_name: str | None,
    current: frozenset[str],
) -> list[Assignment]:
    if flow_name is not None:
        if flow_name not in doc.flows:
            raise SdkRequestError(404, "flow_not_found", f"This app has no flow '{flow_name}'.")
        flows = [doc.flows[flow_name]]
    else:
        flows = list(doc.flows.values())
    assignments = []
    for flow in flows:
        assignment = assign(flow, device_id, sdk)
        _record(assignment, device_id, sdk_text, current)
        assignments.append(assignment)
    return assignments


def device_assignments_encoded(
    doc: AppDoc, *, device_id: str, sdk: tuple[int, int, int], sdk_text: str, base_url: str
) -> bytes:
    """The assignments body for one device as JSON bytes, noting exposures on the way."""
    assignments = _assignments(
        doc, device_id=device_id, sdk=sdk, sdk_text=sdk_text, flow_name=None, current=frozenset()
    )
    return assignments_encoded(doc, assignments, base_url=base_url)[0]


def device_assignments(
    doc: AppDoc, *, device_id: str, sdk: tuple[int, int, int], sdk_text: str, base_url: str
) -> dict:
    """The assignments body for one device, noting exposures on the way."""
    return json.loads(
        device_assignments_encoded(
            doc, device_id=device_id, sdk=sdk, sdk_text=sdk_text, base_url=base_url
        )
    )


def assignments_encoded(
    doc: AppDoc, assignments: list[Assignment], *, base_url: str, single: bool = False
) -> tuple[bytes, str]:
    """The answer's JSON bytes and ETag: the assignments body, or one flow's entry (single)."""
    poll_after = doc.poll_after_s(timezone.now())
    key = (
        single,
        base_url,
        poll_after,
        tuple(
            (a.flow.name, a.model.model_id if a.model else None, a.rollout_id, a.arm)
            for a in assignments
        ),
    )

    def build():
        entries = [_entry(assignment, base_url) for assignment in assignments]
        return entries[0] if single else {"poll_after_s": poll_after, "models": entries}

    return _encoded(doc, key, build)


def _encoded(doc: AppDoc, key: tuple, build) -> tuple[bytes, str]:
    """The JSON bytes and ETag of an answer, built once per distinct answer of a snapshot.

    A snapshot has only a handful of distinct answers (one per arm combination), so most
    polls reuse bytes encoded before instead of encoding and hashing them again.
    """
    memo = doc.encoded_answers
    found = memo.get(key)
    if found is None:
        payload = json.dumps(build(), separators=(",", ":")).encode()
        found = (payload, '"' + hashlib.blake2b(payload, digest_size=16).hexdigest() + '"')
        if len(memo) > 4096:
            memo.clear()
        memo[key] = found
    return found


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
        assignments = _assignments(
            doc,
            device_id=device_id,
            sdk=sdk,
            sdk_text=sdk_text,
            flow_name=flow_name,
            current=_current_models(params.get("current", "")),
        )
    except SdkRequestError as error:
        return error.response()
    return _answer(
        request,
        *assignments_encoded(doc, assignments, base_url=base_url_of(request), single=single),
    )


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


@sdk_method("GET")
def sdk_assignments(request):
    return _poll(request, flow_name=query_params(request).get("flow") or None, single=False)


@sdk_method("GET")
def sdk_flow_latest(request, flow_name: str):
    """One flow's entry, for the simplest clients that read `url` from a fixed address."""
    return _poll(request, flow_name=flow_name, single=True)
