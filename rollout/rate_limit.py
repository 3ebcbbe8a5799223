"""
Token buckets kept in one process's memory: the SDK endpoints' rate limits, per SDK key and per
device (`rollout.sdk_requests.sdk_rate_limit_check` applies them with the settings).

A bucket holds at most `capacity` tokens and gains `per_minute / 60` tokens a second; a request
takes one token, or is refused and told how long until one is there. A bucket is stored as one
number, the moment it will be full again (the generic cell rate algorithm's "theoretical arrival
time"), so it costs a dictionary entry and no timer. A full bucket and an untracked key behave
the same, which is what keeps the memory bounded without changing an answer: the least recently
used entries are dropped past `max_keys`, and those are almost always full already. Dropping one
that is not only forgives the few requests it still remembered.

Pure: no Django, no Redis, no clock of its own (one is passed in, so tests move time by hand).
"""

import threading
import time
from collections.abc import Callable, Hashable
from typing import NamedTuple

# Float rounding must not refuse a request that exact arithmetic admits (a wait of 1e-12 s would
# still be a `Retry-After: 1`).
_EPSILON_SECONDS = 1e-9


class TokenBuckets:
    """One bucket per key, all with the same rate and capacity. Not thread-safe on its own."""

    def __init__(self, *, per_minute: float, max_keys: int, capacity: float | None = None):
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.per_minute = per_minute
        # By default a bucket holds one minute's worth: `per_minute` requests at once, then the
        # rate. Never less than one token, or nothing would ever be admitted.
        self.capacity = max(1.0, capacity if capacity is not None else per_minute)
        self.max_keys = max_keys
        self.interval = 60.0 / per_minute  # seconds for one token to come back
        # How far ahead of now a bucket's full-again moment may be while it still has a token.
        self._slack = (self.capacity - 1.0) * self.interval
        # key -> the moment its bucket is full again; in least-recently-used order.
        self._full_at: dict[Hashable, float] = {}

    def __len__(self) -> int:
        return len(self._full_at)

    def wait(self, key: Hashable, now: float) -> float:
        """Seconds until `key` may take a token: 0.0 when it may now. Takes nothing."""
        full_at = self._full_at.get(key)
        if full_at is None:
            return 0.0
        wait = full_at - now - self._slack
        return wait if wait > _EPSILON_SECONDS else 0.0

    def take(self, key: Hashable, now: float) -> None:
        """Take one token of `key`'s bucket (after `wait` said 0.0)."""
        full_at = self._full_at.pop(key, now)
        self._full_at[key] = (full_at if full_at > now else now) + self.interval
        if len(self._full_at) > self.max_keys:
            del self._full_at[next(iter(self._full_at))]


class Refusal(NamedTuple):
    wait: float  # seconds until the request would be admitted
    limit: str  # which limit refused it: "device" or "key"


class SdkRateLimits:
    """The limits of one process: per key, and per device within it; either may be off (0).

    A request is admitted only when both buckets have a token, and then takes one of each. The
    device is asked first and a refused request takes nothing, so a device over its own limit
    does not spend its fleet's (the key's) budget.
    """

    def __init__(
        self,
        *,
        key_per_minute: float,
        device_per_minute: float,
        max_keys: int = 10_000,
        max_devices: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.keys = (
            TokenBuckets(per_minute=key_per_minute, max_keys=max_keys)
            if key_per_minute > 0
            else None
        )
        self.devices = (
            TokenBuckets(per_minute=device_per_minute, max_keys=max_devices)
            if device_per_minute > 0
            else None
        )
        self.clock = clock
        # Threaded servers (runserver, gthread) share one instance; uncontended it costs ~0.1 µs.
        self._lock = threading.Lock()

    def admit(self, key: Hashable, device: Hashable) -> Refusal | None:
        """None when the request is admitted (one token taken from each bucket), else why not."""
        keys, devices = self.keys, self.devices
        with self._lock:
            now = self.clock()
            if devices is not None:
                wait = devices.wait(device, now)
                if wait:
                    return Refusal(wait, "device")
            if keys is not None:
                wait = keys.wait(key, now)
                if wait:
                    return Refusal(wait, "key")
                keys.take(key, now)
            if devices is not None:
                devices.take(device, now)
        return None
