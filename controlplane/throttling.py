"""
Rate limits of the management API: DRF throttles, per API token, per signed-in user (a session)
and, for the few views open to anyone (the schema), per client address.

They count in Django's cache: the process's memory in the embedded default, Redis in
production, so every web process shares one count per token. Over the limit, DRF raises
`Throttled`, which `controlplane.exceptions.api_exception_handler` turns into
`429 rate_limited` with `Retry-After`.

A throttle must never turn a request into a 500: while the cache is unreachable the throttles
let requests through (fail open) and log it, at most once per `CACHE_RETRY_SECONDS`, leaving the
cache alone that long so an unreachable Redis does not cost every request its timeout.

The SDK endpoints are not DRF views and do not count here: see `rollout.sdk_requests`.
"""

import logging
import time

from redis.exceptions import RedisError
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from .client_address import request_client_address
from .models import ApiToken

logger = logging.getLogger(__name__)

CACHE_RETRY_SECONDS = 30.0


class _CacheHealth:
    """Whether this process may use the cache for throttling now (one per process)."""

    resting_until = 0.0

    @classmethod
    def usable(cls) -> bool:
        return time.monotonic() >= cls.resting_until

    @classmethod
    def failed(cls, error: Exception) -> None:
        cls.resting_until = time.monotonic() + CACHE_RETRY_SECONDS
        logger.warning(
            "throttling.cache_unreachable error=%r; API rate limits are off in this process "
            "for %.0f s",
            error,
            CACHE_RETRY_SECONDS,
        )

    @classmethod
    def reset(cls) -> None:
        cls.resting_until = 0.0


class _FailOpenRateThrottle(SimpleRateThrottle):
    def get_rate(self):
        # Read at each request, not once at import as DRF does, so a changed setting applies.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view):
        if not _CacheHealth.usable():
            return True
        try:
            return super().allow_request(request, view)
        except RedisError as error:
            _CacheHealth.failed(error)
            return True

    def wait(self):
        # DRF says 0 when the oldest counted request expires this instant: still a 1 s wait.
        wait = super().wait()
        return None if wait is None else max(wait, 1.0)


class ApiRateThrottle(_FailOpenRateThrottle):
    """Per API token (each token its own budget), or per user for a signed-in session."""

    scope = "api"

    def get_cache_key(self, request, view):
        if isinstance(request.auth, ApiToken):
            ident = f"token:{request.auth.pk}"
        elif request.user is not None and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            return None
        return self.cache_format % {"scope": self.scope, "ident": ident}


class AnonymousApiRateThrottle(_FailOpenRateThrottle):
    """Per client address (behind `TRUSTED_PROXY_COUNT` proxies), for requests without a user."""

    scope = "anon"

    def get_cache_key(self, request, view):
        if request.user is not None and request.user.is_authenticated:
            return None
        ident = request_client_address(request) or "unknown"
        return self.cache_format % {"scope": self.scope, "ident": ident}
