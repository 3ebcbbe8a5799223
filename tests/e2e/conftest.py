"""Real processes for end-to-end tests: a gunicorn server and a Celery worker on the test database."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@pytest.fixture
def server(process_env, tmp_path):
    """A gunicorn server (2 workers) on a free port; yields its base URL."""
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "controlplane.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", "2", "--timeout", "60"],
        cwd=ROOT, env=process_env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited: {(tmp_path / 'gunicorn.log').read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.2)
    else:
        _stop(process)
        pytest.fail("gunicorn did not answer within 60 s")
    yield url
    _stop(process)
    connection.close()


@pytest.fixture
def celery_worker(process_env, tmp_path):
    """A real Celery worker process on the Redis broker; tasks sent here run there."""
    from controlplane.celery import app

    log_path = tmp_path / "worker.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "controlplane", "worker", "--pool=solo",
         "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=process_env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    deadline = time.monotonic() + 90
    while b"ready." not in log_path.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            pytest.fail(f"the Celery worker did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    yield process
    app.conf.task_always_eager = eager
    _stop(process)
