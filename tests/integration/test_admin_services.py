"""The admin changes state only through services: its forms call them once valid
(`controlplane.admin_mixins.ServiceFormMixin`), a service's refusal is shown in the form, and
what the services do beyond saving a row (bumping the config version) happens from the admin too."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from controlplane.config_version import config_version_read
from controlplane.models import ApiToken
from registry import services
from registry.models import App, ModelVersion, SdkKey
from rollout.cache import assignment_cache
from rollout.models import Rollout

pytestmark = pytest.mark.django_db


def form_of(response):
    return response.context["adminform"].form


def test_admin_sdk_key_deleted__stops_working_at_once(
    demo_flow, admin_client, settings, django_capture_on_commit_callbacks
):
    settings.ROLLOUT_CONFIG_CHECK_SECONDS = 0
    key, plaintext = services.sdk_key_create(app=demo_flow.app)
    assert assignment_cache.app_for_key(plaintext) is not None  # in this process's snapshot
    before = config_version_read()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/registry/sdkkey/{key.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not SdkKey.objects.filter(pk=key.pk).exists()
    assert config_version_read() == before + 1
    assert assignment_cache.app_for_key(plaintext) is None


def test_admin_app_renamed__to_a_free_name__saved(demo_app, admin_client):
    response = admin_client.post(
        f"/admin/registry/app/{demo_app.pk}/change/",
        {
            "name": "Demo Shop 2",
            "bundle_identifiers": '["com.example.shop2"]',
            # The SDK keys inline, empty.
            "sdk_keys-TOTAL_FORMS": "0",
            "sdk_keys-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    demo_app.refresh_from_db()
    assert (demo_app.name, demo_app.bundle_identifiers) == ("Demo Shop 2", ["com.example.shop2"])


def test_admin_app_added__bad_bundle_identifier__field_error_nothing_created(admin_client):
    response = admin_client.post(
        "/admin/registry/app/add/",
        {"name": "Shop", "bundle_identifiers": '["not a bundle id"]'},
    )

    assert response.status_code == 200
    assert (
        "Not a bundle identifier: not a bundle id"
        in form_of(response).errors["bundle_identifiers"][0]
    )
    assert not App.objects.exists()


def test_admin_upload__not_a_model__the_services_sentence_at_the_file_field(
    demo_flow, admin_client
):
    response = admin_client.post(
        "/admin/registry/modelversion/add/",
        {
            "flow": demo_flow.pk,
            "file": SimpleUploadedFile("model.mlmodel", b"<html>not a model</html>"),
            "metrics": "{}",
        },
    )

    assert response.status_code == 200
    form = form_of(response)
    assert list(form.errors) == ["file"]  # shown once, where it belongs
    assert "HTML" in form.errors["file"][0]
    assert not ModelVersion.objects.exists()


def test_admin_model_version_notes__changed__nothing_else(sdk_setup, admin_client):
    version = sdk_setup["challenger"]

    response = admin_client.post(
        f"/admin/registry/modelversion/{version.pk}/change/", {"notes": "ships in 2.1"}
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    stored = ModelVersion.objects.get(pk=version.pk)
    assert stored.notes == "ships in 2.1"
    assert (stored.sha256, stored.min_sdk_version) == (version.sha256, version.min_sdk_version)


def test_admin_rollout__baseline_as_challenger__refused_in_the_form(sdk_setup, admin_client):
    # The picker offers only the flow's models that are not its baseline (the service refuses
    # the baseline too: rollout.services.rollout_create).
    response = admin_client.post(
        "/admin/rollout/rollout/add/",
        {
            "flow": sdk_setup["flow"].pk,
            "challenger": sdk_setup["baseline"].pk,
            "stages": "1, 5",
            "stage_min_minutes": "60",
            "min_devices_per_arm": "100",
            "advance_detectable_lift": "50",
            "planned_sample": "5000",
            "step": "create",
        },
    )

    assert response.status_code == 200
    assert list(response.context["form"].errors) == ["challenger"]
    assert not Rollout.objects.exists()


def test_admin_rollout__created__by_its_service_with_the_person_as_actor(sdk_setup, admin_client):
    response = admin_client.post(
        "/admin/rollout/rollout/add/",
        {
            "flow": sdk_setup["flow"].pk,
            "challenger": sdk_setup["challenger"].pk,
            "stages": "1, 5",
            "stage_min_minutes": "60",
            "min_devices_per_arm": "100",
            "advance_detectable_lift": "50",
            "planned_sample": "5000",
            "step": "create",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    rollout = Rollout.objects.get()
    assert rollout.created_by == "user:admin"
    assert [(e.action, e.actor) for e in rollout.events.all()] == [("create", "user:admin")]
    assert [(a.name, a.stages) for a in rollout.arms.all()] == [("challenger-1", [100, 500])]


def test_admin_api_token__created_shown_once_renamed_deleted(admin_client, admin_user):
    response = admin_client.post(
        "/admin/controlplane/apitoken/add/", {"user": admin_user.pk, "name": "ci"}, follow=True
    )

    token = ApiToken.objects.get()
    shown = [str(m) for m in response.context["messages"] if "New API token" in str(m)]
    assert len(shown) == 1 and token.prefix in shown[0]

    response = admin_client.post(
        f"/admin/controlplane/apitoken/{token.pk}/change/", {"name": "nightly"}
    )
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.name == "nightly"

    response = admin_client.post(
        f"/admin/controlplane/apitoken/{token.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 302
    assert not ApiToken.objects.exists()
