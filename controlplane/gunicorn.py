"""
Gunicorn's settings for Cohort: `gunicorn -c python:controlplane.gunicorn controlplane.wsgi`.

Gunicorn answers requests it cannot parse (a Content-Length that is not a number, a broken
chunk, an oversize header) itself, before Django sees them, with an HTML page. Clients of the
API and the SDK expect the contract's JSON error body for every 4xx, so its one writer of
those pages, `gunicorn.util.write_error` (called as `util.write_error` by every worker since
gunicorn 19), writes JSON instead. Nothing else of gunicorn's behaviour changes.
"""

import json

from gunicorn import util

# The contract's error codes for the statuses gunicorn answers itself.
_CODES = {
    400: "bad_request",
    403: "forbidden",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "server_error",
}


def _json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    detail = f"{reason}: {mesg}" if mesg else reason
    body = json.dumps(
        {"error": _CODES.get(status_int, "bad_request"), "detail": detail}, separators=(",", ":")
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode("latin1")
    util.write_nonblock(sock, head + body)


util.write_error = _json_error
