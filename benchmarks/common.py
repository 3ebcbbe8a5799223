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


def app_with_rollout_seed(label: str, stages: list, planned_sample: int = 5000):
    """An app with an SDK key, the flow the SDK benchmarks poll, a baseline and a challenger
    trained from the demo's synthetic rows, and the challenger's rollout started at `stages`.

    Runs inside a set-up Django process; returns app, sdk_key (the row), plaintext (the key),
    flow, versions (by name) and rollout.
    """
    from io import BytesIO

    from registry import services as registry_services
    from registry import training
    from rollout import services as rollout_services

    slug = label.lower()
    app = registry_services.app_create(
        name=f"{label} app", bundle_identifiers=[f"com.example.{slug}"]
    )
    sdk_key, plaintext = registry_services.sdk_key_create(app=app, name=slug)
    flow = registry_services.flow_create(
        app=app,
        name="onboarding_upsell",
        flow_id=8362,
        positive_label=training.PURCHASED,
        signals={"input": "1.0.0"},
    )
    features = ["Battery Level", "Phone Charging?"]
    versions = {}
    for name, seed, bias in (("baseline", 0, 0.0), ("challenger", 1, 0.15)):
        rows = training.demo_rows(600, seed=seed, purchase_bias=bias)
        x = [[row["Battery Level"], 1.0 if row["Phone Charging?"] else 0.0] for row in rows]
        y = [row["Outcome"] for row in rows]
        result = training.train_outcome_classifier(
            features, x, y, seed=seed, n_estimators=10, short_description=f"{label} {name}"
        )
        versions[name], _ = registry_services.model_version_upload(
            flow=flow,
            file=BytesIO(result.model_bytes),
            filename=f"{name}.mlmodel",
            notes=f"{slug} {name}",
            metrics=result.report,
        )
    registry_services.flow_baseline_set(
        flow=flow, model_version=versions["baseline"], actor=slug, reason=slug
    )
    rollout = rollout_services.rollout_create(
        flow=flow,
        challengers=[{"model_id": str(versions["challenger"].pk), "stages": stages}],
        actor=slug,
        planned_sample=planned_sample,
    )
    rollout = rollout_services.rollout_start(rollout=rollout, actor=slug)
    return {
        "app": app,
        "sdk_key": sdk_key,
        "plaintext": plaintext,
        "flow": flow,
        "versions": versions,
        "rollout": rollout,
    }
