"""The webhook address rule (public http(s) targets only) and the post pinned to checked addresses."""

import datetime
import ipaddress
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given
from hypothesis import strategies as st

from experiments.webhook_targets import (
    CheckedTarget,
    TargetRefused,
    address_refusal,
    post,
    target_check,
    target_parse,
)

REFUSED_NETWORKS = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
    "2001:db8::/32",
    "::ffff:127.0.0.0/104",
    "::ffff:10.0.0.0/104",
    "::ffff:169.254.0.0/112",
    "64:ff9b::7f00:0/104",
    "2002:7f00::/24",
    "2002:a00::/24",
]
# Allocated to regional registries and in public use (no special-purpose range inside).
GLOBAL_NETWORKS = ["8.0.0.0/9", "45.0.0.0/8", "142.250.0.0/15", "2600::/12", "2a00::/12"]


def addresses_in(networks: list[str]):
    def pick(network):
        net = ipaddress.ip_network(network)
        return st.integers(0, net.num_addresses - 1).map(lambda i: net[i])

    return st.sampled_from(networks).flatmap(pick)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "this-network"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("224.0.0.1", "multicast"),
        ("224.0.1.1", "multicast"),  # is_global in Python, still refused
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.0.9", "IETF protocol"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("fec0::1", "site-local"),  # is_global in Python, still refused
        ("ff0e::1", "multicast"),
        ("::ffff:127.0.0.1", "a loopback address (127.0.0.1) inside an IPv6 address"),
        ("::ffff:169.254.169.254", "a link-local address (169.254.169.254) inside an IPv6 address"),
        ("64:ff9b::a9fe:a9fe", "a link-local address (169.254.169.254) inside an IPv6 address"),
        ("2002:7f00:1::1", "a loopback address (127.0.0.1) inside a 6to4 address"),
        ("::7f00:1", "reserved"),  # IPv4-compatible, deprecated
    ],
)
def test_address_refusal__non_public__says_why(address, reason):
    assert reason in address_refusal(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_address_refusal__public__allowed(address):
    assert address_refusal(ipaddress.ip_address(address)) is None


@given(addresses_in(REFUSED_NETWORKS))
def test_address_refusal__any_address_of_a_non_public_range__refused(address):
    assert address_refusal(address) is not None


@given(addresses_in(GLOBAL_NETWORKS))
def test_address_refusal__any_address_of_a_public_allocation__allowed(address):
    assert address_refusal(address) is None


@given(st.ip_addresses())
def test_address_refusal__allowed_only_if_global_and_not_multicast(address):
    if address_refusal(address) is None:
        assert address.is_global and not address.is_multicast


@given(st.ip_addresses(v=4))
def test_address_refusal__ipv4_mapped__same_verdict_as_the_ipv4_address(address):
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    assert (address_refusal(mapped) is None) == (address_refusal(address) is None)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "must be http or https, not file"),
        ("ftp://example.com/x", "must be http or https, not ftp"),
        ("gopher://example.com/", "must be http or https"),
        ("example.com/hook", "must be http or https, not none"),
        ("http://user:secret@example.com/", "user name or password"),
        ("http://user@example.com/", "user name or password"),
        ("http:///hook", "has no host"),
        ("http://example.com:99999/", "not valid"),
        ("http://exa mple.com/", "not valid"),
    ],
)
def test_target_parse__not_a_plain_http_url__refused(url, message):
    with pytest.raises(TargetRefused, match=message):
        target_parse(url)


def test_target_parse__keeps_path_and_query_drops_fragment():
    target = target_parse("HTTPS://Hooks.Example.com/services/T1?x=1&y=2#part")
    assert (target.scheme, target.host, target.port, target.request_path) == (
        "https", "hooks.example.com", 443, "/services/T1?x=1&y=2"
    )  # fmt: skip
    assert target_parse("http://[2606:4700::1]:8080").host == "2606:4700::1"
    assert target_parse("http://[2606:4700::1]:8080").request_path == "/"


def resolver(answers: dict[str, list[str]]):
    asked = []

    def resolve(host, port):
        asked.append(host)
        return answers[host]

    resolve.asked = asked
    return resolve


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/x", "http://10.0.0.1/x", "http://169.254.169.254/latest/meta-data/",
     "http://[::1]:8000/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0:80/"],
)  # fmt: skip
def test_target_check__literal_non_public_address__refused_without_resolving(url):
    resolve = resolver({})
    with pytest.raises(TargetRefused, match="webhooks may only go to public addresses"):
        target_check(url, allow_private=False, resolve=resolve)
    assert resolve.asked == []


def test_target_check__one_private_address_among_public_ones__refused():
    resolve = resolver({"hooks.example.com": ["93.184.216.34", "10.1.2.3"]})

    with pytest.raises(TargetRefused) as refused:
        target_check("https://hooks.example.com/x", allow_private=False, resolve=resolve)

    assert str(refused.value) == (
        "hooks.example.com resolves to 10.1.2.3, a private address: webhooks may only go to "
        "public addresses (the setting ALERT_WEBHOOK_ALLOW_PRIVATE allows others)."
    )


def test_target_check__public_name__every_address_kept_for_the_connection():
    resolve = resolver({"hooks.example.com": ["93.184.216.34", "2606:2800:220:1::1"]})

    checked = target_check("https://hooks.example.com/x", allow_private=False, resolve=resolve)

    assert checked.addresses == (
        ipaddress.ip_address("93.184.216.34"),
        ipaddress.ip_address("2606:2800:220:1::1"),
    )


def test_target_check__allow_private__accepts_and_still_pins():
    resolve = resolver({"receiver.internal": ["10.0.0.7"]})

    checked = target_check("http://receiver.internal/", allow_private=True, resolve=resolve)

    assert checked.addresses == (ipaddress.ip_address("10.0.0.7"),)


def test_target_check__allow_private__scheme_still_checked():
    with pytest.raises(TargetRefused, match="not file"):
        target_check("file:///etc/passwd", allow_private=True)


def test_target_check__name_without_address__os_error():
    with pytest.raises(OSError, match="resolves to no address"):
        target_check("http://nothing.example/", allow_private=False, resolve=resolver({"nothing.example": []}))  # fmt: skip


def test_target_check__localhost_with_the_real_resolver__refused():
    with pytest.raises(TargetRefused, match=r"localhost resolves to .*, a loopback address"):
        target_check("http://localhost:8000/hook", allow_private=False)


# --------------------------------------------------------------------------- the pinned post


class Recorder(BaseHTTPRequestHandler):
    status = 200
    location = None

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        self.server.requests.append((self.path, self.headers.get("Host"), self.rfile.read(length)))
        self.send_response(self.server.status)
        if self.server.location:
            self.send_header("Location", self.server.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.requests, server.status, server.location = [], 200, None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def pinned(url: str, address: str = "127.0.0.1") -> CheckedTarget:
    return CheckedTarget(target=target_parse(url), addresses=(ipaddress.ip_address(address),))


def test_post__connects_to_the_checked_address_with_the_name_in_host(receiver):
    # The name does not resolve at all (.invalid): only the checked address can be reached.
    port = receiver.server_address[1]
    checked = pinned(f"http://hooks.invalid:{port}/hook?team=a")

    status = post(checked, b'{"text": "hi"}', headers={"X-A": "1"}, timeout=5)

    assert status == 200
    assert receiver.requests == [("/hook?team=a", f"hooks.invalid:{port}", b'{"text": "hi"}')]


def test_post__redirect__returned_not_followed(receiver):
    port = receiver.server_address[1]
    receiver.status, receiver.location = 302, f"http://127.0.0.1:{port}/elsewhere"

    status = post(pinned(f"http://hooks.invalid:{port}/hook"), b"{}", headers={}, timeout=5)

    assert status == 302
    assert [path for path, _, _ in receiver.requests] == ["/hook"]


def test_post__first_checked_address_refuses__next_one_used(receiver):
    port = receiver.server_address[1]
    target = target_parse(f"http://hooks.invalid:{port}/hook")
    # 127.0.0.2 is loopback too, but nothing listens on it at this port.
    addresses = (ipaddress.ip_address("127.0.0.2"), ipaddress.ip_address("127.0.0.1"))
    checked = CheckedTarget(target=target, addresses=addresses)

    assert post(checked, b"{}", headers={}, timeout=5) == 200


@pytest.fixture(scope="module")
def tls_receiver(tmp_path_factory):
    """An HTTPS receiver on 127.0.0.1 whose certificate names hooks.example.test only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.example.test")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.example.test")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.requests, server.status, server.location = [], 200, None
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_path, key_path)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.client_context = ssl.create_default_context(cafile=str(cert_path))
    yield server
    server.shutdown()
    server.server_close()


def test_post_https__certificate_checked_against_the_url_name(tls_receiver):
    port = tls_receiver.server_address[1]
    checked = pinned(f"https://hooks.example.test:{port}/hook")

    status = post(checked, b"{}", headers={}, timeout=5, tls_context=tls_receiver.client_context)

    assert status == 200
    assert tls_receiver.requests[-1][:2] == ("/hook", f"hooks.example.test:{port}")


def test_post_https__certificate_of_another_name__refused(tls_receiver):
    port = tls_receiver.server_address[1]
    checked = pinned(f"https://other.example.test:{port}/hook")

    with pytest.raises(
        ssl.SSLCertVerificationError, match=r"[Hh]ostname mismatch.*other\.example\.test"
    ):
        post(checked, b"{}", headers={}, timeout=5, tls_context=tls_receiver.client_context)
