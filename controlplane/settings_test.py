"""Settings for the test suite: the real services of this machine, unless the environment names others."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/cohort")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
# The broker has a database of its own: tests flush database 15 between them.
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("SECRET_KEY", "tests-only-not-secret")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "true")

from .settings import *  # noqa: F403
from .settings import MIDDLEWARE, STORAGES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Static files are served by runserver's finders in tests; WhiteNoise wants a collected folder.
MIDDLEWARE = [m for m in MIDDLEWARE if not m.startswith("whitenoise.")]
