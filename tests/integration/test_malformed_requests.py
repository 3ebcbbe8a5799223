"""
Malformed requests to the management API, sent as raw bytes to a live server: each gets a 4xx
with the contract's JSON error body, never a 5xx, never an HTML page.

The live server is Django's threaded development server, not gunicorn. Requests that are not
valid HTTP (a header longer than the server accepts, a garbage request line) are answered by
the HTTP server itself, before Django sees them: those tests check for a 4xx only. Gunicorn
answers more of them itself (docs/operations.md, "Malformed requests"), with its own HTML page.
"""

import json
import socket
import time

import pytest

from registry import services
from registry.models import App

pytestmark = pytest.mark.django_db(transaction=True)

JSON = "Content-Type: application/json"


@pytest.fixture
def token(django_user_model):
    """The plaintext of an admin's API token, for the Authorization header written by hand."""
    from controlplane.services import api_token_create

    user = django_user_model.objects.create_superuser("admin", "admin@example.com", "pw-1")
    return api_token_create(user=user, name="raw")[1]


@pytest.fixture
def flow(db):
    app = services.app_create(name="Raw Shop", bundle_identifiers=["com.example.raw"])
    return services.flow_create(app=app, name="raw_flow", flow_id=4242, positive_label="Yes")


class Answer:
    def __init__(self, raw: bytes):
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else 0
        self.headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def json(self) -> dict:
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status_line} {self.content_type} {self.body[:200]!r}>"


def request_bytes(method: str, path: bytes, token: str | None, headers=(), body=b"", host=None):
    lines = [method.encode() + b" " + path + b" HTTP/1.1", f"Host: {host or 'localhost'}".encode()]
    if token:
        lines.append(f"Authorization: Bearer {token}".encode())
    lines.append(b"Connection: close")
    lines += [h.encode() if isinstance(h, str) else h for h in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def connect(live_server) -> socket.socket:
    host, port = live_server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_answer(sock: socket.socket) -> Answer:
    """Read one response: up to its Content-Length, else until the server closes.

    Not until the close alone: after answering, Django's development server reads the rest of
    the declared body before it closes, which a client that sent less never provides.
    """
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
        head, separator, body = data.partition(b"\r\n\r\n")
        if separator:
            length = Answer(head).headers.get("content-length")
            if length is not None and len(body) >= int(length):
                break
    sock.close()
    return Answer(data)


def send(live_server, raw: bytes) -> Answer:
    sock = connect(live_server)
    sock.sendall(raw)
    return read_answer(sock)


def assert_json_error(answer: Answer, status: int, code: str | None = None):
    assert answer.status == status, answer
    assert answer.content_type == "application/json", answer
    body = answer.json()
    assert set(body) <= {"error", "detail", "fields"} and {"error", "detail"} <= set(body)
    assert isinstance(body["error"], str) and isinstance(body["detail"], str) and body["detail"]
    if code:
        assert body["error"] == code, body


def multipart(boundary: bytes, *parts: bytes, close: bool = True) -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    return body + (b"--" + boundary + b"--\r\n" if close else b"")


def file_part(name: bytes = b"file", filename: bytes = b"m.mlmodel", data: bytes = b"x") -> bytes:
    return (
        b'Content-Disposition: form-data; name="' + name + b'"; filename="' + filename + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + data
    )


# name: (method, path, headers, body, status, error code)
BODY_CASES = {
    "content_length_not_a_number": (
        "POST", b"/api/v1/apps", [JSON, "Content-Length: abc"], b'{"name":"x"}',
        400, "invalid_content_length",
    ),
    "content_length_negative": (
        "POST", b"/api/v1/apps", [JSON, "Content-Length: -5"], b'{"name":"x"}',
        400, "invalid_content_length",
    ),
    "content_length_with_sign": (
        "POST", b"/api/v1/apps", [JSON, "Content-Length: +12"], b'{"name":"x"}',
        400, "invalid_content_length",
    ),
    "content_length_over_the_json_limit": (
        "POST", b"/api/v1/apps", [JSON, "Content-Length: 3145728"], b'{"name":"x"}',
        413, "too_large",
    ),
    "chunked_body": (
        "POST", b"/api/v1/apps", [JSON, "Transfer-Encoding: chunked"],
        b'c\r\n{"name":"x"}\r\n0\r\n\r\n', 411, "length_required",
    ),
    "invalid_json": (
        "POST", b"/api/v1/apps", [JSON, "Content-Length: 8"], b'{"name":', 400, "parse_error",
    ),
    "json_not_utf8": (
        "POST", b"/api/v1/apps", [JSON, "Content-Length: 12"], b'{"name":"\xff\xfe"}',
        400, "parse_error",
    ),
    "json_not_an_object": (
        "POST", b"/api/v1/apps", [JSON, "Content-Length: 5"], b"[1,2]", 400, "invalid",
    ),
    "json_deeply_nested": (
        "POST", b"/api/v1/apps", [JSON, "Content-Length: 200000"], b"[" * 100000 + b"]" * 100000,
        400, None,
    ),
    "wrong_content_type": (
        "POST", b"/api/v1/apps", ["Content-Type: text/plain", "Content-Length: 12"],
        b'{"name":"x"}', 415, "unsupported_media_type",
    ),
    "form_encoded": (
        "POST", b"/api/v1/apps", ["Content-Type: application/x-www-form-urlencoded",
                                  "Content-Length: 6"], b"name=x",
        415, "unsupported_media_type",
    ),
    "unsupported_method": ("DELETE", b"/api/v1/apps", [], b"", 405, "method_not_allowed"),
    "unknown_method": ("FROB", b"/api/v1/apps", [], b"", 405, "method_not_allowed"),
    "post_to_unknown_api_path": (
        "POST", b"/api/v1/nothing-here", [JSON, "Content-Length: 2"], b"{}", 404, "not_found",
    ),
    "non_utf8_path_bytes": ("GET", b"/api/v1/models/\xff\xfe", [], b"", 404, "not_found"),
    "non_utf8_percent_encoded_path": (
        "GET", b"/api/v1/models/%FF%FE", [], b"", 404, "not_found",
    ),
    "non_utf8_query_bytes": ("GET", b"/api/v1/rollouts?state=\xff", [], b"", 400, "invalid"),
    "too_many_query_fields": (
        "GET", b"/api/v1/apps?" + b"&".join(b"f%d=1" % i for i in range(1100)), [], b"",
        400, "too_many_fields",
    ),
}  # fmt: skip


def test_malformed__each_json_4xx(live_server, token):
    """One test for the whole table (each case its own connection): a live-server test
    empties every table afterwards, which costs more than the requests."""
    wrong = {}
    for case, (method, path, headers, body, status, code) in BODY_CASES.items():
        answer = send(live_server, request_bytes(method, path, token, headers, body))
        try:
            assert_json_error(answer, status, code)
        except AssertionError:
            wrong[case] = answer

    assert not wrong, "\n".join(f"{case}: {answer!r}" for case, answer in wrong.items())
    assert not App.objects.filter(name="x").exists()


def test_host_not_allowed__json_400(live_server, token):
    answer = send(live_server, request_bytes("GET", b"/api/v1/apps", token, host="evil.example"))

    assert_json_error(answer, 400, "invalid_host")
    assert "evil.example" not in answer.body.decode()  # nor the hint of what to allow


def test_host_malformed__json_400(live_server, token):
    answer = send(live_server, request_bytes("GET", b"/api/v1/apps", token, host="a b..c:x"))

    assert_json_error(answer, 400, "invalid_host")


def test_host_not_allowed__admin__html_400(live_server):
    answer = send(live_server, request_bytes("GET", b"/admin/login/", None, host="evil.example"))

    assert answer.status == 400
    assert answer.content_type.startswith("text/html")


def test_content_length_not_a_number__admin__html_400(live_server):
    answer = send(
        live_server,
        request_bytes("POST", b"/admin/login/", None, ["Content-Length: abc"], b"username=a"),
    )

    assert answer.status == 400
    assert answer.content_type.startswith("text/html")


def test_upload__boundary_not_in_body__json_400(live_server, token, flow):
    body = multipart(b"OTHER", file_part())
    answer = send(
        live_server,
        request_bytes(
            "POST", f"/api/v1/flows/{flow.pk}/models".encode(), token,
            ["Content-Type: multipart/form-data; boundary=XYZ", f"Content-Length: {len(body)}"],
            body,
        ),
    )  # fmt: skip

    assert_json_error(answer, 400, "invalid")


def test_upload__no_boundary__json_400(live_server, token, flow):
    answer = send(
        live_server,
        request_bytes(
            "POST", f"/api/v1/flows/{flow.pk}/models".encode(), token,
            ["Content-Type: multipart/form-data", "Content-Length: 10"], b"0123456789",
        ),
    )  # fmt: skip

    assert_json_error(answer, 400, "parse_error")


def test_upload__body_cut_mid_file__json_400(live_server, token, flow):
    body = multipart(b"XYZ", file_part(data=b"\x08\x04" * 50), close=False)[:-20]
    answer = send(
        live_server,
        request_bytes(
            "POST", f"/api/v1/flows/{flow.pk}/models".encode(), token,
            ["Content-Type: multipart/form-data; boundary=XYZ", f"Content-Length: {len(body)}"],
            body,
        ),
    )  # fmt: skip

    assert_json_error(answer, 400, "invalid")
    assert not flow.model_versions.exists()


def test_upload__too_many_files__json_400(live_server, token, flow):
    body = multipart(b"XYZ", *(file_part(name=b"f%d" % i) for i in range(120)))
    answer = send(
        live_server,
        request_bytes(
            "POST", f"/api/v1/flows/{flow.pk}/models".encode(), token,
            ["Content-Type: multipart/form-data; boundary=XYZ", f"Content-Length: {len(body)}"],
            body,
        ),
    )  # fmt: skip

    assert_json_error(answer, 400, "too_many_fields")


def test_upload__metrics_nested_too_deep__json_400(live_server, token, flow):
    metrics = b'Content-Disposition: form-data; name="metrics"\r\n\r\n' + b"[" * 50_000
    body = multipart(b"XYZ", file_part(), metrics)
    answer = send(
        live_server,
        request_bytes(
            "POST", f"/api/v1/flows/{flow.pk}/models".encode(), token,
            ["Content-Type: multipart/form-data; boundary=XYZ", f"Content-Length: {len(body)}"],
            body,
        ),
    )  # fmt: skip

    assert_json_error(answer, 400, "invalid")
    assert "metrics" in answer.json()["fields"]


def test_body_shorter_than_declared__waits__then_json_400(live_server, token):
    """The server waits for the bytes Content-Length promises: a client that stops sending
    holds one server thread (under gunicorn: one worker, until its --timeout kills it). Once
    the client closes its side, the short body is refused, not acted on.
    """
    sock = connect(live_server)
    sock.sendall(
        request_bytes(
            "POST", b"/api/v1/apps", token, [JSON, "Content-Length: 100"], b'{"name":"x"}'
        )
    )
    sock.settimeout(1.0)
    with pytest.raises(TimeoutError):
        sock.recv(1)  # nothing yet: the server is still reading the body

    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(10)
    answer = read_answer(sock)

    assert_json_error(answer, 400, "incomplete_body")
    assert "12 of the 100 bytes" in answer.json()["detail"]
    assert not App.objects.filter(name="x").exists()


def test_connection_reset_mid_body__answered_400_not_500(live_server, token, caplog):
    """The client is gone, so nobody reads the answer; what matters is that it is a client
    error in the logs (a 400), not a server error that pages someone."""
    sock = connect(live_server)
    sock.sendall(
        request_bytes("POST", b"/api/v1/apps", token, [JSON, "Content-Length: 100"], b'{"na')
    )
    sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        sock.recv(1)  # the server is reading the body
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # linger 0: a reset, not an orderly close

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answered = [r for r in caplog.records if r.name == "django.request"]
        if answered:
            break
        time.sleep(0.05)
    assert [(r.levelname, r.status_code) for r in answered] == [("WARNING", 400)]
    assert answered[0].getMessage().endswith(": /api/v1/apps")


def test_header_of_10_kb__answered_normally(live_server, token):
    """Within the HTTP server's limit, a big header is no error (gunicorn's limit is 8190 bytes
    a header, and it answers 431 itself)."""
    answer = send(
        live_server, request_bytes("GET", b"/api/v1/apps", token, ["X-Big: " + "a" * 10_000])
    )

    assert answer.status == 200 and answer.content_type == "application/json"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"X-Big: " + b"a" * 100_000, id="header_of_100_kb"),
        pytest.param(b"\r\n".join(b"X-H%d: v" % i for i in range(200)), id="200_headers"),
    ],
)
def test_headers_over_the_servers_limits__4xx_from_the_http_server(live_server, token, raw):
    answer = send(live_server, request_bytes("GET", b"/api/v1/apps", token, [raw]))

    assert answer.status == 431  # the HTTP server's own page: Django never sees the request


def test_request_line_garbage__no_5xx(live_server):
    answer = send(live_server, b"GARBAGE\r\n\r\n")

    assert answer.status == 0 or 400 <= answer.status < 500  # HTTP/0.9-style page, or a 400
