"""
Rate limits: the SDK endpoints' (per SDK key and per device, in each process's memory, no query)
and the management API's (DRF throttles per API token, per session user and per address).

The SDK limiter's clock is replaced by one the tests move by hand, so a refill needs no sleep.
"""

import logging
import uuid
from datetime import UTC, datetime

import pytest

from controlplane import throttling
from controlplane.services import api_token_create
from registry import services as registry_services
from rollout.sdk_requests import sdk_rate_limits

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self):
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sdk_limits(settings):
    """Set the SDK limits for this test (one web process); return the limiter's clock."""
    clock = Clock()

    def configure(*, per_key: int = 0, per_device: int = 0, processes: int = 1) -> Clock:
        settings.WEB_PROCESSES = processes
        settings.SDK_RATE_LIMIT_PER_MINUTE = per_key
        settings.SDK_RATE_LIMIT_PER_DEVICE_PER_MINUTE = per_device
        sdk_rate_limits().clock = clock  # the limiter the settings change just made anew
        return clock

    return configure


def assert_rate_limited(response, retry_after: int, limit_word: str):
    assert response.status_code == 429
    assert response["Retry-After"] == str(retry_after)
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == "rate_limited"
    assert limit_word in body["detail"]


def post_events(client, key, device_id, events=()):
    return client.post(
        "/api/v1/sdk/events",
        {"device_id": device_id, "sdk_version": "1.5.0", "events": list(events)},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


# --------------------------------------------------------------------------- SDK, per key


def test_sdk_key__one_poll_over_its_limit__429_json_with_retry_after(sdk_setup, poll, sdk_limits):
    sdk_limits(per_key=3)  # a token every 20 s
    statuses = [poll(sdk_setup["key"], f"device-{n}", fresh=False).status_code for n in range(3)]

    refused = poll(sdk_setup["key"], "device-3", fresh=False)

    assert statuses == [200, 200, 200]
    assert_rate_limited(refused, 20, "SDK key")


def test_sdk_key__over_its_limit__another_key_of_the_same_app_unaffected(
    sdk_setup, poll, sdk_limits
):
    sdk_limits(per_key=1)
    _, other_key = registry_services.sdk_key_create(app=sdk_setup["flow"].app, name="second")
    assert poll(sdk_setup["key"], "device-1", fresh=False).status_code == 200
    assert poll(sdk_setup["key"], "device-2", fresh=False).status_code == 429

    assert poll(other_key, "device-2", fresh=False).status_code == 200


def test_sdk_key__retry_after_has_passed__admitted_again(sdk_setup, poll, sdk_limits):
    clock = sdk_limits(per_key=2)
    poll(sdk_setup["key"], "device-1", fresh=False)
    poll(sdk_setup["key"], "device-2", fresh=False)
    refused = poll(sdk_setup["key"], "device-3", fresh=False)

    clock.now += int(refused["Retry-After"]) - 1
    too_early = poll(sdk_setup["key"], "device-3", fresh=False)
    clock.now += 1
    again = poll(sdk_setup["key"], "device-3", fresh=False)

    assert refused["Retry-After"] == "30"
    assert too_early.status_code == 429
    assert too_early["Retry-After"] == "1"
    assert again.status_code == 200


def test_sdk_key__several_web_processes__this_one_admits_its_share(sdk_setup, poll, sdk_limits):
    sdk_limits(per_key=6, processes=2)  # 3 a minute in each of the two processes

    statuses = [poll(sdk_setup["key"], f"device-{n}", fresh=False).status_code for n in range(4)]

    assert statuses == [200, 200, 200, 429]


# --------------------------------------------------------------------------- SDK, per device


def test_sdk_device__over_its_limit__refused_while_the_fleet_polls_on(sdk_setup, poll, sdk_limits):
    sdk_limits(per_key=10, per_device=2)
    noisy = [poll(sdk_setup["key"], "noisy", fresh=False) for _ in range(8)]

    others = [poll(sdk_setup["key"], f"device-{n}", fresh=False).status_code for n in range(8)]

    assert [r.status_code for r in noisy] == [200, 200] + [429] * 6
    assert_rate_limited(noisy[-1], 30, "device")
    # The noisy device's refused polls took nothing from the key: 10 - 2 left for the others.
    assert others == [200] * 8


def test_sdk_device__same_id_in_another_app__its_own_bucket(sdk_setup, poll, sdk_limits):
    sdk_limits(per_device=1)
    other_app = registry_services.app_create(name="Other", bundle_identifiers=["com.example.o"])
    _, other_key = registry_services.sdk_key_create(app=other_app)
    assert poll(sdk_setup["key"], "shared-id", fresh=False).status_code == 200
    assert poll(sdk_setup["key"], "shared-id", fresh=False).status_code == 429

    assert poll(other_key, "shared-id", fresh=False).status_code == 200


def test_sdk_device__bad_request__takes_no_token(sdk_setup, poll, sdk_limits):
    sdk_limits(per_device=1)

    bad = poll(sdk_setup["key"], "device-1", sdk_version="1.5")
    good = poll(sdk_setup["key"], "device-1", fresh=False)

    assert bad.status_code == 400
    assert good.status_code == 200


# --------------------------------------------------------------------------- SDK, query-free


def test_sdk_limits__polls_under_and_over_the_limit__no_database_query(
    sdk_setup, poll, sdk_limits, django_assert_num_queries
):
    sdk_limits(per_key=1000, per_device=21)
    poll(sdk_setup["key"], "device-1")  # warm-up: builds the snapshot; takes the first token

    with django_assert_num_queries(0):
        under = [poll(sdk_setup["key"], "device-1", fresh=False) for _ in range(20)]
        over = poll(sdk_setup["key"], "device-1", fresh=False)

    assert [r.status_code for r in under] == [200] * 20
    assert over.status_code == 429


def test_sdk_limits__redis_unreachable__limits_still_apply(sdk_setup, poll, sdk_limits, settings):
    """Nothing of the limiter lives in Redis: it neither needs it nor waits for it."""
    sdk_limits(per_device=1)
    assert poll(sdk_setup["key"], "device-1").status_code == 200
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    assert poll(sdk_setup["key"], "device-1", fresh=False).status_code == 429
    assert poll(sdk_setup["key"], "device-2", fresh=False).status_code == 200


# --------------------------------------------------------------------------- SDK, events


def _event(sdk_setup) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "flow": sdk_setup["flow"].name,
        "outcome": "Purchased",
        "ts": datetime.now(UTC).isoformat(),
    }


def test_sdk_events__over_the_device_limit__429_and_nothing_stored(client, sdk_setup, sdk_limits):
    from experiments.models import OutcomeEvent

    sdk_limits(per_device=1)
    first = post_events(client, sdk_setup["key"], "device-1", [_event(sdk_setup)])

    refused = post_events(client, sdk_setup["key"], "device-1", [_event(sdk_setup)])

    assert first.status_code == 200
    assert_rate_limited(refused, 60, "device")
    assert OutcomeEvent.objects.count() == 1


def test_sdk_events_and_poll__one_budget_per_device(client, sdk_setup, poll, sdk_limits):
    sdk_limits(per_device=2)
    assert poll(sdk_setup["key"], "device-1").status_code == 200
    assert post_events(client, sdk_setup["key"], "device-1").status_code == 200

    assert poll(sdk_setup["key"], "device-1", fresh=False).status_code == 429
    assert post_events(client, sdk_setup["key"], "device-1").status_code == 429


def test_sdk_events__over_the_key_limit__429(client, sdk_setup, sdk_limits):
    sdk_limits(per_key=2)
    statuses = [post_events(client, sdk_setup["key"], f"d-{n}").status_code for n in range(3)]

    assert statuses == [200, 200, 429]


# --------------------------------------------------------------------------- management API


@pytest.fixture
def api_rates(settings):
    def configure(*, api=None, anon=None):
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {"api": api, "anon": anon},
        }

    throttling._CacheHealth.reset()
    yield configure
    throttling._CacheHealth.reset()


def test_api_token__over_its_rate__429_with_retry_after(admin_api, api_rates):
    api_rates(api="2/min")
    statuses = [admin_api.get("/api/v1/apps").status_code for _ in range(2)]

    refused = admin_api.get("/api/v1/apps")

    assert statuses == [200, 200]
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert refused.json()["error"] == "rate_limited"
    assert set(refused.json()) == {"error", "detail"}


def test_api_token__over_its_rate__another_token_of_the_same_user_unaffected(admin_api, api_rates):
    from rest_framework.test import APIClient

    api_rates(api="1/min")
    _, plaintext = api_token_create(user=admin_api.user, name="second")
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    admin_api.get("/api/v1/apps")
    assert admin_api.get("/api/v1/apps").status_code == 429

    assert other.get("/api/v1/apps").status_code == 200


def test_api_session__over_its_rate__429(client, admin_api, api_rates):
    api_rates(api="1/min")
    client.force_login(admin_api.user)

    statuses = [client.get("/api/v1/apps").status_code for _ in range(2)]

    assert statuses == [200, 429]


def test_api_anonymous__throttled_by_address_where_anyone_may_ask(client, api_rates):
    api_rates(anon="1/min")

    first = client.get("/api/schema/", REMOTE_ADDR="192.0.2.1")
    again = client.get("/api/schema/", REMOTE_ADDR="192.0.2.1")
    other_address = client.get("/api/schema/", REMOTE_ADDR="192.0.2.2")

    assert first.status_code == 200
    assert again.status_code == 429
    assert int(again["Retry-After"]) >= 1
    assert other_address.status_code == 200


def test_api_rate__cache_unreachable__requests_pass_and_it_is_logged(
    admin_api, api_rates, settings, caplog
):
    api_rates(api="1/min")
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }

    with caplog.at_level(logging.WARNING, logger="controlplane.throttling"):
        statuses = [admin_api.get("/api/v1/apps").status_code for _ in range(3)]

    assert statuses == [200, 200, 200]
    # Logged once: then the process leaves the cache alone for a while.
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "throttling.cache_unreachable" in caplog.records[0].message
