"""The admin's login form is throttled by django-axes, per (username, client address) pair."""

import json
from datetime import timedelta

import pytest
from axes.models import AccessAttempt, AccessLog
from django.core.management import call_command
from django.db.models import F
from django.test import Client, RequestFactory

from controlplane.client_address import forwarded_client_address
from controlplane.views import login_locked_out

LOGIN = "/admin/login/"
WRONG_PASSWORD_TEXT = "Please enter the correct username and password"


@pytest.fixture
def staff(django_user_model):
    """Two staff users of the admin."""
    return {
        name: django_user_model.objects.create_user(
            name, password=f"right-{name}-1", is_staff=True, is_superuser=True
        )
        for name in ("alice", "bob")
    }


def log_in(client, username, password, address="192.0.2.10", **headers):
    return client.post(
        LOGIN,
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=address,
        **headers,
    )


def fail(client, username, times, address="192.0.2.10", **headers):
    return [log_in(client, username, "wrong", address, **headers) for _ in range(times)]


def is_logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def assert_locked(response):
    assert response.status_code == 429
    assert response["Retry-After"] == "900"
    page = response.content.decode()
    assert "Too many failed logins" in page
    assert "Try again in 15 minutes" in page
    assert 'id="site-name"' in page  # the admin's look: its header


def test_defaults__five_failures__fifteen_minutes__by_pair(settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    assert settings.AXES_COOLOFF_TIME.total_seconds() == 15 * 60
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]
    assert settings.AUTHENTICATION_BACKENDS[0] == "axes.backends.AxesStandaloneBackend"


@pytest.mark.django_db
def test_normal_login__still_works(client, staff):
    form = client.get(LOGIN)
    assert form.status_code == 200
    assert 'name="password"' in form.content.decode()

    response = log_in(client, "alice", "right-alice-1")

    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert is_logged_in(client)
    assert client.get("/admin/").status_code == 200
    assert AccessLog.objects.filter(username="alice", ip_address="192.0.2.10").exists()


@pytest.mark.django_db
def test_wrong_passwords__locked_at_the_limit(client, staff):
    responses = fail(client, "alice", 5)

    for response in responses[:4]:
        assert response.status_code == 200
        assert WRONG_PASSWORD_TEXT in response.content.decode()
    assert_locked(responses[4])
    assert "<strong>alice</strong>" in responses[4].content.decode()


@pytest.mark.django_db
def test_locked__right_password_refused(client, staff):
    fail(client, "alice", 5)

    response = log_in(client, "alice", "right-alice-1")

    assert_locked(response)
    assert not is_logged_in(client)
    assert client.get("/admin/").status_code == 302  # to the login page


@pytest.mark.django_db
def test_locked__other_user_same_address__unaffected(client, staff):
    fail(client, "alice", 5)

    response = log_in(client, "bob", "right-bob-1")

    assert response.status_code == 302
    assert is_logged_in(client)


@pytest.mark.django_db
def test_locked__same_user_other_address__unaffected(staff):
    """An attacker guessing alice's password does not lock alice out of her own machine."""
    fail(Client(), "alice", 5, address="203.0.113.66")

    owner = Client()
    response = log_in(owner, "alice", "right-alice-1", address="192.0.2.10")

    assert response.status_code == 302
    assert is_logged_in(owner)


@pytest.mark.django_db
def test_success__resets_the_count(client, staff):
    fail(client, "alice", 4)
    assert log_in(client, "alice", "right-alice-1").status_code == 302
    client.logout()

    again = fail(client, "alice", 5)

    assert [r.status_code for r in again] == [200, 200, 200, 200, 429]


@pytest.mark.django_db
def test_locked__cool_off_passes__unlocked(client, staff):
    fail(client, "alice", 5)
    # Sixteen minutes pass: move the recorded failures back instead of waiting.
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=16))

    response = log_in(client, "alice", "right-alice-1")

    assert response.status_code == 302
    assert is_logged_in(client)


@pytest.mark.django_db
def test_locked__tiny_cool_off__unlocked_when_it_ends(client, staff, settings):
    settings.AXES_COOLOFF_TIME = timedelta(seconds=1)
    locked = fail(client, "alice", 5)[4]
    assert locked.status_code == 429 and locked["Retry-After"] == "1"
    assert "Try again in 1 second." in locked.content.decode()
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(seconds=2))

    assert log_in(client, "alice", "right-alice-1").status_code == 302


@pytest.mark.django_db
def test_locked__reset_username_command__unlocked(client, staff):
    fail(client, "alice", 5)

    call_command("axes_reset_username", "alice")

    assert log_in(client, "alice", "right-alice-1").status_code == 302


@pytest.mark.django_db
def test_api_tokens__not_throttled(client, staff, make_api_client):
    """Bearer tokens never go through django.contrib.auth.authenticate: axes never sees them."""
    api = make_api_client("admin")
    fail(client, "admin", 5)
    assert log_in(client, "admin", "pw-admin").status_code == 429

    assert api.get("/api/v1/apps").status_code == 200
    attempts_before = AccessAttempt.objects.count()
    for _ in range(20):
        response = client.get("/api/v1/apps", HTTP_AUTHORIZATION="Bearer cohort_pat_wrong")
        assert response.status_code == 401
    assert AccessAttempt.objects.count() == attempts_before
    assert api.get("/api/v1/apps").status_code == 200


@pytest.mark.django_db
def test_behind_proxy__client_is_the_address_the_proxy_appended(client, staff, settings):
    """A client cannot dodge the lockout by sending X-Forwarded-For entries of its own."""
    settings.TRUSTED_PROXY_COUNT = 1
    for index in range(4):
        forged = f"10.9.9.{index}, 203.0.113.7"
        assert (
            log_in(client, "alice", "wrong", "10.0.0.1", HTTP_X_FORWARDED_FOR=forged).status_code
            == 200
        )
    locked = log_in(client, "alice", "wrong", "10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert locked.status_code == 429
    assert AccessAttempt.objects.get().ip_address == "203.0.113.7"

    # Another client behind the same balancer (same REMOTE_ADDR) is not locked out.
    other = log_in(
        Client(), "alice", "right-alice-1", "10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.2"
    )
    assert other.status_code == 302


@pytest.mark.django_db
def test_behind_proxy__header_not_an_address__connection_address_used(client, staff, settings):
    settings.TRUSTED_PROXY_COUNT = 1

    response = log_in(client, "alice", "wrong", "10.0.0.1", HTTP_X_FORWARDED_FOR="<script>")

    assert response.status_code == 200
    assert AccessAttempt.objects.get().ip_address == "10.0.0.1"


def test_forwarded_client_address():
    assert forwarded_client_address("10.0.0.1", "", 0) == "10.0.0.1"
    assert forwarded_client_address("10.0.0.1", "203.0.113.7", 0) == "10.0.0.1"
    assert forwarded_client_address("10.0.0.1", "1.1.1.1, 203.0.113.7", 1) == "203.0.113.7"
    assert (
        forwarded_client_address("10.0.0.1", "1.1.1.1, 203.0.113.7, 10.0.0.2", 2) == "203.0.113.7"
    )
    assert forwarded_client_address("10.0.0.1", "2001:db8::1", 1) == "2001:db8::1"
    assert forwarded_client_address("10.0.0.1", "", 1) == "10.0.0.1"  # reached directly
    assert forwarded_client_address("10.0.0.1", "203.0.113.7", 2) == "10.0.0.1"  # too few hops
    assert forwarded_client_address("10.0.0.1", "unknown", 1) == "10.0.0.1"
    assert forwarded_client_address(None, "", 0) is None


def test_lockout_of_an_api_path__json():
    """Only the admin's form authenticates today; were an API path to, it would get JSON."""
    request = RequestFactory().post("/api/v1/login")

    response = login_locked_out(request, None, {"username": "alice"})

    assert response.status_code == 429
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == "900"
    assert json.loads(response.content) == {
        "error": "rate_limited",
        "detail": "Too many failed logins: try again in 15 minutes.",
    }
