"""The production storage path: model files in an S3-compatible bucket, served by moto on loopback.

The storage is built by `controlplane.settings.s3_model_storage` from the same `S3_*` variables a
deployment sets, so these tests exercise the configuration production runs, against a real HTTP
S3 endpoint (moto in server mode), through the upload API and the upload service.
"""

import hashlib
import io
import json
import logging
import urllib.error
import urllib.request
import uuid

import boto3
import environ
import pytest
from moto.server import ThreadedMotoServer

from controlplane.errors import Conflict
from controlplane.settings import s3_model_storage
from registry.models import ModelVersion
from registry.storage import IMMUTABLE, model_file_save, model_storage_key

from .test_registry_api import create_flow, upload, zip_package

pytestmark = pytest.mark.django_db

CDN = "https://cdn.example.com"
# Real Core ML files from GitHub (the corpus), not the `trained_models` fixture: training them
# would take longer than every test of this module together.
MODEL = "gavi__Iris__iris.mlmodel"
PACKAGE = "bkdevart__ML-Playground__DiabetesTest.mlpackage"


def moto_server_start(port: int = 0) -> tuple[ThreadedMotoServer, str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


@pytest.fixture(scope="module")
def s3_endpoint():
    """One S3 server for the module; each test gets a bucket of its own."""
    access_log = logging.getLogger("werkzeug")  # moto's server logs every request
    level = access_log.level
    access_log.setLevel(logging.WARNING)
    server, endpoint = moto_server_start()
    yield endpoint
    server.stop()
    access_log.setLevel(level)


def bucket_storage_use(endpoint: str, settings, monkeypatch) -> "Bucket":
    """Create a bucket and make it the model storage, configured as production configures it."""
    bucket = Bucket(endpoint, f"cohort-models-{uuid.uuid4().hex[:12]}")
    bucket.client.create_bucket(Bucket=bucket.name)
    for name, value in {
        "S3_BUCKET": bucket.name,
        "S3_ENDPOINT_URL": endpoint,
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": "testing",
        "S3_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("S3_CUSTOM_DOMAIN", raising=False)
    # Changing STORAGES makes Django drop the storage instances, default_storage included.
    settings.STORAGES = {**settings.STORAGES, "default": s3_model_storage(environ.Env())}
    settings.S3_BUCKET = bucket.name
    return bucket


class Bucket:
    """The bucket as an outsider (the CDN, an operator) sees it, through boto3."""

    def __init__(self, endpoint: str, name: str):
        self.endpoint, self.name = endpoint, name
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def public_read_allow(self) -> None:
        """The bucket policy an operator sets when devices download from the bucket itself."""
        statement = {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{self.name}/*",
        }
        policy = {"Version": "2012-10-17", "Statement": [statement]}
        self.client.put_bucket_policy(Bucket=self.name, Policy=json.dumps(policy))

    def keys(self) -> list[str]:
        listing = self.client.list_objects_v2(Bucket=self.name)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def get(self, key: str) -> dict:
        return self.client.get_object(Bucket=self.name, Key=key)


@pytest.fixture
def bucket(s3_endpoint, settings, monkeypatch) -> Bucket:
    return bucket_storage_use(s3_endpoint, settings, monkeypatch)


@pytest.fixture
def app_id(admin_api):
    response = admin_api.post(
        "/api/v1/apps", {"name": "Shop", "bundle_identifiers": ["com.example.shop"]}, format="json"
    )
    assert response.status_code == 201, response.json()
    return response.json()["app_id"]


@pytest.fixture
def flow(admin_api, app_id):
    return create_flow(admin_api, app_id, "iris", 8362)


@pytest.fixture
def data(corpus_dir) -> bytes:
    return (corpus_dir / MODEL).read_bytes()


def stored_key(body: dict) -> str:
    ext = "mlpackage.zip" if body["format"] == "mlpackage" else "mlmodel"
    return f"models/{body['sha256']}/{body['model_id']}.{ext}"


def assert_stored_intact(bucket: Bucket, body: dict, data: bytes, content_type: str) -> str:
    key = stored_key(body)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert bucket.keys() == [key]
    assert ModelVersion.objects.get(pk=body["model_id"]).storage_key == key
    stored = bucket.get(key)
    assert hashlib.sha256(stored["Body"].read()).hexdigest() == body["sha256"]
    assert stored["ContentLength"] == len(data) == body["size"]
    assert stored["CacheControl"] == IMMUTABLE
    assert stored["ContentType"] == content_type
    return key


def test_upload__mlmodel__in_bucket_at_content_addressed_key_immutable(ds_api, flow, data, bucket):
    response = upload(ds_api, flow["id"], data, name=MODEL)

    assert response.status_code == 201, response.json()
    body = response.json()
    key = assert_stored_intact(bucket, body, data, "application/octet-stream")
    # No CDN: the bucket's own URL, unsigned, is what devices are told. Objects are private, so
    # devices can read it only once the operator makes the bucket publicly readable.
    assert body["url"] == f"{bucket.endpoint}/{bucket.name}/{key}"
    with pytest.raises(urllib.error.HTTPError) as private:
        urllib.request.urlopen(body["url"], timeout=5)
    assert private.value.code == 403
    bucket.public_read_allow()
    with urllib.request.urlopen(body["url"], timeout=5) as served:
        assert served.read() == data
        assert served.headers["Cache-Control"] == IMMUTABLE


def test_upload__mlpackage_zip__in_bucket_intact(admin_api, app_id, corpus_dir, bucket):
    data = zip_package(corpus_dir / PACKAGE)
    flow = create_flow(admin_api, app_id, "diabetes", 1)

    response = upload(admin_api, flow["id"], data, name=PACKAGE + ".zip")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["format"] == "mlpackage"
    key = assert_stored_intact(bucket, body, data, "application/zip")
    assert key.endswith(".mlpackage.zip")


def test_upload__same_bytes_retried__200_and_one_object(ds_api, flow, data, bucket):
    first = upload(ds_api, flow["id"], data)

    retried = upload(ds_api, flow["id"], data)

    assert first.status_code == 201, first.json()
    assert retried.status_code == 200, retried.json()
    assert retried.json()["model_id"] == first.json()["model_id"]
    assert bucket.keys() == [stored_key(first.json())]
    assert ModelVersion.objects.count() == 1


def test_announced_urls__cdn_set__api_manifest_and_poll_use_it(
    admin_api, app_id, flow, data, bucket, settings, poll
):
    settings.MODEL_FILES_BASE_URL = CDN
    model = upload(admin_api, flow["id"], data).json()
    key = stored_key(model)
    admin_api.post(
        f"/api/v1/flows/{flow['id']}/baseline", {"model_id": model["model_id"]}, format="json"
    )
    sdk_key = admin_api.post(
        f"/api/v1/apps/{app_id}/sdk-keys", {"name": "ios"}, format="json"
    ).json()["key"]

    detail = admin_api.get(f"/api/v1/models/{model['model_id']}").json()
    listed = admin_api.get(f"/api/v1/flows/{flow['id']}/models").json()
    manifest = admin_api.get(f"/api/v1/apps/{app_id}/bundle-manifest").json()
    polled = poll(sdk_key, "IDFV-1")

    assert bucket.keys() == [key]
    expected = f"{CDN}/{key}"  # the CDN's origin is the bucket: the same path
    assert model["url"] == detail["url"] == expected
    assert [m["url"] for m in listed] == [expected]
    assert [m["url"] for m in manifest["customModels"]] == [expected]
    assert polled.status_code == 200, polled.json()
    assert [(m["model_id"], m["url"]) for m in polled.json()["models"]] == [
        (model["model_id"], expected)
    ]


def test_model_file_save__key_holds_other_bytes__refused_and_left_intact(bucket, data):
    key = model_storage_key(
        sha256=hashlib.sha256(data).hexdigest(), model_id=uuid.uuid4(), format="mlmodel"
    )
    bucket.client.put_object(Bucket=bucket.name, Key=key, Body=b"someone else's bytes")

    with pytest.raises(Conflict) as refused:
        model_file_save(key=key, file=io.BytesIO(data))

    assert refused.value.code == "storage_conflict"
    assert bucket.get(key)["Body"].read() == b"someone else's bytes"
    assert bucket.keys() == [key]


def test_model_file_save__key_holds_same_bytes__accepted_unchanged(bucket, data):
    key = model_storage_key(
        sha256=hashlib.sha256(data).hexdigest(), model_id=uuid.uuid4(), format="mlmodel"
    )
    # Put without Cache-Control and with a marker: a rewrite by the storage would change both.
    bucket.client.put_object(Bucket=bucket.name, Key=key, Body=data, Metadata={"put-by": "test"})

    model_file_save(key=key, file=io.BytesIO(data))

    stored = bucket.get(key)
    assert stored["Metadata"] == {"put-by": "test"}
    assert "CacheControl" not in stored
    assert stored["Body"].read() == data
    assert bucket.keys() == [key]


def test_upload__bucket_unreachable__503_json_no_row_then_retry_succeeds(
    ds_api, flow, data, settings, monkeypatch
):
    server, endpoint = moto_server_start()
    bucket = bucket_storage_use(endpoint, settings, monkeypatch)
    server.stop()

    response = upload(ds_api, flow["id"], data)

    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "storage_unavailable"
    assert "nothing was saved" in response.json()["detail"]
    assert not ModelVersion.objects.exists()
    # The first model's interface, adopted in the same transaction, was rolled back with it.
    assert ds_api.get(f"/api/v1/flows/{flow['id']}").json()["interface"] is None

    server, _ = moto_server_start(port=int(endpoint.rsplit(":", 1)[1]))
    try:
        retried = upload(ds_api, flow["id"], data)
        assert retried.status_code == 201, retried.json()
        assert bucket.keys() == [stored_key(retried.json())]
    finally:
        server.stop()
