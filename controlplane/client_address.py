"""
The address of the client behind a request, which django-axes throttles logins by.

Behind a load balancer every request comes from the balancer's own address; the client's is in
X-Forwarded-For. Only what our own proxies wrote there can be trusted: a client may send the
header with anything in it, and each proxy appends the address it received the request from.
So with N trusted proxies in front (`TRUSTED_PROXY_COUNT`), the client is the Nth entry from
the end, and entries before it are ignored.
"""

import ipaddress

from django.conf import settings


def forwarded_client_address(
    remote_addr: str | None, forwarded_for: str, trusted_proxies: int
) -> str | None:
    """The client's address, or the connection's when the header is missing or not an address."""
    if trusted_proxies > 0:
        hops = [hop.strip() for hop in forwarded_for.split(",")]
        if len(hops) >= trusted_proxies and _is_address(hops[-trusted_proxies]):
            return hops[-trusted_proxies]
    return remote_addr if _is_address(remote_addr) else None


def request_client_address(request) -> str | None:
    """AXES_CLIENT_IP_CALLABLE (django-ipware, which axes would use instead, is not installed)."""
    return forwarded_client_address(
        request.META.get("REMOTE_ADDR"),
        request.META.get("HTTP_X_FORWARDED_FOR", ""),
        settings.TRUSTED_PROXY_COUNT,
    )


def _is_address(text: str | None) -> bool:
    # axes stores it in a GenericIPAddressField: anything else would fail the login with a 500.
    try:
        ipaddress.ip_address(text or "")
    except ValueError:
        return False
    return True
