"""Which webhook URLs alerts may be posted to, and posting to the very address that was checked.

Anyone who can edit an alert channel chooses a URL the worker will POST to, from inside the
network. Unless private targets are allowed, a URL must be http(s), carry no user name or
password, and every address its host resolves to must be public: a name with one private
address among public ones is refused, since the client might pick that one. The check runs
when a channel is saved and again before each send, and the send connects to an address the
check accepted (with the name in the Host header and for TLS), so a DNS answer that changes
in between cannot redirect it. Redirects are never followed.

Pure: the standard library only, no Django. The resolver can be passed in, for tests.
"""

import http.client
import ipaddress
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

SCHEMES = {"http": 80, "https": 443}
ALLOW_SETTING = "ALERT_WEBHOOK_ALLOW_PRIVATE"

# Special-purpose IPv4 ranges that Python's is_private/is_global miss or name vaguely (their
# lists differ between Python patch releases, so these are stated here).
_SPECIAL_IPV4 = {
    ipaddress.ip_network("0.0.0.0/8"): "a this-network address (0.0.0.0/8)",
    ipaddress.ip_network("100.64.0.0/10"): "a shared carrier-grade NAT address (100.64.0.0/10)",
    ipaddress.ip_network("192.0.0.0/24"): "an IETF protocol address (192.0.0.0/24)",
    ipaddress.ip_network("192.88.99.0/24"): "a 6to4 relay address (192.88.99.0/24)",
}
# NAT64's well-known prefix carries an IPv4 address in its last 32 bits; DNS64 answers with it
# on IPv6-only networks, so it is judged by the IPv4 address it reaches.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class TargetRefused(ValueError):
    """The URL may not be posted to; the message says why, for the person who entered it."""


@dataclass(frozen=True)
class WebhookTarget:
    """A parsed webhook URL: where to connect, and what to ask for."""

    scheme: str
    host: str  # a name, or an IP address without brackets
    port: int
    request_path: str  # path and query, as sent on the request line


@dataclass(frozen=True)
class CheckedTarget:
    """A target with the addresses its host had when checked: the only ones to connect to."""

    target: WebhookTarget
    addresses: tuple[IPAddress, ...]


def address_refusal(address: IPAddress) -> str | None:
    """Why a webhook may not go to this address ("a loopback address"), or None if it may."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or (
            ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in _NAT64 else None
        )
        if embedded is not None:
            reason = address_refusal(embedded)
            return f"{reason} ({embedded}) inside an IPv6 address" if reason else None
        # 6to4 routes to the IPv4 address in bits 16-48.
        if address.sixtofour is not None and (reason := address_refusal(address.sixtofour)):
            return f"{reason} ({address.sixtofour}) inside a 6to4 address"
        if address.is_site_local:
            return "a site-local address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.version == 4:
        for network, reason in _SPECIAL_IPV4.items():
            if address in network:
                return reason
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "an address that is not globally reachable"
    return None


def target_parse(url: str) -> WebhookTarget:
    """Split a webhook URL, refusing any but http(s) URLs with a host and no user name."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        raise TargetRefused(f"The webhook URL is not valid: {error}.") from None
    if parts.scheme not in SCHEMES:
        shown = parts.scheme or "none"
        raise TargetRefused(f"Webhook URLs must be http or https, not {shown}.")
    if "@" in parts.netloc:
        raise TargetRefused("A webhook URL may not carry a user name or password.")
    host = parts.hostname
    if not host:
        raise TargetRefused("The webhook URL has no host.")
    if any(ch.isspace() or not ch.isprintable() for ch in host):
        raise TargetRefused("The webhook URL's host is not valid.")
    path = parts.path or "/"
    return WebhookTarget(
        scheme=parts.scheme,
        host=host,
        port=port or SCHEMES[parts.scheme],
        request_path=f"{path}?{parts.query}" if parts.query else path,
    )


def addresses_resolve(host: str, port: int) -> list[str]:
    """The addresses a host name resolves to (raises OSError when it resolves to none)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def target_check(
    url: str, *, allow_private: bool, resolve: Resolver = addresses_resolve
) -> CheckedTarget:
    """Parse the URL and resolve its host; refuse it if any address is not public.

    With allow_private, any address is accepted (still resolved once, to be pinned). A host
    that does not resolve raises OSError from the resolver: the caller decides whether that
    is a mistake to show (on save) or a failure to retry (on send).
    """
    target = target_parse(url)
    try:
        literal = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: tuple[IPAddress, ...] = (literal,)
    else:
        addresses = tuple(ipaddress.ip_address(a) for a in resolve(target.host, target.port))
        if not addresses:
            raise OSError(f"{target.host} resolves to no address")
    if not allow_private:
        for address in addresses:
            if reason := address_refusal(address):
                what = f"{address} is" if literal else f"{target.host} resolves to {address},"
                raise TargetRefused(
                    f"{what} {reason}: webhooks may only go to public addresses "
                    f"(the setting {ALLOW_SETTING} allows others)."
                )
    return CheckedTarget(target=target, addresses=addresses)


def _connection_open(addresses: Sequence[IPAddress], port: int, timeout: float) -> socket.socket:
    """A TCP connection to the first of the checked addresses that answers."""
    last_error: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((str(address), port), timeout)
        except OSError as error:
            last_error = error
    raise last_error or OSError("no address to connect to")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to the checked addresses only, whatever the name resolves to by now."""

    def __init__(self, checked: CheckedTarget, timeout: float):
        super().__init__(checked.target.host, checked.target.port, timeout=timeout)
        self._addresses = checked.addresses

    def connect(self):
        self.sock = _connection_open(self._addresses, self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to the checked addresses, the certificate verified against the URL's host name."""

    def __init__(self, checked: CheckedTarget, timeout: float, context: ssl.SSLContext):
        super().__init__(checked.target.host, checked.target.port, timeout=timeout, context=context)
        self._addresses = checked.addresses

    def connect(self):
        sock = _connection_open(self._addresses, self.port, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(
    checked: CheckedTarget,
    body: bytes,
    *,
    headers: dict[str, str],
    timeout: float,
    tls_context: ssl.SSLContext | None = None,
) -> int:
    """POST the body to a checked target; return the response status. Redirects are not followed.

    Environment proxies are not used: a proxy would resolve the name itself, after the check.
    `tls_context` defaults to the system's trusted certificates, with host names checked.
    """
    if checked.target.scheme == "https":
        context = tls_context or ssl.create_default_context()
        connection = _PinnedHTTPSConnection(checked, timeout, context)
    else:
        connection = _PinnedHTTPConnection(checked, timeout)
    try:
        connection.request("POST", checked.target.request_path, body=body, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()
