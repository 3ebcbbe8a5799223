"""Starting and stopping the real processes of the end-to-end tests."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from controlplane.schedules import periodic_tasks_ensure
from experiments.models import Analysis

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def server_start(process_env, log_path: Path, workers: int = 2) -> tuple[subprocess.Popen, str]:
    """Start a gunicorn server on a free port and wait until it answers; return it and its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:controlplane.gunicorn", "controlplane.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--timeout", "60"],
        cwd=ROOT, env=process_env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited: {log_path.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except requests.RequestException:
            time.sleep(0.2)
    process_stop(process)
    pytest.fail("gunicorn did not answer within 60 s")


def worker_start(
    process_env, log_path: Path, *extra: str, app: str = "controlplane"
) -> subprocess.Popen:
    """Start a real Celery worker on the Redis broker and wait until it is ready."""
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", app, "worker", "--pool=solo",
         "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
         *extra],
        cwd=ROOT, env=process_env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while b"ready." not in log_path.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            process_stop(process)
            pytest.fail(f"the Celery worker did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    return process


def fast_schedule() -> None:
    """Let beat run the judge and its feeders every few seconds instead of minutes."""
    periodic_tasks_ensure()
    every = {
        "Judge running rollouts": 4,
        "Attribute outcome events": 2,
        "Flush buffered exposures": 2,
    }
    for name, seconds in every.items():
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=seconds, period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.filter(name=name).update(interval=interval, expire_seconds=seconds * 3)


def wait_until(condition, seconds: float, what: str, log_path=None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    latest = Analysis.objects.first()
    summary = (
        f"latest analysis: {latest.decision} {latest.body.get('reasons')} "
        f"{[(a['arm'], a['exposed'], a['metrics']['conversion']) for a in latest.body['arms']]}"
        if latest
        else "no analysis"
    )
    tail = log_path.read_text()[-2000:] if log_path else ""
    pytest.fail(f"{what} did not happen within {seconds} s\n{summary}\n{tail}")
