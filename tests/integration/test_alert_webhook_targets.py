"""Webhook channels reach public addresses only (unless ALERT_WEBHOOK_ALLOW_PRIVATE): refused
when the channel is saved in the admin, and again when a delivery is sent, as a failure with
its reason rather than a retry. Deliveries are queued through a signal, not by importing tasks."""

import ast
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from experiments import alerts, tasks
from experiments.models import Alert, AlertChannel, AlertDelivery, DeliveryStatus

pytestmark = pytest.mark.django_db

CHANNELS_URL = "/admin/experiments/alertchannel/"
PUBLIC_ONLY = "webhooks may only go to public addresses"


@pytest.fixture
def public_only(settings):
    settings.ALERT_WEBHOOK_ALLOW_PRIVATE = False


def channel_add(admin_client, app, target):
    return admin_client.post(
        CHANNELS_URL + "add/",
        {"app": app.pk, "name": "hook", "kind": "webhook", "target": target, "enabled": "on"},
    )


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("http://127.0.0.1/hook", "127.0.0.1 is a loopback address: " + PUBLIC_ONLY),
        ("http://10.0.0.1/hook", "10.0.0.1 is a private address: " + PUBLIC_ONLY),
        (
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254 is a link-local address: " + PUBLIC_ONLY,
        ),
        ("http://[::ffff:127.0.0.1]:8000/", "inside an IPv6 address: " + PUBLIC_ONLY),
        ("http://localhost:8000/hook", "localhost resolves to"),
        ("file:///etc/passwd", "Webhook URLs must be http or https, not file."),
        ("http://admin:pw@hooks.example.com/", "may not carry a user name or password"),
    ],
)
def test_admin__webhook_to_a_non_public_target__refused_with_the_reason(
    running, admin_client, public_only, target, message
):
    response = channel_add(admin_client, running.flow.app, target)

    assert response.status_code == 200  # the form again, not a redirect to the list
    errors = response.context["adminform"].form.errors["target"]
    assert any(message in error for error in errors), errors
    assert not AlertChannel.objects.exists()


def test_admin__webhook_to_a_public_address__saved(running, admin_client, public_only):
    response = channel_add(admin_client, running.flow.app, "https://93.184.216.34/hook")

    assert response.status_code == 302
    assert AlertChannel.objects.get().target == "https://93.184.216.34/hook"


def test_admin__email_channel__not_checked_as_a_url(running, admin_client, public_only):
    response = admin_client.post(
        CHANNELS_URL + "add/",
        {"app": running.flow.app.pk, "name": "m", "kind": "email", "target": "a@example.com"},
    )

    assert response.status_code == 302


def test_admin__private_allowed__loopback_webhook_saved(running, admin_client, webhook_receiver):
    # settings_test allows private targets, so the suite's receiver on 127.0.0.1 works.
    response = channel_add(admin_client, running.flow.app, webhook_receiver.url)

    assert response.status_code == 302
    assert AlertChannel.objects.get().target == webhook_receiver.url


def loopback_delivery(rollout, url):
    """A channel saved while private targets were allowed, with one pending delivery."""
    channel = AlertChannel.objects.create(
        app=rollout.flow.app, name="hook", kind="webhook", target=url
    )
    alert = Alert.objects.create(
        rollout=rollout, key="k", kind="rollback", title="Rolled back", text="why", payload={}
    )
    return AlertDelivery.objects.create(alert=alert, channel=channel)


def test_send__loopback_target_after_the_setting_turned_off__failed_at_once_with_reason(
    running, webhook_receiver, settings
):
    delivery = loopback_delivery(running, webhook_receiver.url)
    settings.ALERT_WEBHOOK_ALLOW_PRIVATE = False

    status = tasks.alert_deliver.delay(delivery.pk).get()  # eager: a retry would raise here

    delivery.refresh_from_db()
    assert status == DeliveryStatus.FAILED
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 1)
    assert delivery.last_error.startswith("Refused: 127.0.0.1 is a loopback address: ")
    assert "ALERT_WEBHOOK_ALLOW_PRIVATE" in delivery.last_error
    assert webhook_receiver.received == []
    assert alerts.alert_delivery_attempt(delivery_id=delivery.pk) == DeliveryStatus.FAILED


def test_send__loopback_target_with_the_setting_on__delivered(running, webhook_receiver):
    delivery = loopback_delivery(running, webhook_receiver.url)

    assert alerts.alert_delivery_attempt(delivery_id=delivery.pk) == DeliveryStatus.SENT
    assert webhook_receiver.received == [{"text": "Rolled back\nwhy"}]


@pytest.mark.parametrize("allow_private", [True, False])
def test_alert_raise__queued_through_the_signal__sent_or_refused(
    running, webhook_receiver, settings, django_capture_on_commit_callbacks, allow_private
):
    # The path of the judge, web or worker: alert_raise -> on commit -> signal -> tasks.
    AlertChannel.objects.create(
        app=running.flow.app, name="hook", kind="webhook", target=webhook_receiver.url
    )
    settings.ALERT_WEBHOOK_ALLOW_PRIVATE = allow_private

    with django_capture_on_commit_callbacks(execute=True):
        alerts.alert_raise(
            rollout=running, key="k", kind="rollback", title="t", text="x", payload={}
        )

    delivery = AlertDelivery.objects.get()
    if allow_private:
        assert (delivery.status, len(webhook_receiver.received)) == (DeliveryStatus.SENT, 1)
    else:
        assert (delivery.status, webhook_receiver.received) == (DeliveryStatus.FAILED, [])
        assert delivery.last_error.startswith("Refused: ")


@pytest.fixture
def redirecting_receiver(webhook_receiver):
    """A receiver that answers 307 towards the suite's receiver."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(307)
            self.send_header("Location", webhook_receiver.url)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield server
    server.shutdown()
    server.server_close()


def test_send__redirect__not_followed_and_recorded(running, redirecting_receiver, webhook_receiver):
    delivery = loopback_delivery(running, redirecting_receiver.url)

    status = alerts.alert_delivery_attempt(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert status == DeliveryStatus.PENDING  # retried: the receiver may be fixed
    assert delivery.last_error == "WebhookRejected: HTTP 307: redirects are not followed"
    assert webhook_receiver.received == []


def test_alerts_module__does_not_import_tasks():
    # The import circle of #9 (tasks -> judge -> alerts -> tasks), even inside a function:
    # alerts sends a signal instead (import-linter's no-import-cycles contract holds it too).
    imported = set()
    for node in ast.walk(ast.parse(Path(alerts.__file__).read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            joint = module if module.endswith(".") else module + "."
            imported |= {module} | {joint + alias.name for alias in node.names}
    assert ".webhook_targets" in imported  # relative imports are seen
    assert not [name for name in imported if name.split(".")[-1] == "tasks"], imported
