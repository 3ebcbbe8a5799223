"""Refuse requests whose body Django would misread, before anything reads it."""

import re

from django.http import UnreadablePostError
from rest_framework.views import APIView

from .exceptions import MalformedRequest

# ASCII digits only: int() would also take " 12", "+12", "1_2" and other scripts' digits.
_DECIMAL = re.compile(r"[0-9]+")


class RequestFramingMiddleware:
    """Answer a request whose body is not framed as declared with a 4xx, never a misreading.

    Django reads a body by its Content-Length alone: it takes one that is not a number for 0
    (the body is silently dropped), reads nothing of a chunked body, and hands a view a body
    that ended early as if it were whole. Gunicorn refuses a malformed Content-Length itself
    (with its own HTML page) but passes the others on. `handler400` renders the refusal: the
    contract's JSON under /api/, Django's page elsewhere.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        declared = request.META.get("CONTENT_LENGTH") or ""
        if declared and not _DECIMAL.fullmatch(declared):
            raise MalformedRequest(
                400, "invalid_content_length", "The Content-Length header is not a number."
            )
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        # Only the management API's DRF views: the SDK endpoints (plain Django views) check
        # their bodies themselves and read a chunked one from gunicorn's decoded stream.
        if not issubclass(getattr(view_func, "cls", object), APIView):
            return None
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        if not declared:
            if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
                raise MalformedRequest(
                    411, "length_required", "Send the body with a Content-Length header."
                )
            return None
        if request.content_type.startswith("multipart/"):
            return None  # an upload: Django's parser streams it and notices a cut-off part
        # JSON bodies are small (DATA_UPLOAD_MAX_MEMORY_SIZE, else RequestDataTooBig: a 413):
        # read now, a short one is seen before a view acts on the part that arrived.
        try:
            received = len(request.body)
        except UnreadablePostError:
            raise MalformedRequest(
                400, "unreadable_body", "The request body could not be read to its end."
            ) from None
        if received < declared:
            raise MalformedRequest(
                400,
                "incomplete_body",
                f"The body ended after {received} of the {declared} bytes Content-Length declares.",
            )
        return None
