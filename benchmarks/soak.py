"""
Soak test: mixed traffic for minutes against every real process, with the judge running.

    .venv/bin/python benchmarks/soak.py [--duration 600] [--devices 5000] [--threads 6]

It sets up a throw-away installation (PostgreSQL database `cohort_soak`, Redis database 12 for
the app and 13 for the broker), seeds an app with two trained Core ML models and a running
rollout of the challenger (stages 20 % then 50 %), an API token, and the periodic jobs on short
periods (the judge every --judge-seconds; see `tests/e2e/processes.py::fast_schedule`). It
starts gunicorn as in production (DEBUG off, 2 sync workers) and one Celery worker with beat
(`--concurrency=1`, as `bin/run`), then a load generator in a separate process drives, for
--duration seconds:

    devices   --threads threads, each owning a slice of --devices devices. A device polls first
              (200, its exposure noted), then polls with If-None-Match (mostly 304) or posts a
              batch of 1-20 new events. On purpose, some batches are sent again as they were
              (a retry: every event a duplicate), some mix old ids with new ones, and some
              repeat an id inside the batch. Each answer's `accepted` must be the number of
              new ids
    operator  one thread on the management API: every second a read (list rollouts, read the
              rollout, read its latest analysis), every 15 s `POST …/analyze`, and half-way
              `POST …/advance` (20 % -> 50 %), which moves devices and changes their ETags

Then it stops the worker, runs a final attribution pass (flush the exposure buffer, attribute
until nothing is left) and compares PostgreSQL with what the answers acknowledged: the sum of
`accepted` against the rows stored for those ids, lost ids, rows no answer acknowledged,
per-device counts, every event attributed, and each device outcome row against its events.

It prints per-endpoint throughput and p50/p99/max latency, the statuses and errors, latency
over time, the judge runs (analyses stored), the CPU each process used (the load generator
against the server), and the checks. It exits non-zero if any request got a 5xx, a connection
error or an unexpected 4xx, if an answer's `accepted` was wrong, or if a check failed, so it
can serve as a check. It removes everything it made at the end.
"""

import argparse
import contextlib
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    POSTGRES,
    app_with_rollout_seed,
    bench_env,
    database_recreate,
    in_throwaway_installation,
    postgres_admin,
    redis_flush,
)
from benchmarks.ingest import children_of, cpu_seconds  # noqa: E402
from benchmarks.poll import (  # noqa: E402
    FLOW,
    SDK_VERSION,
    children_cpu_seconds,
    free_port,
    load_average,
    machine,
    run_checked,
    server_start,
    server_stop,
)

DATABASE = "cohort_soak"
REDIS_URL = "redis://127.0.0.1:6379/12"
BROKER_URL = "redis://127.0.0.1:6379/13"
STAGES = [20, 50]
# What a device does once it has polled: a conditional poll or a batch of events.
POLL_SHARE = 0.75
MAX_EVENTS_PER_BATCH = 20
RESEND_SHARE = 0.04  # the last batch sent again unchanged: every event a duplicate
MIXED_SHARE = 0.04  # up to 3 already acknowledged ids among new ones
INTERNAL_DUPLICATE_SHARE = 0.02  # one id twice in the same batch
CONVERSION = 0.10  # the same in both arms (an A/A test), so the judge has no reason to act
OPERATOR_READ_SECONDS = 1.0
OPERATOR_ANALYZE_SECONDS = 15.0
CLIENT_TIMEOUT_SECONDS = 60
RETRIES = 5
# Statuses each endpoint may answer; 4xx outside these is "unexpected".
EXPECTED = {
    "poll first": {200},
    "poll If-None-Match": {200, 304},  # 200 when the assignment changed (the advance)
    "events": {200},
    "GET rollouts (list)": {200},
    "GET rollout": {200},
    "GET analysis": {200, 404},  # 404 no_analysis before the judge's first run
    "POST analyze": {200},
    "POST advance": {200, 409},  # 409 concurrent_change, retried
}


# --------------------------------------------------------------------------- seeding


def seed_main(devices: int, judge_seconds: int) -> None:
    """In a subprocess with the benchmark's environment: seed, shorten the periodic jobs'
    periods, print what the load generator needs as JSON."""
    import django

    django.setup()

    from django.contrib.auth import get_user_model
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from controlplane.roles import role_groups_sync
    from controlplane.schedules import periodic_tasks_ensure
    from controlplane.services import api_token_create

    seeded = app_with_rollout_seed("Soak", STAGES, planned_sample=max(devices, 100))
    app, sdk_key, flow, rollout = (
        seeded["app"], seeded["plaintext"], seeded["flow"], seeded["rollout"]
    )  # fmt: skip

    role_groups_sync()
    user = get_user_model().objects.create_superuser("soak", password="soak-only")
    _, token = api_token_create(user=user, name="soak")

    # As tests/e2e/processes.py::fast_schedule, with the judge's period a parameter.
    periodic_tasks_ensure()
    every = {
        "Judge running rollouts": judge_seconds,
        "Attribute outcome events": 5,
        "Flush buffered exposures": 2,
    }
    for name, seconds in every.items():
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=seconds, period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.filter(name=name).update(interval=interval, expire_seconds=seconds * 3)

    print(
        "SEEDED "
        + json.dumps(
            {
                "app": str(app.pk),
                "sdk_key": sdk_key,
                "token": token,
                "flow": {"name": flow.name, "id": str(flow.pk)},
                "rollout": str(rollout.pk),
                "stages": STAGES,
                "schedule_s": every,
            }
        )
    )


# --------------------------------------------------------------------------- processes


def worker_start(env: dict, tmp: Path):
    """One Celery worker with beat embedded, as bin/run starts it, on the Redis broker."""
    log_path = tmp / "worker.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "controlplane", "worker", "--beat",
         "--concurrency=1", "--loglevel=INFO", f"--schedule={tmp / 'beat-schedule'}",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    log.close()
    deadline = time.monotonic() + 90
    while b"ready." not in log_path.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            server_stop(process)
            sys.exit(f"the Celery worker did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    return process, log_path


def worker_stop(process) -> None:
    """A warm shutdown: SIGTERM to the main process only, which lets the running task finish
    (SIGTERM to the whole group would kill the pool's child mid-task: WorkerLostError)."""
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(60)
    server_stop(process)  # whatever is left of the group


def descendants(pid: int) -> list[int]:
    found = [pid]
    for child in children_of(pid):
        found += descendants(child)
    return found


def backend_cpu() -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected to the soak database now."""
    with postgres_admin() as admin:
        pids = [
            row[0]
            for row in admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", [DATABASE]
            ).fetchall()
        ]
    return {pid: cpu_seconds([pid]) for pid in pids}


# --------------------------------------------------------------------------- load generator


class Recorder:
    """Every request's endpoint, start time, latency and status (-1: no answer)."""

    def __init__(self, started: float):
        self.started = started
        self.rows: list[tuple[str, float, float, int]] = []

    def request(self, conn, label, method, path, body=None, headers=None):
        """Send once; return (status, headers, body), status -1 on a connection error."""
        began = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            status, response_headers = response.status, response
        except (OSError, http.client.HTTPException):
            conn.close()
            status, response_headers, data = -1, None, b""
        self.rows.append((label, began - self.started, time.perf_counter() - began, status))
        return status, response_headers, data


class Device:
    __slots__ = ("acknowledged", "etag", "id", "last_body", "last_ids", "model_id")

    def __init__(self, device_id: str):
        self.id = device_id
        self.etag = None
        self.model_id = None
        self.acknowledged: list[str] = []  # ids an answer confirmed, for deliberate retries
        self.last_body = None
        self.last_ids: list[str] = []


def device_thread(index: int, params: dict, recorder: Recorder, tally: dict, out) -> None:
    rng = random.Random(params["seed"] * 1000 + index)
    port, deadline = params["port"], params["deadline"]
    devices = [Device(f"SOAK-{n:06d}") for n in range(index, params["devices"], params["threads"])]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT_SECONDS)
    auth = {"Authorization": f"Bearer {params['sdk_key']}"}
    post_headers = {**auth, "Content-Type": "application/json"}
    counter = 0

    def new_id() -> str:
        nonlocal counter
        counter += 1
        return str(uuid.UUID(int=(params["seed"] << 64) | (index << 40) | counter))

    def poll(device: Device) -> None:
        label = "poll If-None-Match" if device.etag else "poll first"
        headers = {**auth, "If-None-Match": device.etag} if device.etag else auth
        query = urlencode({"device_id": device.id, "sdk_version": SDK_VERSION})
        status, response, data = recorder.request(
            conn, label, "GET", f"/api/v1/sdk/assignments?{query}", headers=headers
        )
        if status == 200:
            device.etag = response.getheader("ETag")
            device.model_id = json.loads(data)["models"][0]["model_id"]

    def events(device: Device) -> None:
        roll = rng.random()
        if roll < RESEND_SHARE and device.last_body:
            body, ids, fresh = device.last_body, device.last_ids, []
            kind = "resent"
        else:
            fresh = [new_id() for _ in range(rng.randint(1, MAX_EVENTS_PER_BATCH))]
            ids = list(fresh)
            kind = "new"
            if roll < RESEND_SHARE + MIXED_SHARE and device.acknowledged:
                ids += rng.sample(device.acknowledged, min(3, len(device.acknowledged)))
                kind = "mixed"
            elif roll < RESEND_SHARE + MIXED_SHARE + INTERNAL_DUPLICATE_SHARE:
                ids.append(fresh[0])
                kind = "mixed"
            rng.shuffle(ids)
            now = datetime.now(UTC).isoformat()
            batch = []
            for event_id in ids:
                converted = rng.random() < CONVERSION
                event = {
                    "id": event_id,
                    "flow": FLOW,
                    "model_id": device.model_id,
                    "outcome": "Purchased" if converted else "Dismissed",
                    "ts": now,
                    "signals": {"battery_level": round(rng.random(), 2), "charging": roll < 0.5},
                }
                if converted:
                    event["value"] = 4.99
                batch.append(event)
            body = json.dumps(
                {"device_id": device.id, "sdk_version": SDK_VERSION, "events": batch}
            ).encode()
        for attempt in range(RETRIES):
            status, _, data = recorder.request(
                conn, "events", "POST", "/api/v1/sdk/events", body, post_headers
            )
            if status != -1:
                break
            time.sleep(0.5 * (attempt + 1))  # no answer: retry the same batch, as the SDK does
        tally["events sent"] += len(ids)
        tally[f"batches {kind}"] += 1
        if status != 200:
            tally["batches without a 200"] += 1
            return
        new = len(fresh)
        answer = json.loads(data)
        accepted, duplicates = answer["accepted"], answer["duplicates"]
        tally["acknowledged (sum of accepted)"] += accepted
        tally["duplicates answered"] += duplicates
        tally["duplicates sent on purpose"] += len(ids) - new
        tally["events rejected"] += len(answer["rejected"])
        # A retry after a lost answer may find its own first attempt's events stored.
        retried = attempt > 0
        right = accepted == new and duplicates == len(ids) - new
        if answer["rejected"] or not (right or (retried and accepted + duplicates == len(ids))):
            tally["answers with a wrong count"] += 1
            if tally["answers with a wrong count"] <= 3:
                print(f"wrong answer for {kind} batch of {len(ids)} ({new} new): {answer}")
        out.append((device.id, accepted, fresh))
        device.acknowledged += fresh
        device.acknowledged = device.acknowledged[-50:]
        device.last_body, device.last_ids = body, ids

    while time.monotonic() < deadline:
        device = rng.choice(devices)
        if device.etag is None or rng.random() < POLL_SHARE:
            poll(device)
        else:
            events(device)
    conn.close()


def operator_thread(params: dict, recorder: Recorder, tally: dict) -> None:
    """A person or pipeline on the management API while the devices go on."""
    conn = http.client.HTTPConnection("127.0.0.1", params["port"], timeout=CLIENT_TIMEOUT_SECONDS)
    auth = {"Authorization": f"Bearer {params['token']}"}
    rollout = f"/api/v1/rollouts/{params['rollout']}"
    reads = [
        ("GET rollouts (list)", f"/api/v1/rollouts?flow={params['flow']}"),
        ("GET rollout", rollout),
        ("GET analysis", f"{rollout}/analysis"),
    ]
    next_analyze = time.monotonic() + OPERATOR_ANALYZE_SECONDS
    advance_at, advanced = params["advance_at"], False
    n = 0
    while time.monotonic() < params["deadline"]:
        label, path = reads[n % len(reads)]
        n += 1
        recorder.request(conn, label, "GET", path, headers=auth)
        if time.monotonic() >= next_analyze:
            next_analyze += OPERATOR_ANALYZE_SECONDS
            status, _, _ = recorder.request(
                conn, "POST analyze", "POST", f"{rollout}/analyze", b"", auth
            )
            tally["analyses requested (200)"] += status == 200
        if not advanced and time.monotonic() >= advance_at:
            advanced = True
            for _ in range(RETRIES):
                status, _, data = recorder.request(conn, "GET rollout", "GET", rollout, None, auth)
                revision = json.loads(data)["revision"] if status == 200 else None
                body = json.dumps({"reason": "soak: mid-run advance", "revision": revision})
                status, _, data = recorder.request(
                    conn, "POST advance", "POST", f"{rollout}/advance", body.encode(),
                    {**auth, "Content-Type": "application/json"},
                )  # fmt: skip
                if status != 409:
                    break
                tally["advance 409s"] = [*tally.get("advance 409s", []), json.loads(data)]
            tally["advanced at s"] = round(time.monotonic() - params["load_started"], 1)
            tally["advance answer"] = status
        time.sleep(OPERATOR_READ_SECONDS)
    conn.close()


def load_main(params: dict) -> None:
    """The load generator, a separate process: device threads and one operator thread."""
    from collections import Counter

    params["load_started"] = time.monotonic()
    params["deadline"] = params["load_started"] + params["duration"]
    params["advance_at"] = params["load_started"] + params["duration"] / 2
    started = time.perf_counter()
    recorders = [Recorder(started) for _ in range(params["threads"] + 1)]
    tallies = [Counter() for _ in range(params["threads"] + 1)]
    outs: list[list] = [[] for _ in range(params["threads"])]
    threads = [
        threading.Thread(target=device_thread, args=(i, params, recorders[i], tallies[i], outs[i]))
        for i in range(params["threads"])
    ]
    threads.append(
        threading.Thread(target=operator_thread, args=(params, recorders[-1], tallies[-1]))
    )
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    # The operator's notes are not all counts: merged as they are, not added.
    tally = {**sum(tallies[:-1], Counter()), **tallies[-1]}

    # Every id an answer acknowledged as new, with its device: compared with PostgreSQL.
    per_device: Counter = Counter()
    with open(params["acknowledged_path"], "w") as file:
        for out in outs:
            for device_id, accepted, new_ids in out:
                per_device[device_id] += accepted
                file.writelines(f"{event_id}\t{device_id}\n" for event_id in new_ids)
    rows = [row for recorder in recorders for row in recorder.rows]
    with open(params["requests_path"], "w") as file:
        json.dump(rows, file)
    with open(params["result_path"], "w") as file:
        json.dump(
            {
                "elapsed_s": elapsed,
                "cpu_s": time.process_time(),
                "tally": tally,
                "per_device_acknowledged": per_device,
            },
            file,
        )


# --------------------------------------------------------------------------- final pass


def settle_main(rollout_id: str) -> None:
    """With the worker stopped: flush the exposure buffer and attribute until nothing is left
    (what the periodic jobs do), then describe the judge's runs."""
    import django

    django.setup()
    from django.db.models import Count

    from experiments.events.attribution import events_attribute
    from experiments.models import Analysis
    from rollout.exposures import exposure_buffer_flush
    from rollout.models import Exposure, Rollout

    flushed = settled = 0
    while written := exposure_buffer_flush():
        flushed += written
    while count := events_attribute():
        settled += count
    rollout = Rollout.objects.get(pk=rollout_id)
    analyses = Analysis.objects.filter(rollout=rollout)
    first, last = analyses.last(), analyses.first()
    print(
        "SETTLED "
        + json.dumps(
            {
                "exposure_notes_flushed": flushed,
                "events_settled": settled,
                "exposures": Exposure.objects.filter(rollout=rollout).count(),
                "rollout_state": rollout.state,
                "stage_index": [arm.stage_index for arm in rollout.arms.all()],
                "analyses": analyses.count(),
                "decisions": {
                    row["decision"]: row["n"]
                    for row in analyses.values("decision").annotate(n=Count("id"))
                },
                "actions": {
                    row["action"]: row["n"]
                    for row in analyses.exclude(action="").values("action").annotate(n=Count("id"))
                },
                "first_analysis": first.computed_at.isoformat() if first else None,
                "last_analysis": last.computed_at.isoformat() if last else None,
                "last_arms": [
                    {"arm": arm["arm"], "exposed": arm["exposed"]} for arm in last.body["arms"]
                ]
                if last
                else [],
            }
        )
    )


def database_checks(app_id: str, acknowledged_path: Path, per_device: dict) -> dict:
    """PostgreSQL against the answers: what is stored for the acknowledged ids."""
    import psycopg

    figures = {}
    with psycopg.connect(f"{POSTGRES}/{DATABASE}", autocommit=True) as db:
        db.execute("CREATE TEMP TABLE acknowledged (event_id uuid PRIMARY KEY, device_id text)")
        sql = "COPY acknowledged (event_id, device_id) FROM STDIN"
        with db.cursor().copy(sql) as copy, acknowledged_path.open("rb") as file:
            while chunk := file.read(1 << 20):
                copy.write(chunk)
        db.execute("ANALYZE acknowledged")

        def one(sql: str, *args):
            return db.execute(sql, [*args]).fetchone()[0]

        events = "experiments_outcomeevent"
        figures["distinct ids acknowledged"] = one("SELECT count(*) FROM acknowledged")
        figures["rows stored (the app)"] = one(
            f"SELECT count(*) FROM {events} WHERE app_id = %s", app_id
        )
        figures["distinct ids stored"] = one(
            f"SELECT count(DISTINCT event_id) FROM {events} WHERE app_id = %s", app_id
        )
        figures["rows stored for acknowledged ids"] = one(
            f"SELECT count(*) FROM {events} e JOIN acknowledged a USING (event_id) "
            "WHERE e.app_id = %s",
            app_id,
        )
        figures["lost (acknowledged, not stored)"] = one(
            f"SELECT count(*) FROM acknowledged a WHERE NOT EXISTS (SELECT 1 FROM {events} e "
            "WHERE e.app_id = %s AND e.event_id = a.event_id)",
            app_id,
        )
        figures["stored under another device"] = one(
            f"SELECT count(*) FROM {events} e JOIN acknowledged a USING (event_id) "
            "WHERE e.app_id = %s AND e.device_id <> a.device_id",
            app_id,
        )
        figures["not attributed after the final pass"] = one(
            f"SELECT count(*) FROM {events} WHERE app_id = %s AND NOT attributed", app_id
        )
        figures["counted for an arm"] = one(
            f"SELECT count(*) FROM {events} WHERE app_id = %s AND rollout_id IS NOT NULL", app_id
        )
        # A device's outcome row holds the events counted for its arm (rows of devices an
        # advance moved are deleted, so only rows that exist are compared).
        figures["device outcome rows"] = one("SELECT count(*) FROM experiments_deviceoutcome")
        figures["device outcome rows off their events"] = one(
            f"""SELECT count(*) FROM experiments_deviceoutcome d
                LEFT JOIN (SELECT rollout_id, device_id, arm, count(*) AS n FROM {events}
                           WHERE rollout_id IS NOT NULL GROUP BY 1, 2, 3) c
                  ON c.rollout_id = d.rollout_id AND c.device_id = d.device_id AND c.arm = d.arm
                WHERE d.events <> coalesce(c.n, 0)"""
        )
        stored = dict(
            db.execute(
                f"SELECT device_id, count(*) FROM {events} WHERE app_id = %s GROUP BY 1", [app_id]
            ).fetchall()
        )
    devices = set(stored) | {device for device, n in per_device.items() if n}
    figures["devices with events"] = len(devices)
    figures["devices whose acknowledged != stored"] = sum(
        stored.get(device, 0) != per_device.get(device, 0) for device in devices
    )
    return figures


# --------------------------------------------------------------------------- report


def percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def endpoint_table(rows: list, elapsed: float) -> tuple[str, dict]:
    lines = [
        "| endpoint | requests | req/s | p50 ms | p99 ms | max ms | statuses | 5xx | no answer "
        "| unexpected 4xx |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    errors = {"5xx": 0, "no answer": 0, "unexpected 4xx": 0}
    by_label: dict[str, list] = {}
    for label, _, latency, status in rows:
        by_label.setdefault(label, []).append((latency, status))
    for label in [*EXPECTED, "all"]:
        items = [item for r in by_label.values() for item in r] if label == "all" else None
        items = items if items is not None else by_label.get(label, [])
        if not items:
            continue
        ordered = sorted(latency for latency, _ in items)
        statuses: dict[int, int] = {}
        for _, status in items:
            statuses[status] = statuses.get(status, 0) + 1
        server = sum(n for s, n in statuses.items() if s >= 500)
        lost = statuses.get(-1, 0)
        unexpected = sum(
            n
            for s, n in statuses.items()
            if 400 <= s < 500 and (label == "all" or s not in EXPECTED[label])
        )
        if label != "all":
            errors["5xx"] += server
            errors["no answer"] += lost
            errors["unexpected 4xx"] += unexpected
        else:
            unexpected = errors["unexpected 4xx"]
        shown = ", ".join(f"{s if s != -1 else 'none'}: {n}" for s, n in sorted(statuses.items()))
        lines.append(
            f"| {label} | {len(items)} | {len(items) / elapsed:,.1f} | "
            f"{1000 * percentile(ordered, 0.5):.1f} | {1000 * percentile(ordered, 0.99):.1f} | "
            f"{1000 * ordered[-1]:.0f} | {shown} | {server} | {lost} | {unexpected} |"
        )
    return "\n".join(lines), errors


def timeline(rows: list, elapsed: float, window: float) -> str:
    lines = ["| from s | req/s | p50 ms | p99 ms | max ms | events req/s | errors |",
             "|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    buckets: dict[int, list] = {}
    for label, at, latency, status in rows:
        buckets.setdefault(int(at // window), []).append((label, latency, status))
    for index in sorted(buckets):
        items = buckets[index]
        span = min(window, elapsed - index * window)
        if span <= 0.5:
            continue
        ordered = sorted(latency for _, latency, _ in items)
        events = sum(label == "events" for label, _, _ in items)
        errors = sum(status == -1 or status >= 500 for _, _, status in items)
        lines.append(
            f"| {index * window:.0f} | {len(items) / span:,.0f} | "
            f"{1000 * percentile(ordered, 0.5):.1f} | {1000 * percentile(ordered, 0.99):.1f} | "
            f"{1000 * ordered[-1]:.0f} | {events / span:,.0f} | {errors} |"
        )
    return "\n".join(lines)


def log_problems(log_path: Path) -> list[str]:
    return [
        line
        for line in log_path.read_text(errors="replace").splitlines()
        if "Traceback" in line or "ERROR" in line or "CRITICAL" in line
    ]


# --------------------------------------------------------------------------- the soak


def soak(args, tmp: Path) -> None:
    print(f"machine: {machine()}")
    env = bench_env(
        tmp,
        database=DATABASE,
        redis_url=REDIS_URL,
        broker_url=BROKER_URL,
        # One database connection per process for the whole run, so its backend's CPU counts.
        DB_CONN_MAX_AGE="3600",
    )
    print(f"==> database {DATABASE} (re)created, Redis {REDIS_URL} and {BROKER_URL} flushed")
    database_recreate(DATABASE)
    redis_flush(REDIS_URL)
    redis_flush(BROKER_URL)
    run_checked([sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], env, "migrate")
    print("==> seeding: app, flow, two trained Core ML models, rollout 20 % -> 50 %, API token")
    out = run_checked(
        [sys.executable, __file__, "--seed", "--devices", str(args.devices),
         "--judge-seconds", str(args.judge_seconds)],
        env, "seeding",
    )  # fmt: skip
    seeded = json.loads(next(x for x in out.splitlines() if x.startswith("SEEDED "))[7:])
    print(f"    periodic jobs every {seeded['schedule_s']} s")

    port = free_port()
    server_log = tmp / "gunicorn.log"
    server = server_start(env, port, server_log)
    worker, worker_log = worker_start(env, tmp)
    print(
        f"==> gunicorn (2 sync workers, DEBUG off) on 127.0.0.1:{port}; one Celery worker "
        "with beat (--concurrency=1) on Redis"
    )
    params = {
        "port": port,
        "sdk_key": seeded["sdk_key"],
        "token": seeded["token"],
        "flow": seeded["flow"]["id"],
        "rollout": seeded["rollout"],
        "devices": args.devices,
        "threads": args.threads,
        "duration": args.duration,
        "seed": random.SystemRandom().getrandbits(32),
        "acknowledged_path": str(tmp / "acknowledged.tsv"),
        "requests_path": str(tmp / "requests.json"),
        "result_path": str(tmp / "load.json"),
    }
    print(
        f"==> load for {args.duration:g} s: {args.devices} devices on {args.threads} threads, "
        "one operator thread on the management API; advance half-way"
    )
    try:
        workers = children_of(server.pid)
        server_cpu = children_cpu_seconds(server.pid)
        worker_pids = descendants(worker.pid)
        worker_cpu = cpu_seconds(worker_pids)
        backends = backend_cpu()
        load_before = load_average()
        said = run_checked(
            [sys.executable, __file__, "--load", json.dumps(params)], env, "the load generator"
        )
        server_cpu = children_cpu_seconds(server.pid) - server_cpu
        worker_cpu = cpu_seconds(worker_pids) - worker_cpu
        backends_after = backend_cpu()
        backend_cpu_s = sum(cpu - backends.get(pid, 0.0) for pid, cpu in backends_after.items())
        load_after = load_average()
        restarted = children_of(server.pid) != workers
    finally:
        worker_stop(worker)
        server_stop(server)
    if said.strip():
        print(said.rstrip())
    result = json.loads(Path(params["result_path"]).read_text())
    rows = json.loads(Path(params["requests_path"]).read_text())
    elapsed, tally = result["elapsed_s"], result["tally"]

    print("==> worker stopped; final pass: exposure buffer flushed, events attributed")
    out = run_checked([sys.executable, __file__, "--settle", seeded["rollout"]], env, "settling")
    settled = json.loads(next(x for x in out.splitlines() if x.startswith("SETTLED "))[8:])
    figures = database_checks(
        seeded["app"], Path(params["acknowledged_path"]), result["per_device_acknowledged"]
    )

    table, errors = endpoint_table(rows, elapsed)
    print(f"\n==> traffic: {len(rows)} requests in {elapsed:.1f} s")
    print(table)
    window = args.window or max(5.0, args.duration / 10)
    print(f"\nover time ({window:g} s windows):")
    print(timeline(rows, elapsed, window))
    print("\nbatches: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items()) if "batch" in k))
    print(
        f"events: sent {tally.get('events sent', 0)}, duplicates sent on purpose "
        f"{tally.get('duplicates sent on purpose', 0)}, answered as duplicates "
        f"{tally.get('duplicates answered', 0)}, rejected {tally.get('events rejected', 0)}, "
        f"answers with a wrong count {tally.get('answers with a wrong count', 0)}"
    )
    print(
        f"advance: at {tally.get('advanced at s')} s, answer {tally.get('advance answer')} "
        f"(409s retried: {tally.get('advance 409s', [])}); "
        f"POST analyze answered 200: {tally.get('analyses requested (200)', 0)}"
    )

    judge_runs = log_text_count(worker_log, "experiments.tasks.judge_rollout[", "succeeded")
    print(
        f"\n==> judge: {settled['analyses']} analyses stored ({judge_runs} periodic judge runs "
        f"in the worker log, {tally.get('analyses requested (200)', 0)} by POST analyze), "
        f"decisions {settled['decisions']}, actions {settled['actions'] or 'none'}; rollout "
        f"{settled['rollout_state']} at stage index {settled['stage_index']}; last analysis "
        f"exposed {settled['last_arms']}"
    )
    print(
        f"    final pass: {settled['exposure_notes_flushed']} exposure notes flushed, "
        f"{settled['events_settled']} events settled; {settled['exposures']} exposures"
    )

    cpus = len(os.sched_getaffinity(0))
    print(
        f"\n==> CPU seconds during the load ({elapsed:.0f} s x {cpus} CPUs = "
        f"{elapsed * cpus:.0f} available): gunicorn workers {server_cpu:.1f}, their and the "
        f"worker's PostgreSQL backends {backend_cpu_s:.1f}, Celery worker + beat "
        f"{worker_cpu:.1f}, load generator {result['cpu_s']:.1f} (= "
        f"{result['cpu_s'] / max(server_cpu, 1e-9):.0%} of the gunicorn workers'); load "
        f"average {load_before} before, {load_after} after"
        + ("; (gunicorn replaced a worker during the run)" if restarted else "")
    )

    acknowledged = tally.get("acknowledged (sum of accepted)", 0)
    stored = figures["rows stored (the app)"]
    print("\n==> acknowledged vs stored (PostgreSQL, after the final pass)")
    print(f"    acknowledged (sum of accepted in answers): {acknowledged}")
    for name, value in figures.items():
        print(f"    {name}: {value}")

    server_problems = log_problems(server_log)
    worker_problems = log_problems(worker_log)
    checks = {
        "no 5xx": errors["5xx"] == 0,
        "every request answered": errors["no answer"] == 0,
        "no unexpected 4xx": errors["unexpected 4xx"] == 0,
        "every answer counted new events and duplicates right": tally.get(
            "answers with a wrong count", 0
        )
        == 0,
        "acknowledged == stored": acknowledged == stored,
        "no acknowledged event lost": figures["lost (acknowledged, not stored)"] == 0,
        "nothing stored that no answer acknowledged": stored
        == figures["rows stored for acknowledged ids"]
        == figures["distinct ids acknowledged"],
        "each id stored once": stored == figures["distinct ids stored"],
        "each event under its device": figures["stored under another device"] == 0,
        "no per-device mismatch": figures["devices whose acknowledged != stored"] == 0,
        "every event attributed": figures["not attributed after the final pass"] == 0,
        "device outcome rows match their events": figures["device outcome rows off their events"]
        == 0,
        "no tracebacks or errors in the server and worker logs": not server_problems
        and not worker_problems,
    }
    for name, lines in (("gunicorn", server_problems), ("worker", worker_problems)):
        if lines:
            print(f"    {name} logged {len(lines)} problem lines, e.g. {lines[:3]}")
    print("\n==> checks")
    for name, ok in checks.items():
        print(f"    {'ok  ' if ok else 'FAIL'} {name}")
    print(f"finished {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    if not all(checks.values()):
        sys.exit("the soak failed a check")


def log_text_count(log_path: Path, *parts: str) -> int:
    return sum(
        all(part in line for part in parts)
        for line in log_path.read_text(errors="replace").splitlines()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--duration", type=float, default=600, help="seconds of load (600)")
    parser.add_argument("--devices", type=int, default=5000, help="simulated devices (5000)")
    parser.add_argument("--threads", type=int, default=6, help="device threads (6)")
    parser.add_argument("--judge-seconds", type=int, default=10, help="judge period (10 s)")
    parser.add_argument("--window", type=float, help="seconds per line over time (duration/10)")
    parser.add_argument("--seed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--settle", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed:
        seed_main(args.devices, args.judge_seconds)
        return
    if args.load:
        load_main(json.loads(args.load))
        return
    if args.settle:
        settle_main(args.settle)
        return

    def run(tmp: Path) -> None:
        try:
            soak(args, tmp)
        finally:
            redis_flush(BROKER_URL)

    in_throwaway_installation("soak", DATABASE, REDIS_URL, run)


if __name__ == "__main__":
    main()
