"""One error body for the whole API: {"error": code, "detail": sentence, "fields"?: {...}}."""

import logging

from django.core.exceptions import (
    BadRequest,
    DisallowedHost,
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse, UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from .errors import DomainError

logger = logging.getLogger(__name__)

_CODES = {
    exceptions.ParseError: "parse_error",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
    exceptions.ValidationError: "invalid",
}


_TOO_LARGE_DETAIL = "The request body is larger than this endpoint accepts."
_UNREADABLE_DETAIL = "The request body could not be read to its end."


class MalformedRequest(BadRequest):
    """A request Django cannot read as it was sent; `handler400` answers it."""

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def error_body(code: str, detail: str, fields: dict | None = None) -> dict:
    body = {"error": code, "detail": detail}
    if fields:
        body["fields"] = fields
    return body


def _flatten_fields(data) -> dict[str, list[str]]:
    """Turn DRF's nested error detail into {"field.sub": ["message", ...]}."""
    flat: dict[str, list[str]] = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, list) and value and not all(isinstance(v, str) for v in value):
            for index, inner in enumerate(value):
                walk(f"{prefix}.{index}" if prefix else str(index), inner)
        else:
            messages = value if isinstance(value, list) else [value]
            flat.setdefault(prefix or "non_field_errors", []).extend(str(m) for m in messages)

    walk("", data)
    return flat


def _validation_response(exc: exceptions.ValidationError) -> Response:
    fields = _flatten_fields(exc.detail)
    parts = [
        f"{name}: {' '.join(messages)}" if name != "non_field_errors" else " ".join(messages)
        for name, messages in fields.items()
    ]
    detail = "; ".join(parts) or "The request is not valid."
    return Response(error_body("invalid", detail, fields), status=status.HTTP_400_BAD_REQUEST)


def api_exception_handler(exc, context):
    """Render every error raised in an API view in the contract's error shape."""
    if isinstance(exc, DomainError):
        set_rollback()
        return Response(error_body(exc.code, exc.detail, exc.fields), status=exc.status)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("too_large", _TOO_LARGE_DETAIL),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, UnreadablePostError):
        # The connection broke mid-body: the client's fault, and it rarely sees the answer.
        return Response(error_body("unreadable_body", _UNREADABLE_DETAIL), status=400)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None  # a bug: let Django log it and answer 500
    set_rollback()
    if isinstance(exc, exceptions.ValidationError):
        return _validation_response(exc)
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), None)
    code = code or (exc.get_codes() if isinstance(exc.get_codes(), str) else "error")
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None) is not None:
        headers["Retry-After"] = str(int(exc.wait))
    return Response(error_body(code, str(exc.detail)), status=exc.status_code, headers=headers)


def json_not_found(request, exception=None):
    return JsonResponse(error_body("not_found", "No such resource."), status=404)


def json_server_error(request):
    return JsonResponse(
        error_body("server_error", "Something went wrong on the server; it has been logged."),
        status=500,
    )


def _bad_request_answer(exception) -> tuple[int, str, str]:
    """Status, code and sentence for a request Django refused before or outside an API view."""
    if isinstance(exception, MalformedRequest):
        return exception.status, exception.code, exception.detail
    if isinstance(exception, RequestDataTooBig):
        return 413, "too_large", _TOO_LARGE_DETAIL
    if isinstance(exception, (TooManyFieldsSent, TooManyFilesSent)):
        return 400, "too_many_fields", "The request has more fields or files than Cohort reads."
    if isinstance(exception, DisallowedHost):
        # Not Django's message: it would tell anyone which hosts to add to ALLOWED_HOSTS.
        return 400, "invalid_host", "The Host header does not name this server."
    if isinstance(exception, MultiPartParserError):
        return 400, "parse_error", "The multipart body could not be parsed."
    return 400, "bad_request", "The request is malformed."


def json_bad_request(request, exception=None):
    status_code, code, detail = _bad_request_answer(exception)
    return JsonResponse(error_body(code, detail), status=status_code)


def json_forbidden(request, exception=None):
    return JsonResponse(
        error_body("permission_denied", "You do not have permission to perform this action."),
        status=403,
    )
