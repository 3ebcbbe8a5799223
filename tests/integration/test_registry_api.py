"""The registry's management API, black-box: real Core ML files in, the same bytes out."""

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from registry.models import ModelVersion, SdkKey

pytestmark = pytest.mark.django_db

GOOD_CORPUS = [
    "KrauseFx__CoreMLDemo__MyFirstCustomModel.mlmodel",
    "KrauseFx__CoreMLDemo__80a2-82d1-bcf8-4ab5-9d35-d7f257c4c31e.mlmodel",
    "bkdevart__ML-Playground__DiabetesTest.mlmodel",
    "bkdevart__ML-Playground__DiabetesTest.mlpackage",
    "CallmeLetty__YKCoreMLDemo__ChineseClassifier.mlpackage",
    "CallmeLetty__YKCoreMLDemo__YKTextClassifier.mlmodel",
    "onnx__onnxmltools__onehot_simple.mlmodel",
    "onnx__onnxmltools__keras2coreml_Dense_ImageNet_small.mlmodel",
    "olmaditekrar__Converting-ScikitModel-to-MlModels__iris.mlmodel",
    "gavi__Iris__iris.mlmodel",
    "MoonAndEye__CreateMLDemo__HousePricer.mlmodel",
    "simonitalia__TradeMyTesla__Cars.mlmodel",
    "improve-ai__swift-ranker__model_v8.mlmodel",
    "umerzia-7001__CoreML-Keras_Digit_recognition_app__MNISTClassifier.mlmodel",
    "dneprDroid__Lstsq-CoreML__test-model.mlmodel",
]


def zip_package(package: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(package.rglob("*")):
            if path.is_file():
                archive.write(path, f"{package.name}/{path.relative_to(package)}")
    return buffer.getvalue()


def upload(client, flow_id, data: bytes, name="model.mlmodel", **fields):
    file = io.BytesIO(data)
    file.name = name
    return client.post(
        f"/api/v1/flows/{flow_id}/models", {"file": file, **fields}, format="multipart"
    )


def create_flow(client, app_id, name, flow_id, positive_label="", **extra):
    body = {"name": name, "flow_id": flow_id, "positive_label": positive_label, **extra}
    response = client.post(f"/api/v1/apps/{app_id}/flows", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


@pytest.fixture
def app_id(admin_api):
    response = admin_api.post(
        "/api/v1/apps", {"name": "Shop", "bundle_identifiers": ["com.example.shop"]}, format="json"
    )
    assert response.status_code == 201, response.json()
    return response.json()["app_id"]


@pytest.fixture
def flow(admin_api, app_id):
    return create_flow(admin_api, app_id, "onboarding_upsell", 8362, "Purchased")


def download(client, url: str):
    response = client.get(url)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response, body


def test_upload__trained_model__stored_byte_identical_at_announced_url(
    ds_api, flow, trained_models
):
    data = trained_models["baseline"].read_bytes()

    response = upload(ds_api, flow["id"], data, notes="first", metrics=json.dumps({"auc": 0.8}))

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["size"] == len(data)
    assert body["format"] == "mlmodel"
    assert body["model_type"] == "treeEnsembleClassifier"
    assert body["spec_version"] >= 1
    assert [i["name"] for i in body["inputs"]] == ["input"]
    assert {o["name"] for o in body["outputs"]} >= {"classLabel", "classProbability"}
    assert body["metrics"] == {"auc": 0.8}
    assert body["min_sdk_version"] == "0.0.0"
    assert body["uploaded_by"] == "data_scientist"
    assert body["url"].endswith(f"/models/{body['sha256']}/{body['model_id']}.mlmodel")
    file_response, file_bytes = download(ds_api, body["url"])
    assert file_response.status_code == 200
    assert file_bytes == data
    assert file_response["Cache-Control"] == "public, max-age=31536000, immutable"
    assert file_response["ETag"] == f'"{body["sha256"]}"'


def test_upload__first_model__flow_adopts_its_interface(ds_api, flow, trained_models):
    upload(ds_api, flow["id"], trained_models["baseline"].read_bytes())

    detail = ds_api.get(f"/api/v1/flows/{flow['id']}").json()

    assert detail["interface"]["inputs"][0]["name"] == "input"
    assert detail["interface"]["inputs"][0]["type"] == "multiArray"
    assert list(detail["interface"]["inputs"][0]["shape"]) == [2]


def test_upload__same_bytes_twice__returns_existing_version(ds_api, flow, trained_models):
    data = trained_models["baseline"].read_bytes()
    first = upload(ds_api, flow["id"], data)

    second = upload(ds_api, flow["id"], data)

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["model_id"] == first.json()["model_id"]
    assert ModelVersion.objects.count() == 1


def test_upload__newer_model__id_sorts_after_older(ds_api, flow, trained_models):
    older = upload(ds_api, flow["id"], trained_models["baseline"].read_bytes()).json()
    newer = upload(ds_api, flow["id"], trained_models["challenger"].read_bytes()).json()

    assert Path(newer["url"]).name > Path(older["url"]).name


@pytest.mark.parametrize("name", GOOD_CORPUS)
def test_upload__corpus_file__accepted_and_served_byte_identical(
    admin_api, app_id, corpus_dir, name
):
    path = corpus_dir / name
    data = zip_package(path) if path.is_dir() else path.read_bytes()
    upload_name = name + ".zip" if path.is_dir() else name
    flow = create_flow(admin_api, app_id, "corpus_flow", 1)

    response = upload(admin_api, flow["id"], data, name=upload_name)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["format"] == ("mlpackage" if path.is_dir() else "mlmodel")
    assert body["url"].endswith(".mlpackage.zip" if path.is_dir() else ".mlmodel")
    file_response, file_bytes = download(admin_api, body["url"])
    assert file_response.status_code == 200
    assert file_bytes == data
    assert hashlib.sha256(file_bytes).hexdigest() == body["sha256"]


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("erkandiken__mnist-scikit-svm-to-coreml__digit_recognizer.mlmodel", "git_lfs_pointer"),
        ("improve-ai__swift-ranker__happy_sunday.mlmodel.gz", "compressed"),
    ],
)
def test_upload__bad_corpus_file__refused_with_reason(ds_api, flow, corpus_dir, name, code):
    response = upload(ds_api, flow["id"], (corpus_dir / "bad" / name).read_bytes(), name=name)

    assert response.status_code == 400
    assert response.json()["error"] == code
    assert len(response.json()["detail"]) > 20
    assert ModelVersion.objects.count() == 0


def test_upload__random_bytes__refused(ds_api, flow):
    response = upload(ds_api, flow["id"], b"this is not a model at all" * 10)

    assert response.status_code == 400
    assert response.json()["error"] in {"not_coreml", "truncated"}


def test_upload__truncated_model__refused(ds_api, flow, trained_models):
    data = trained_models["baseline"].read_bytes()

    response = upload(ds_api, flow["id"], data[: len(data) // 2])

    assert response.status_code == 400
    assert response.json()["error"] in {"not_coreml", "truncated"}


def test_upload__empty_file__refused(ds_api, flow):
    response = upload(ds_api, flow["id"], b"")

    assert response.status_code == 400
    assert response.json()["error"] == "empty"


def test_upload__zip_slip__refused(ds_api, flow):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("Manifest.json", "{}")
        archive.writestr("../../evil.sh", "echo owned")

    response = upload(ds_api, flow["id"], buffer.getvalue(), name="evil.mlpackage.zip")

    assert response.status_code == 400
    assert "evil.sh" in response.json()["detail"]


def test_upload__interface_mismatch__refused_naming_the_input(ds_api, flow, trained_models):
    upload(ds_api, flow["id"], trained_models["baseline"].read_bytes())

    response = upload(ds_api, flow["id"], trained_models["three_signals"].read_bytes())

    assert response.status_code == 400
    assert response.json()["error"] == "interface_mismatch"
    assert "input" in response.json()["detail"]


def test_upload__regressor_on_flow_with_positive_label__refused(ds_api, flow, corpus_dir):
    data = (corpus_dir / "simonitalia__TradeMyTesla__Cars.mlmodel").read_bytes()

    response = upload(ds_api, flow["id"], data)

    assert response.status_code == 400
    assert response.json()["error"] == "interface_mismatch"
    assert "Purchased" in response.json()["detail"]


def test_upload__min_sdk_below_signal_catalog__refused(admin_api, app_id, trained_models):
    flow = create_flow(admin_api, app_id, "checkout", 2, "Purchased", signals={"input": "1.4.0"})

    response = upload(
        admin_api, flow["id"], trained_models["baseline"].read_bytes(), min_sdk_version="1.2.0"
    )

    assert response.status_code == 400
    assert response.json()["error"] == "sdk_version_too_low"
    assert "1.4.0" in response.json()["detail"]


def test_upload__no_min_sdk__derived_from_signal_catalog(admin_api, app_id, trained_models):
    flow = create_flow(admin_api, app_id, "checkout", 2, "Purchased", signals={"input": "1.4.0"})

    response = upload(admin_api, flow["id"], trained_models["baseline"].read_bytes())

    assert response.status_code == 201
    assert response.json()["min_sdk_version"] == "1.4.0"


def test_upload__bad_sdk_version__refused(ds_api, flow, trained_models):
    response = upload(
        ds_api, flow["id"], trained_models["baseline"].read_bytes(), min_sdk_version="1.4"
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_sdk_version"


def test_upload__larger_than_limit__413(ds_api, flow, trained_models, settings):
    settings.MODEL_MAX_UPLOAD_BYTES = 1000

    response = upload(ds_api, flow["id"], trained_models["baseline"].read_bytes())

    assert response.status_code == 413
    assert response.json()["error"] == "file_too_large"


def test_upload__zip_bomb__413_too_large_nothing_stored(ds_api, flow, corpus_dir, settings):
    settings.MODEL_MAX_UNPACKED_BYTES = 1_000_000
    package = corpus_dir / "bkdevart__ML-Playground__DiabetesTest.mlpackage"
    buffer = io.BytesIO(zip_package(package))
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{package.name}/Data/padding.bin", b"\0" * 5_000_000)

    response = upload(ds_api, flow["id"], buffer.getvalue(), name="model.mlpackage.zip")

    assert len(buffer.getvalue()) < settings.MODEL_MAX_UNPACKED_BYTES
    assert response.status_code == 413
    body = response.json()
    assert body["error"] == "too_large"
    assert "the limit is 1,000,000 bytes" in body["detail"]
    assert body["fields"] == {"file": [body["detail"]]}
    assert not ModelVersion.objects.filter(flow_id=flow["id"]).exists()


def test_upload__unknown_flow__404(ds_api, trained_models):
    response = upload(
        ds_api, "0b6f1c2e-7a55-4c1e-9a77-1f0d3a1b9c44", trained_models["baseline"].read_bytes()
    )

    assert response.status_code == 404
    assert response.json()["error"] == "flow_not_found"


def test_upload__flow_id_not_a_uuid__404(ds_api, trained_models):
    response = upload(ds_api, "8362", trained_models["baseline"].read_bytes())

    assert response.status_code == 404


def test_upload__no_file__400_names_the_field(ds_api, flow):
    response = ds_api.post(f"/api/v1/flows/{flow['id']}/models", {}, format="multipart")

    assert response.status_code == 400
    assert "file" in response.json()["fields"]


@pytest.mark.parametrize(
    ("role", "status"),
    [
        (None, 401),
        ("viewer", 403),
        ("product_manager", 403),
        ("data_scientist", 201),
        ("admin", 201),
    ],
)
def test_upload__by_role__allowed_only_for_editors(
    make_api_client, flow, trained_models, role, status
):
    response = upload(make_api_client(role), flow["id"], trained_models["baseline"].read_bytes())

    assert response.status_code == status
    if status >= 400:
        assert set(response.json()) >= {"error", "detail"}


def test_upload__wrong_token__401(make_api_client, flow, trained_models):
    client = make_api_client(None)
    client.credentials(HTTP_AUTHORIZATION="Bearer cohort_pat_not-a-real-token")

    response = upload(client, flow["id"], trained_models["baseline"].read_bytes())

    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"
    assert response["WWW-Authenticate"] == "Bearer"


def test_upload__revoked_token__401(make_api_client, flow, trained_models):
    from controlplane.services import api_token_revoke

    client = make_api_client("admin")
    api_token_revoke(token=client.token)

    response = upload(client, flow["id"], trained_models["baseline"].read_bytes())

    assert response.status_code == 401


def test_app_create__duplicate_name__409(admin_api, app_id):
    response = admin_api.post("/api/v1/apps", {"name": "Shop"}, format="json")

    assert response.status_code == 409
    assert response.json()["error"] == "already_exists"


def test_app_create__bad_bundle_identifier__400(admin_api):
    response = admin_api.post(
        "/api/v1/apps", {"name": "X", "bundle_identifiers": ["not a bundle"]}, format="json"
    )

    assert response.status_code == 400
    assert "bundle_identifiers" in response.json()["fields"]


def test_app_create__data_scientist__403(ds_api):
    response = ds_api.post("/api/v1/apps", {"name": "X"}, format="json")

    assert response.status_code == 403
    assert response.json()["error"] == "permission_denied"


def test_app_create__malformed_json__400(admin_api):
    response = admin_api.post("/api/v1/apps", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"] == "parse_error"


def test_sdk_key_create__key_shown_once_and_stored_hashed(admin_api, app_id):
    response = admin_api.post(f"/api/v1/apps/{app_id}/sdk-keys", {"name": "ios"}, format="json")

    assert response.status_code == 201
    key = response.json()["key"]
    assert key.startswith("cohort_sdk_")
    stored = SdkKey.objects.get()
    assert stored.digest == hashlib.sha256(key.encode()).hexdigest()
    assert key not in json.dumps(list(SdkKey.objects.values()), default=str)


def test_sdk_key_create__unknown_app__404(admin_api):
    response = admin_api.post(
        "/api/v1/apps/0b6f1c2e-7a55-4c1e-9a77-1f0d3a1b9c44/sdk-keys", {}, format="json"
    )

    assert response.status_code == 404


def test_flow_create__duplicate_name__409(admin_api, app_id, flow):
    response = admin_api.post(
        f"/api/v1/apps/{app_id}/flows", {"name": "onboarding_upsell", "flow_id": 9}, format="json"
    )

    assert response.status_code == 409


def test_flow_create__invalid_name__400(admin_api, app_id):
    response = admin_api.post(
        f"/api/v1/apps/{app_id}/flows", {"name": "Bad Name!", "flow_id": 9}, format="json"
    )

    assert response.status_code == 400
    assert "name" in response.json()["fields"]


def test_flow_create__bad_interface__400(admin_api, app_id):
    response = admin_api.post(
        f"/api/v1/apps/{app_id}/flows",
        {"name": "x", "flow_id": 9, "interface": {"inputs": [{"name": "a", "type": "blob"}]}},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_interface"


def test_baseline_set__product_manager__becomes_baseline(ds_api, pm_api, flow, trained_models):
    model = upload(ds_api, flow["id"], trained_models["baseline"].read_bytes()).json()

    response = pm_api.post(
        f"/api/v1/flows/{flow['id']}/baseline", {"model_id": model["model_id"]}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["baseline_model_id"] == model["model_id"]


def test_baseline_set__data_scientist__403(ds_api, flow, trained_models):
    model = upload(ds_api, flow["id"], trained_models["baseline"].read_bytes()).json()

    response = ds_api.post(
        f"/api/v1/flows/{flow['id']}/baseline", {"model_id": model["model_id"]}, format="json"
    )

    assert response.status_code == 403


def test_baseline_set__model_of_another_apps_flow__404(admin_api, flow, trained_models):
    other_app = admin_api.post("/api/v1/apps", {"name": "Other"}, format="json").json()["app_id"]
    other_flow = create_flow(admin_api, other_app, "other_flow", 1, "Purchased")
    foreign = upload(admin_api, other_flow["id"], trained_models["baseline"].read_bytes()).json()

    response = admin_api.post(
        f"/api/v1/flows/{flow['id']}/baseline", {"model_id": foreign["model_id"]}, format="json"
    )

    assert response.status_code == 404
    assert response.json()["error"] == "model_not_found"


def test_bundle_manifest__lists_baselines_with_checksums(admin_api, app_id, flow, trained_models):
    model = upload(admin_api, flow["id"], trained_models["baseline"].read_bytes()).json()
    admin_api.post(
        f"/api/v1/flows/{flow['id']}/baseline", {"model_id": model["model_id"]}, format="json"
    )
    create_flow(admin_api, app_id, "no_model_yet", 7)

    response = admin_api.get(f"/api/v1/apps/{app_id}/bundle-manifest")

    assert response.status_code == 200
    body = response.json()
    assert body["app_id"] == app_id
    assert body["bundle_identifiers"] == ["com.example.shop"]
    assert body["customModels"] == [
        {
            "flowId": 8362,
            "flowName": "onboarding_upsell",
            "modelVersion": model["model_id"],
            "sha256": model["sha256"],
            "size": model["size"],
            "format": "mlmodel",
            "fileName": f"{model['model_id']}.mlmodel",
            "url": model["url"],
        }
    ]


def test_models_list__viewer__sees_versions_newest_first(ds_api, viewer_api, flow, trained_models):
    first = upload(ds_api, flow["id"], trained_models["baseline"].read_bytes()).json()
    second = upload(ds_api, flow["id"], trained_models["challenger"].read_bytes()).json()

    response = viewer_api.get(f"/api/v1/flows/{flow['id']}/models")

    assert response.status_code == 200
    assert [m["model_id"] for m in response.json()] == [second["model_id"], first["model_id"]]


def test_model_file__unknown__404(client):
    response = client.get(f"/models/{'0' * 64}/0b6f1c2e-7a55-4c1e-9a77-1f0d3a1b9c44.mlmodel")

    assert response.status_code == 404


def test_model_file__traversal_attempt__404(client):
    response = client.get("/models/..%2F..%2Fsettings.py/x.mlmodel")

    assert response.status_code == 404


def test_model_file__if_none_match__304(ds_api, flow, trained_models, client):
    body = upload(ds_api, flow["id"], trained_models["baseline"].read_bytes()).json()

    response = client.get(body["url"], HTTP_IF_NONE_MATCH=f'"{body["sha256"]}"')

    assert response.status_code == 304


def test_api_schema__served_with_local_docs(client):
    schema = client.get("/api/schema/")
    docs = client.get("/api/docs/")

    assert schema.status_code == 200
    assert b"/api/v1/flows/{flow_id}/models" in schema.content
    assert docs.status_code == 200
    assert b"drf_spectacular_sidecar" in docs.content
    assert b"cdn" not in docs.content.lower()


def test_unknown_api_path__json_404(client):
    response = client.get("/api/v1/nothing-here")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
