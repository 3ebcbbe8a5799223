"""What data scientists and product managers do with the registry in the admin, in a real browser."""

import pytest

from registry import services
from registry.models import ModelVersion

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def flow(transactional_db):
    app = services.app_create(name="Demo Shop", bundle_identifiers=["com.example.shop"])
    return services.flow_create(
        app=app, name="onboarding_upsell", flow_id=8362, positive_label="Purchased"
    )


def test_admin_upload__data_scientist_uploads_trained_model__details_shown(
    login, flow, trained_models
):
    page = login("data_scientist")
    page.goto("/admin/registry/modelversion/add/")
    page.select_option("#id_flow", str(flow.pk))
    page.set_input_files("#id_file", str(trained_models["baseline"]))
    page.fill("#id_notes", "first RandomForest")
    page.click("input[name=_save]")

    page.wait_for_selector(".messagelist")
    version = ModelVersion.objects.get()
    page.goto(f"/admin/registry/modelversion/{version.pk}/change/")
    content = page.content()
    assert "treeEnsembleClassifier" in content
    assert "classProbability" in content
    assert "multiArray" in content
    assert version.sha256 in content


def test_admin_upload__lfs_pointer__error_shown_in_form(login, flow, corpus_dir):
    page = login("data_scientist")
    page.goto("/admin/registry/modelversion/add/")
    page.select_option("#id_flow", str(flow.pk))
    pointer = (
        corpus_dir / "bad" / "erkandiken__mnist-scikit-svm-to-coreml__digit_recognizer.mlmodel"
    )
    page.set_input_files("#id_file", str(pointer))
    page.click("input[name=_save]")

    error = page.wait_for_selector(".errornote, .errorlist")
    assert "Git LFS" in page.inner_text("#content")
    assert error is not None
    assert ModelVersion.objects.count() == 0


def test_admin_baseline__product_manager_confirms_with_reason__baseline_changes(
    login, flow, trained_models
):
    version, _ = services.model_version_upload(
        flow=flow, file=trained_models["baseline"].open("rb"), filename="b.mlmodel"
    )
    page = login("product_manager")
    page.goto("/admin/registry/modelversion/")
    page.check(f"input[name=_selected_action][value='{version.pk}']")
    page.select_option("select[name=action]", "make_baseline")
    page.click("button[name=index]")
    page.wait_for_selector("text=Change the baseline")
    page.fill("#id_reason", "better offline metrics")
    page.click("input[value='Yes, make it the baseline']")

    page.wait_for_selector(".messagelist .success")
    flow.refresh_from_db()
    assert flow.baseline_id == version.pk
    change = flow.baseline_changes.get()
    assert change.actor == "user:product_manager"
    assert change.reason == "better offline metrics"


def test_admin_baseline__viewer__has_no_baseline_action(login, flow, trained_models):
    services.model_version_upload(
        flow=flow, file=trained_models["baseline"].open("rb"), filename="b.mlmodel"
    )
    page = login("viewer")
    page.goto("/admin/registry/modelversion/")

    assert page.locator("select[name=action] option[value=make_baseline]").count() == 0
    assert "treeEnsembleClassifier" in page.content()
