"""Where model files live: content-addressed, immutable keys in the configured storage."""

import hashlib
import logging
import re

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.files.storage import default_storage

from controlplane.errors import Conflict, Unavailable

logger = logging.getLogger(__name__)

FILE_EXTENSIONS = {"mlmodel": "mlmodel", "mlpackage": "mlpackage.zip"}
STORAGE_KEY_PATTERN = re.compile(
    r"models/(?P<sha256>[0-9a-f]{64})/(?P<file_name>[0-9a-f-]{36}\.(?:mlmodel|mlpackage\.zip))"
)
IMMUTABLE = "public, max-age=31536000, immutable"
# What the local folder (OSError) and an S3 bucket (botocore) raise when they cannot take a file:
# the disk, the network, the endpoint, the credentials or the bucket itself.
STORAGE_ERRORS = (OSError, BotoCoreError, ClientError)


def model_storage_key(*, sha256: str, model_id, format: str) -> str:
    """Return the key of a model file: the sha256 in the path makes it content-addressed.

    The last path component is the model id, unique per version and time-ordered, because the
    simplest clients take it as the version's identity and file name.
    """
    return f"models/{sha256}/{model_id}.{FILE_EXTENSIONS[format]}"


def model_file_save(*, key: str, file) -> None:
    """Store the bytes under the key. An existing key is never overwritten.

    A key names the sha256 of its bytes, so one that exists already is accepted only when it
    holds those bytes; otherwise `Conflict`, and the caller must not reference the key. A storage
    that cannot be reached or refuses the file raises `Unavailable`: nothing was stored.
    """
    try:
        if not default_storage.exists(key):
            saved = default_storage.save(key, file)
            if saved == key:
                return
            default_storage.delete(saved)  # another upload got to the key first: keep theirs
        _stored_bytes_check(key)
    except STORAGE_ERRORS as error:
        logger.exception("Model storage failed to store %s", key)
        raise Unavailable(
            "The model storage could not be reached or refused the file, so nothing was saved. "
            "Try the upload again later; the server's log has the storage's error.",
            code="storage_unavailable",
        ) from error


def _stored_bytes_check(key: str) -> None:
    """Refuse a key whose stored bytes are not the sha256 it names (found, never overwritten)."""
    digest = hashlib.sha256()
    with default_storage.open(key, "rb") as stored:
        for chunk in iter(lambda: stored.read(1024 * 1024), b""):
            digest.update(chunk)
    expected = STORAGE_KEY_PATTERN.fullmatch(key)["sha256"]
    if digest.hexdigest() != expected:
        logger.error("Model storage holds sha256 %s at %s", digest.hexdigest(), key)
        raise Conflict(
            f"The model storage already holds other bytes (sha256 {digest.hexdigest()}) at "
            f"{key}. Cohort never overwrites a model file, so this upload was not stored; the "
            "storage needs an operator's look.",
            code="storage_conflict",
        )


def model_file_open(key: str):
    return default_storage.open(key, "rb")


def model_file_exists(key: str) -> bool:
    return default_storage.exists(key)


def model_file_url(key: str, *, base_url: str = "") -> str:
    """Return the absolute URL devices download a model from.

    `MODEL_FILES_BASE_URL` (a CDN) wins; object storage gives its own URL; otherwise this server
    serves the file at `/<key>` below `base_url` (the scheme and host of the request).
    """
    if settings.MODEL_FILES_BASE_URL:
        return f"{settings.MODEL_FILES_BASE_URL}/{key}"
    if settings.S3_BUCKET:
        return default_storage.url(key)
    return f"{base_url.rstrip('/')}/{key}"
