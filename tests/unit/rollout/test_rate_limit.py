"""The token buckets behind the SDK's rate limits (rollout.rate_limit), with a clock moved by hand."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollout.rate_limit import Refusal, SdkRateLimits, TokenBuckets


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def admitted(buckets: TokenBuckets, key, now: float) -> bool:
    if buckets.wait(key, now):
        return False
    buckets.take(key, now)
    return True


def test_buckets__capacity_at_once__then_refused_for_one_interval():
    buckets = TokenBuckets(per_minute=6, max_keys=10)  # a token every 10 s, 6 at most

    assert [admitted(buckets, "k", 0.0) for _ in range(6)] == [True] * 6
    assert buckets.wait("k", 0.0) == pytest.approx(10.0)
    assert buckets.wait("k", 9.5) == pytest.approx(0.5)
    assert admitted(buckets, "k", 10.0)
    assert not admitted(buckets, "k", 10.0)


def test_buckets__idle_a_minute__full_again_and_no_more():
    buckets = TokenBuckets(per_minute=3, max_keys=10)
    for _ in range(3):
        buckets.take("k", 0.0)

    assert [admitted(buckets, "k", 3600.0) for _ in range(4)] == [True, True, True, False]


def test_buckets__keys__independent():
    buckets = TokenBuckets(per_minute=1, max_keys=10)

    assert admitted(buckets, "a", 0.0)
    assert not admitted(buckets, "a", 0.0)
    assert admitted(buckets, "b", 0.0)


def test_buckets__more_keys_than_max__least_recently_used_dropped():
    buckets = TokenBuckets(per_minute=1, max_keys=3)
    for key in ("a", "b", "c"):
        buckets.take(key, 0.0)
    buckets.take("a", 60.0)  # "a" used again: "b" is now the oldest

    buckets.take("d", 60.0)

    assert len(buckets) == 3
    assert buckets.wait("b", 60.0) == 0.0  # forgotten
    assert buckets.wait("a", 60.0) > 0.0  # remembered


def test_buckets__fractional_rate__capacity_at_least_one():
    buckets = TokenBuckets(per_minute=0.5, max_keys=10)  # one every 2 minutes

    assert admitted(buckets, "k", 0.0)
    assert buckets.wait("k", 0.0) == pytest.approx(120.0)


@pytest.mark.parametrize("per_minute, max_keys", [(0, 10), (-1, 10), (10, 0)])
def test_buckets__nonsense_configuration__refused(per_minute, max_keys):
    with pytest.raises(ValueError):
        TokenBuckets(per_minute=per_minute, max_keys=max_keys)


@given(
    per_minute=st.integers(1, 600),
    gaps=st.lists(st.floats(0, 30, allow_nan=False), min_size=1, max_size=150),
)
def test_buckets__any_arrivals__never_more_than_capacity_plus_rate_times_elapsed(per_minute, gaps):
    buckets = TokenBuckets(per_minute=per_minute, max_keys=10)
    rate = per_minute / 60.0
    times, now = [], 0.0
    for gap in gaps:
        now += gap
        if admitted(buckets, "k", now):
            times.append(now)

    # Every window between two admitted requests, both ends included.
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            count = j - i + 1
            assert count <= buckets.capacity + rate * (times[j] - start) + 1e-6


@given(
    per_minute=st.integers(1, 600),
    gaps=st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=100),
)
def test_buckets__refused__admitted_once_its_wait_has_passed(per_minute, gaps):
    buckets = TokenBuckets(per_minute=per_minute, max_keys=10)
    now = 0.0
    for gap in gaps:
        now += gap
        admitted(buckets, "k", now)

    wait = buckets.wait("k", now)
    assert admitted(buckets, "k", now + wait)


@given(
    per_minute=st.integers(1, 120),
    arrivals=st.lists(
        st.tuples(st.floats(0, 20, allow_nan=False), st.sampled_from("abcdefgh")), max_size=120
    ),
)
def test_buckets__only_full_buckets_dropped__same_answers_as_unbounded(per_minute, arrivals):
    """Past max_keys an entry is dropped; when it was full already, nothing changes."""
    unbounded = TokenBuckets(per_minute=per_minute, max_keys=1_000)
    bounded = TokenBuckets(per_minute=per_minute, max_keys=2)
    now = 0.0
    for gap, key in arrivals:
        # Arrivals a full minute apart: every bucket that is dropped has refilled.
        now += 60.0 + gap
        assert admitted(bounded, key, now) == admitted(unbounded, key, now)
        assert len(bounded) <= 2


def test_limits__device_over_its_limit__key_budget_untouched():
    clock = Clock()
    limits = SdkRateLimits(key_per_minute=3, device_per_minute=1, clock=clock)

    assert limits.admit("key", "noisy") is None
    refusals = [limits.admit("key", "noisy") for _ in range(10)]

    assert all(r is not None and r.limit == "device" for r in refusals)
    assert [limits.admit("key", device) for device in ("b", "c")] == [None, None]
    assert limits.admit("key", "d") == Refusal(pytest.approx(20.0), "key")


def test_limits__key_refuses__device_token_kept():
    clock = Clock()
    limits = SdkRateLimits(key_per_minute=1, device_per_minute=1, clock=clock)
    assert limits.admit("key", "a") is None

    assert limits.admit("key", "b").limit == "key"
    clock.now += 60
    assert limits.admit("key", "b") is None  # b's own token was not spent on the refusal


def test_limits__refill_after_the_wait__admitted_again():
    clock = Clock()
    limits = SdkRateLimits(key_per_minute=2, device_per_minute=0, clock=clock)
    limits.admit("key", "a")
    limits.admit("key", "a")

    refusal = limits.admit("key", "a")
    clock.now += refusal.wait

    assert refusal.wait == pytest.approx(30.0)
    assert limits.admit("key", "a") is None


def test_limits__both_off__everything_admitted_and_nothing_tracked():
    limits = SdkRateLimits(key_per_minute=0, device_per_minute=0, clock=Clock())

    assert all(limits.admit("key", "a") is None for _ in range(1000))
    assert limits.keys is None and limits.devices is None
