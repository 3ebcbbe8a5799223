"""Real processes for end-to-end tests: a gunicorn server and a Celery worker on the test database."""

import os

import pytest
from django.conf import settings
from django.db import connection

from .processes import process_stop, server_start, worker_start


@pytest.fixture
def process_env(transactional_db, media_root):
    """The environment of a production-like process that shares this test's database."""
    database = connection.settings_dict
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "DATABASE_URL": (
            f"postgres://{database['USER']}@{database['HOST'] or '127.0.0.1'}:"
            f"{database['PORT'] or 5432}/{database['NAME']}"
        ),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "SECRET_KEY": "e2e-tests-only-" + "x" * 40,
        "DEBUG": "false",
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "MEDIA_ROOT": str(media_root),
        "ROLLOUT_CONFIG_CHECK_SECONDS": "1",
        "DB_CONN_MAX_AGE": "0",
    }


@pytest.fixture
def server(process_env, tmp_path):
    """A gunicorn server (2 workers) on a free port; yields its base URL."""
    process, url = server_start(process_env, tmp_path / "gunicorn.log")
    yield url
    process_stop(process)
    connection.close()


@pytest.fixture
def celery_worker(process_env, tmp_path):
    """A real Celery worker process on the Redis broker; tasks sent here run there."""
    from controlplane.celery import app

    process = worker_start(process_env, tmp_path / "worker.log")
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    yield process
    app.conf.task_always_eager = eager
    process_stop(process)


@pytest.fixture
def beat_worker(process_env, tmp_path):
    """The worker with the beat scheduler embedded, as bin/run starts it."""
    log_path = tmp_path / "worker.log"
    process = worker_start(
        process_env, log_path, "--beat", f"--schedule={tmp_path / 'beat-schedule'}"
    )
    yield log_path
    process_stop(process)
