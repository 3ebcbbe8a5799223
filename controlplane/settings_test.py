"""Settings for the test suite: the real services of this machine, unless the environment names others."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/cohort")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
# The broker has a database of its own: tests flush database 15 between them.
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("SECRET_KEY", "tests-only-not-secret")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "true")
# Alert tests deliver to a receiver on 127.0.0.1 (and e2e processes inherit this); the tests of
# the webhook address rule turn it off.
os.environ.setdefault("ALERT_WEBHOOK_ALLOW_PRIVATE", "true")
# Rate limits far above what any test sends: the SDK's buckets live in the process, beyond one
# test, and tests reuse device ids. tests/integration/test_rate_limits.py lowers them.
os.environ.setdefault("SDK_RATE_LIMIT_PER_MINUTE", "100000000")
os.environ.setdefault("SDK_RATE_LIMIT_PER_DEVICE_PER_MINUTE", "1000000")
os.environ.setdefault("API_RATE_LIMIT_PER_MINUTE", "1000000")
os.environ.setdefault("API_ANON_RATE_LIMIT_PER_MINUTE", "1000000")

from .settings import *  # noqa: F403
from .settings import MIDDLEWARE, STORAGES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Static files are served by runserver's finders in tests; WhiteNoise wants a collected folder.
MIDDLEWARE = [m for m in MIDDLEWARE if not m.startswith("whitenoise.")]
