"""What every benchmark needs: a throw-away PostgreSQL database, a Redis database, the env."""

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = "postgres://postgres@127.0.0.1:5432"


def postgres_admin():
    import psycopg

    return psycopg.connect(f"{POSTGRES}/postgres", autocommit=True)


def database_recreate(name: str) -> None:
    with postgres_admin() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")


def database_drop(name: str) -> None:
    with postgres_admin() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def redis_flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def bench_env(
    tmp: Path,
    *,
    database: str,
    redis_url: str,
    broker_url: str,
    settings_module: str = "controlplane.settings",
    **extra: str,
) -> dict:
    """The environment of a production-like Cohort process on the benchmark's own stores."""
    python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "PYTHONPATH": python_path,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "DATABASE_URL": f"{POSTGRES}/{database}",
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": broker_url,
        "SECRET_KEY": "benchmark-only-" + secrets.token_urlsafe(40),
        "DEBUG": "false",
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "COHORT_VAR_DIR": str(tmp / "var"),
        "MEDIA_ROOT": str(tmp / "media"),
        **extra,
    }


def in_throwaway_installation(
    name: str, database: str, redis_url: str, run: Callable[[Path], None]
):
    """Run `run(tmp)` with a temporary folder; afterwards drop the database, flush the Redis
    database and remove the folder, whatever happened."""
    tmp = Path(tempfile.mkdtemp(prefix=f"cohort-bench-{name}-"))
    try:
        run(tmp)
    finally:
        print("==> cleaning up: database dropped, Redis database flushed, temporary files removed")
        try:
            database_drop(database)
            redis_flush(redis_url)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def server_log_problems(log_path: Path) -> None:
    """Say whether the server logged tracebacks or errors."""
    problems = [
        line for line in log_path.read_text().splitlines() if "Traceback" in line or "ERROR" in line
    ]
    if problems:
        print(f"gunicorn logged {len(problems)} problems, e.g. {problems[:3]}")
