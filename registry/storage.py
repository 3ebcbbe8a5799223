"""Where model files live: content-addressed, immutable keys in the configured storage."""

import re

from django.conf import settings
from django.core.files.storage import default_storage

FILE_EXTENSIONS = {"mlmodel": "mlmodel", "mlpackage": "mlpackage.zip"}
STORAGE_KEY_PATTERN = re.compile(
    r"models/(?P<sha256>[0-9a-f]{64})/(?P<file_name>[0-9a-f-]{36}\.(?:mlmodel|mlpackage\.zip))"
)
IMMUTABLE = "public, max-age=31536000, immutable"


def model_storage_key(*, sha256: str, model_id, format: str) -> str:
    """Return the key of a model file: the sha256 in the path makes it content-addressed.

    The last path component is the model id, unique per version and time-ordered, because the
    simplest clients take it as the version's identity and file name.
    """
    return f"models/{sha256}/{model_id}.{FILE_EXTENSIONS[format]}"


def model_file_save(*, key: str, file) -> None:
    """Store the bytes under the key, unless they are there already (keys never change content)."""
    if not default_storage.exists(key):
        saved = default_storage.save(key, file)
        if saved != key:  # another upload raced us to the same key: keep one copy
            default_storage.delete(saved)


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
