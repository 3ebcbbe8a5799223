"""The registry's management commands, run as an operator would run them."""

import hashlib
import io
import json

import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from controlplane.models import ApiToken
from registry import services, training
from registry.models import ModelVersion

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def demo_csv(tmp_path):
    path = tmp_path / "outcomes.csv"
    training.write_demo_csv(path, training.demo_rows(200, seed=3))
    return path


def test_train_model__csv_to_flow__registers_model_with_report(demo_flow, demo_csv):
    output = run(
        "train_model", str(demo_csv), "--flow", str(demo_flow.pk), "--trees", "10", "--set-baseline"
    )

    version = ModelVersion.objects.get()
    assert "Registered model" in output
    assert version.model_type == "treeEnsembleClassifier"
    assert set(version.metrics) >= {"accuracy", "Purchased", "Dismissed", "n_train", "n_test"}
    assert version.metrics["n_train"] + version.metrics["n_test"] == 200
    demo_flow.refresh_from_db()
    assert demo_flow.baseline_id == version.pk
    assert demo_flow.baseline_changes.get().actor == "command:train_model"


def test_train_model__by_app_and_flow_name__writes_file_too(demo_flow, demo_csv, tmp_path):
    target = tmp_path / "out.mlmodel"

    run(
        "train_model", str(demo_csv), "--app", "Demo Shop", "--flow-name", "onboarding_upsell",
        "--output", str(target), "--trees", "10",
    )  # fmt: skip

    version = ModelVersion.objects.get()
    assert hashlib.sha256(target.read_bytes()).hexdigest() == version.sha256


def test_train_model__unknown_flow__clear_error(demo_csv):
    with pytest.raises(CommandError, match="no flow named 'nope'"):
        run("train_model", str(demo_csv), "--app", "Demo Shop", "--flow-name", "nope")


def test_train_model__one_class_csv__clear_error(demo_flow, tmp_path):
    path = tmp_path / "one.csv"
    rows = [r for r in training.demo_rows(200, seed=1) if r["Outcome"] == "Dismissed"]
    training.write_demo_csv(path, rows)

    with pytest.raises(CommandError):
        run("train_model", str(path), "--flow", str(demo_flow.pk))
    assert ModelVersion.objects.count() == 0


def test_export_bundle__writes_verified_baselines_and_manifest(demo_flow, trained_models, tmp_path):
    version, _ = services.model_version_upload(
        flow=demo_flow, file=trained_models["baseline"].open("rb"), filename="b.mlmodel"
    )
    services.flow_baseline_set(flow=demo_flow, model_version=version, actor="test")
    folder = tmp_path / "bundle"

    output = run(
        "export_bundle", str(demo_flow.app_id), str(folder), "--base-url", "https://x.test"
    )

    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["customModels"][0]["modelVersion"] == str(version.pk)
    assert manifest["customModels"][0]["url"].startswith("https://x.test/models/")
    written = (folder / version.file_name).read_bytes()
    assert written == trained_models["baseline"].read_bytes()
    assert "Wrote 1 model(s)" in output


def test_export_bundle__corrupt_stored_file__refused(demo_flow, trained_models, tmp_path):
    version, _ = services.model_version_upload(
        flow=demo_flow, file=trained_models["baseline"].open("rb"), filename="b.mlmodel"
    )
    services.flow_baseline_set(flow=demo_flow, model_version=version, actor="test")
    with open(default_storage.path(version.storage_key), "r+b") as stored:
        stored.write(b"XX")

    with pytest.raises(CommandError, match="corrupt"):
        run("export_bundle", str(demo_flow.app_id), str(tmp_path / "bundle"))
    assert not (tmp_path / "bundle" / version.file_name).exists()


def test_export_bundle__unknown_app__clear_error(tmp_path):
    with pytest.raises(CommandError, match="No app"):
        run("export_bundle", "0b6f1c2e-7a55-4c1e-9a77-1f0d3a1b9c44", str(tmp_path))


def test_create_api_token__prints_a_token_that_authenticates(django_user_model, client):
    django_user_model.objects.create_superuser("root", "root@example.com", "pw")

    token = run("create_api_token", "root", "--name", "ci").strip()

    assert token.startswith("cohort_pat_")
    assert ApiToken.objects.get().name == "ci"
    response = client.get("/api/v1/apps", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200


def test_create_api_token__unknown_user__clear_error():
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        run("create_api_token", "ghost")


def test_seed_demo__twice__idempotent_with_trained_baseline(settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"

    first = json.loads(run("seed_demo", "--json"))
    second = json.loads(run("seed_demo", "--json"))

    assert first == second
    assert ModelVersion.objects.count() == 2
    baseline = ModelVersion.objects.get(pk=first["models"]["baseline"])
    assert baseline.flow.baseline_id == baseline.pk
    assert baseline.metrics["accuracy"] > 0.5
