"""
Latency of `POST /api/v1/rollouts/<id>/analyze` under load, and with a dead worker's flush lease.

    .venv/bin/python benchmarks/analyze_request.py [--devices 20000] [--requests 40] [--threads 4]

It sets up a throw-away installation (PostgreSQL database `cohort_bench_analyze`, Redis
database 11), seeds it as `benchmarks/poll.py` does (an app, two trained models, a running 50 %
rollout) plus --devices exposed devices per arm with their outcomes, starts gunicorn as in
production (2 sync workers), and while --threads load threads poll as new devices and post
events (each new device pushes an exposure note to Redis; no worker drains it), one client
POSTs …/analyze --requests times in a row:

    1  with the exposure buffer growing and nobody flushing it
    2  with the flush lease held by a "killed worker" (the lock key set for 300 s, as the old
       300 s lock was left), which is what made the old request wait 30 s

It prints p50, p99 and max per phase and every status seen, then removes what it made.
"""

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import bench_env, database_recreate, in_throwaway_installation  # noqa: E402
from benchmarks.poll import free_port, run_checked, server_start, server_stop  # noqa: E402

DATABASE = "cohort_bench_analyze"
REDIS_URL = "redis://127.0.0.1:6379/11"
BROKER_URL = "redis://127.0.0.1:6379/11"
LOCK_KEY = "cohort:exposure-buffer:lock"  # rollout.exposures.FLUSH_LOCK_KEY


def seed_main(devices: int) -> None:
    """In a subprocess with the benchmark's environment: seed, then print the token."""
    from benchmarks import poll

    poll.seed_main()  # prints SEEDED {...}
    from datetime import timedelta

    from django.contrib.auth import get_user_model

    from controlplane.roles import role_groups_sync
    from controlplane.services import api_token_create
    from experiments.events.attribution import ledger_catch_up
    from experiments.models import DeviceOutcome
    from rollout.models import Exposure, Rollout

    role_groups_sync()
    user = get_user_model().objects.create_superuser("bench", password="bench-only")
    _, token = api_token_create(user=user, name="benchmark")
    rollout = Rollout.objects.get()
    at = rollout.stage_started_at + timedelta(seconds=1)
    for arm, bucket, rate in (("baseline", 9999, 10), ("challenger-1", 0, 10)):
        Exposure.objects.bulk_create(
            Exposure(rollout=rollout, device_id=f"{arm}-{i}", arm=arm, bucket=bucket,
                     sdk_version="1.4.0", first_exposed_at=at, arm_since=at)
            for i in range(devices)
        )  # fmt: skip
        DeviceOutcome.objects.bulk_create(
            DeviceOutcome(rollout=rollout, device_id=f"{arm}-{i}", arm=arm, arm_since=at,
                          bucket=bucket, events=1, conversions=int(i % 100 < rate),
                          outcome_counts={"Purchased" if i % 100 < rate else "Dismissed": 1})
            for i in range(devices)
        )  # fmt: skip
    ledger_catch_up(wait=0)
    print("TOKEN " + json.dumps({"token": token, "rollout": str(rollout.pk)}))


def request(conn, method: str, path: str, body=None, headers=None) -> int:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    response.read()
    return response.status


def load(port: int, key: str, flow: str, stop: threading.Event, counts: dict, name: int):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    auth = {"Authorization": f"Bearer {key}"}
    i = 0
    while not stop.is_set():
        device = f"load-{name}-{i}"
        request(
            conn, "GET", f"/api/v1/sdk/assignments?device_id={device}&sdk_version=1.4.0", None, auth
        )
        event = {"id": str(uuid.uuid4()), "flow": flow, "outcome": "Dismissed",
                 "ts": datetime.now(UTC).isoformat()}  # fmt: skip
        body = json.dumps({"device_id": device, "sdk_version": "1.4.0", "events": [event]})
        request(
            conn, "POST", "/api/v1/sdk/events", body, {**auth, "Content-Type": "application/json"}
        )
        counts[name] = counts.get(name, 0) + 2
        i += 1


def analyze_round(port: int, token: str, rollout: str, count: int) -> tuple[list[float], dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    took, statuses = [], {}
    for _ in range(count):
        started = time.monotonic()
        status = request(conn, "POST", f"/api/v1/rollouts/{rollout}/analyze", b"",
                         {"Authorization": f"Bearer {token}"})  # fmt: skip
        took.append(time.monotonic() - started)
        statuses[status] = statuses.get(status, 0) + 1
    return took, statuses


def summary(label: str, took: list[float], statuses: dict) -> str:
    ordered = sorted(took)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"{label:<48} n={len(took):>3}  p50 {statistics.median(took) * 1000:7.1f} ms  "
        f"p99 {p99 * 1000:7.1f} ms  max {max(took) * 1000:7.1f} ms  statuses {statuses}"
    )


def benchmark(args, tmp: Path) -> None:
    import redis

    env = bench_env(tmp, database=DATABASE, redis_url=REDIS_URL, broker_url=BROKER_URL)
    database_recreate(DATABASE)
    run_checked([sys.executable, "manage.py", "migrate", "--no-input"], env, "migrate")
    out = run_checked(
        [sys.executable, __file__, "--seed", "--devices", str(args.devices)], env, "seeding"
    )
    seeded = json.loads(next(x for x in out.splitlines() if x.startswith("SEEDED "))[7:])
    token = json.loads(next(x for x in out.splitlines() if x.startswith("TOKEN "))[6:])
    port = free_port()
    server = server_start(env, port, tmp / "gunicorn.log")
    stop, counts = threading.Event(), {}
    threads = [
        threading.Thread(
            target=load, args=(port, seeded["sdk_key"], seeded["flow"]["name"], stop, counts, n),
            daemon=True,
        )
        for n in range(args.threads)
    ]  # fmt: skip
    try:
        for thread in threads:
            thread.start()
        time.sleep(2)
        print(f"\n==> {args.devices} devices per arm; {args.threads} load threads polling and "
              "posting events as new devices; gunicorn 2 sync workers")  # fmt: skip
        started = time.monotonic()
        took, statuses = analyze_round(port, token["token"], token["rollout"], args.requests)
        print(summary("1 under load, buffer growing, no flusher", took, statuses))
        redis.Redis.from_url(REDIS_URL).set(LOCK_KEY, "killed-worker", px=300_000)
        took, statuses = analyze_round(port, token["token"], token["rollout"], args.requests)
        print(summary("2 under load, flush lease held by a dead worker", took, statuses))
        elapsed = time.monotonic() - started
        print(f"load: {sum(counts.values()) / elapsed:.0f} SDK requests/s beside the analyses")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        server_stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed:
        import django

        django.setup()
        seed_main(args.devices)
        return
    in_throwaway_installation("analyze", DATABASE, REDIS_URL, lambda tmp: benchmark(args, tmp))


if __name__ == "__main__":
    main()
