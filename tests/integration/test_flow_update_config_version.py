"""`registry.services.flow_update` bumps the config version, so web processes rebuild the app
snapshot that carries the flow's positive label and attribution window."""

import pytest

from controlplane.config_version import config_version_published, config_version_read
from controlplane.errors import InvalidInput
from registry import services
from registry.models import Flow
from rollout.cache import AssignmentCache, assignment_cache

pytestmark = pytest.mark.django_db

FLOW = "onboarding_upsell"


@pytest.fixture
def sdk_key(demo_flow):
    _, key = services.sdk_key_create(app=demo_flow.app)
    return key


def snapshot_flow(key):
    """The flow as this process's snapshot has it, without dropping the cache first."""
    return assignment_cache.app_for_key(key).flows[FLOW]


@pytest.mark.parametrize(
    "change", [{"positive_label": "Subscribed"}, {"attribution_window_hours": 24}, {}]
)
def test_flow_update__bumps_row_in_its_transaction__copies_to_redis_on_commit(
    demo_flow, django_capture_on_commit_callbacks, change
):
    before = config_version_read()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        services.flow_update(flow=demo_flow, **change)
        assert config_version_read() == before + 1  # with the change, in its transaction
        assert config_version_published() != before + 1  # Redis only once it commits

    assert len(callbacks) == 1
    assert config_version_read() == before + 1
    assert config_version_published() == before + 1


@pytest.mark.parametrize(
    "change",
    [{"attribution_window_hours": 0}, {"interface": {"inputs": "not a list"}}],
)
def test_flow_update__invalid__no_bump_nothing_saved(
    demo_flow, django_capture_on_commit_callbacks, change
):
    before = config_version_read()

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(InvalidInput),
    ):
        services.flow_update(flow=demo_flow, positive_label="Subscribed", **change)

    assert callbacks == []
    assert config_version_read() == before
    stored = Flow.objects.get(pk=demo_flow.pk)
    assert (stored.positive_label, stored.attribution_window_hours) == ("Purchased", 72)


def test_flow_update__web_process_snapshot_picks_up_new_label_and_window(
    demo_flow, sdk_key, settings, django_capture_on_commit_callbacks
):
    settings.ROLLOUT_CONFIG_CHECK_SECONDS = 0
    old = snapshot_flow(sdk_key)
    assert (old.positive_label, old.attribution_window_hours) == ("Purchased", 72)

    with django_capture_on_commit_callbacks(execute=True):
        services.flow_update(
            flow=demo_flow, positive_label="Subscribed", attribution_window_hours=24
        )

    new = snapshot_flow(sdk_key)
    assert (new.positive_label, new.attribution_window_hours) == ("Subscribed", 24)


def test_flow_update__from_the_admin__bumps_and_snapshot_follows(
    demo_flow, sdk_key, admin_client, settings, django_capture_on_commit_callbacks
):
    """The admin hands flow_update a flow its form has changed already."""
    settings.ROLLOUT_CONFIG_CHECK_SECONDS = 0
    assert snapshot_flow(sdk_key).positive_label == "Purchased"
    before = config_version_read()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/registry/flow/{demo_flow.pk}/change/",
            {
                "positive_label": "Subscribed",
                "attribution_window_hours": "24",
                "interface": "null",
                "signals": "{}",
            },
        )

    assert response.status_code == 302, response.content.decode()[:2000]
    assert config_version_read() == before + 1
    assert snapshot_flow(sdk_key).positive_label == "Subscribed"


@pytest.mark.django_db(transaction=True)
def test_flow_update__committed__another_process_rebuilds_within_the_check_interval(
    demo_flow, sdk_key, settings
):
    """Without a surrounding transaction the bump happens as soon as the save commits."""
    now = [0.0]
    web_process = AssignmentCache(clock=lambda: now[0])  # a process with its own snapshots
    assert web_process.app_for_key(sdk_key).flows[FLOW].positive_label == "Purchased"
    before = config_version_read()

    services.flow_update(flow=demo_flow, positive_label="Subscribed")

    assert config_version_read() == before + 1
    assert web_process.app_for_key(sdk_key).flows[FLOW].positive_label == "Purchased"  # cached
    now[0] += settings.ROLLOUT_CONFIG_CHECK_SECONDS
    assert web_process.app_for_key(sdk_key).flows[FLOW].positive_label == "Subscribed"
