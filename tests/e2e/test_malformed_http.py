"""Raw HTTP at a real gunicorn: chunked event batches are read, and requests gunicorn itself
refuses get the contract's JSON error body, not an HTML page."""

import json
import socket
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest

from experiments.models import OutcomeEvent

pytestmark = pytest.mark.e2e


def raw_request(server: str, data: bytes) -> tuple[int, dict, bytes]:
    """Send bytes as they are; return the status, the headers (lower-case) and the body."""
    address = urlsplit(server)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
            head, _, body = received.partition(b"\r\n\r\n")
            length = next(
                (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                 if line.lower().startswith(b"content-length:")),
                None,
            )  # fmt: skip
            if length is not None and len(body) >= length:
                break
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def chunked(body: bytes, size: int = 100) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def test_events__sent_chunked__read_whole_and_a_broken_chunk_is_a_json_400(sdk_setup, server):
    events = [
        {
            "id": str(uuid.uuid4()),
            "flow": "onboarding_upsell",
            "outcome": "Purchased",
            "ts": datetime.now(UTC).isoformat(),
        }
        for _ in range(5)
    ]
    body = json.dumps({"device_id": "IDFV-chunked", "sdk_version": "1.5.0", "events": events})
    head = (
        b"POST /api/v1/sdk/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {sdk_setup['key']}\r\n".encode()
        + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
    )

    status, _, answer = raw_request(server, head + chunked(body.encode()))
    broken_status, broken_headers, broken = raw_request(server, head + b"zz\r\n{}\r\n0\r\n\r\n")

    assert status == 200, answer
    assert json.loads(answer)["accepted"] == 5
    assert OutcomeEvent.objects.filter(device_id="IDFV-chunked").count() == 5
    assert broken_status == 400, broken
    assert broken_headers["content-type"] == "application/json"
    assert json.loads(broken)["error"] == "invalid_body"


UNPARSEABLE = {
    "content_length_abc": (b"POST /api/v1/apps HTTP/1.1\r\nContent-Length: abc\r\n\r\n{}", 400),
    "two_content_lengths": (
        b"POST /api/v1/sdk/events HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        400,
    ),
    "header_too_big": (
        b"GET /api/v1/sdk/assignments HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        431,
    ),
    "garbage": (b"GARBAGE\r\n\r\n", 400),
}


def test_unparseable_requests__gunicorn_answers__json_error_body(server):
    answers = {case: raw_request(server, data) for case, (data, _) in UNPARSEABLE.items()}

    for case, (status, headers, body) in answers.items():
        assert status == UNPARSEABLE[case][1], (case, body)
        assert headers["content-type"] == "application/json", case
        error = json.loads(body)
        assert set(error) == {"error", "detail"} and error["error"] and error["detail"], case
