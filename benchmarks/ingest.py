"""
Benchmark of event ingestion (`POST /api/v1/sdk/events`) against PostgreSQL's own floor, COPY.

    .venv/bin/python benchmarks/ingest.py [--rounds 3] [--batches 3000] [--threads 4]

It sets up a throw-away installation (PostgreSQL database `cohort_bench_ingest`, Redis database
10), seeds it as `benchmarks/poll.py` does (an app, two trained models, a running 50 % rollout),
starts gunicorn as in production (DEBUG off, 2 sync workers, no access log), and:

    0  lets every one of --devices devices poll once (as a device does before it has a model to
       report on), and starts the background job beside the server: exposure flush and
       attribution in a loop, what the Celery worker runs every few seconds
    1  the endpoint, --rounds times: a load generator in a separate process (threads, one HTTP
       connection each) POSTs --batches batches of 50 events, each batch from one of the
       devices, every event id new; events/s = events acknowledged (the sum of `accepted`) /
       wall time. Events are de-duplicated and counted for their device's arm as they arrive
       (experiments/events/count_on_arrival.py); the job counts the rest
    2  end to end: the rounds' time plus the job's drain after the last round, until every
       event is counted: the rate that includes de-duplication and the per-device aggregation
    3  the floor, with the server stopped: psycopg 3 `COPY` of the very rows the endpoint
       stored into a scratch copy of the table (`LIKE ... INCLUDING ALL`: same columns,
       defaults and indexes; no foreign keys), in batches of 50 (one COPY and commit per
       batch) from 1 connection and from 2 in parallel (as many as gunicorn workers), and as
       one large COPY
    4  the check that every acknowledged event is in the database, once, attributed, and that
       the device rows add up to the counted events

Besides wall-clock rates it counts CPU seconds (/proc) of the writer and its PostgreSQL
backends (gunicorn workers + theirs; the COPY client + its), which hold up better than rates
on a shared machine. It prints the figures, the ratios endpoint / floor and end to end / floor
against the target (>= 25 % of the batches-of-50 floor), and removes everything it made
(server, database, Redis data, files).
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Shared with the poll benchmark: machine description, seeding, gunicorn start/stop.
from benchmarks.common import (  # noqa: E402
    POSTGRES,
    bench_env,
    database_recreate,
    in_throwaway_installation,
    postgres_admin,
    redis_flush,
    server_log_problems,
)
from benchmarks.poll import (  # noqa: E402
    FLOW,
    SDK_VERSION,
    free_port,
    machine,
    run_checked,
    seed_main,
    server_start,
    server_stop,
)

DATABASE = "cohort_bench_ingest"
REDIS_URL = "redis://127.0.0.1:6379/10"
EVENTS_PER_BATCH = 50
TARGET = 0.25
TABLE = "experiments_outcomeevent"
COLUMNS = (
    "app_id, event_id, flow_id, device_id, sdk_version, model_id, outcome, value, "
    "occurred_at, received_at, signals, attributed, rollout_id, arm"
)


# --------------------------------------------------------------------------- set-up


def bench_database():
    import psycopg

    return psycopg.connect(f"{POSTGRES}/{DATABASE}", autocommit=True)


def python_mode(env: dict, mode: str, *args: str) -> dict:
    """Run this file in a mode of its own (a separate process) and return its JSON line."""
    out = run_checked([sys.executable, str(Path(__file__).resolve()), mode, *args], env, mode)
    tag = {"--seed": "SEEDED ", "--load": "LOAD ", "--attribute": "ATTRIBUTED "}[mode]
    return json.loads(next(line for line in out.splitlines() if line.startswith(tag))[len(tag) :])


def cpu_seconds(pids) -> float:
    """User + system CPU seconds the processes have used so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def children_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def backend_pids() -> set[int]:
    """PostgreSQL backends connected to the benchmark database."""
    with postgres_admin() as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", [DATABASE]
        ).fetchall()
    return {row[0] for row in rows}


# --------------------------------------------------------------------------- load generator


def load_main(params: dict) -> None:
    """The load generator: a separate process, one HTTP connection per thread."""
    port, key = params["port"], params["key"]
    devices = [f"BENCH-{n:08d}" for n in range(params["devices"])]
    run = params["run"]  # distinct per run, so every event id is new
    ts = datetime.now(UTC).isoformat()
    batches = params["batches"]
    next_batch = iter(range(batches))
    lock = threading.Lock()
    totals = {"accepted": 0, "duplicates": 0, "rejected": 0, "requests": 0}
    statuses: dict[int, int] = {}
    latencies: list[float] = []

    def body_of(batch: int) -> bytes:
        events = []
        for i in range(EVENTS_PER_BATCH):
            n = batch * EVENTS_PER_BATCH + i
            event = {
                "id": str(uuid.UUID(int=(run << 64) | n)),
                "flow": FLOW,
                "model_id": None,
                "outcome": "Purchased"
                if n % 10 == 0
                else "model_error"
                if n % 97 == 0
                else "Dismissed",
                "ts": ts,
                "signals": {"battery_level": (n % 100) / 100, "charging": n % 3 == 0},
            }
            if n % 10 == 0:
                event["value"] = 4.99
            events.append(event)
        device = devices[((run * batches + batch) * 7919) % len(devices)]
        return json.dumps(
            {"device_id": device, "sdk_version": SDK_VERSION, "events": events}
        ).encode()

    def poll(connection, headers, index: int) -> bytes:
        query = urlencode({"device_id": devices[index], "sdk_version": SDK_VERSION})
        connection.request("GET", f"/api/v1/sdk/assignments?{query}", headers=headers)
        return connection.getresponse()

    if params.get("poll"):
        # Every device polls once, as a device does before it has a model to report on.
        next_batch = iter(range(len(devices)))
        batches = len(devices)
        bodies = []
    else:
        # Built before the clock starts: the load generator shares the server's CPUs, and
        # what it spends building requests is not the server's work.
        bodies = [body_of(batch) for batch in range(batches)]

    def worker():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        mine: list[float] = []
        counts = {"accepted": 0, "duplicates": 0, "rejected": 0, "requests": 0}
        seen: dict[int, int] = {}
        while True:
            with lock:
                batch = next(next_batch, None)
            if batch is None:
                break
            started = time.perf_counter()
            if params.get("poll"):
                response = poll(connection, headers, batch)
                data = response.read()
                mine.append(time.perf_counter() - started)
                seen[response.status] = seen.get(response.status, 0) + 1
                counts["requests"] += 1
                continue
            body = bodies[batch]
            connection.request("POST", "/api/v1/sdk/events", body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            mine.append(time.perf_counter() - started)
            seen[response.status] = seen.get(response.status, 0) + 1
            counts["requests"] += 1
            if response.status == 200:
                answer = json.loads(data)
                counts["accepted"] += answer["accepted"]
                counts["duplicates"] += answer["duplicates"]
                counts["rejected"] += len(answer["rejected"])
        connection.close()
        with lock:
            latencies.extend(mine)
            for name, value in counts.items():
                totals[name] += value
            for status, value in seen.items():
                statuses[status] = statuses.get(status, 0) + value

    threads = [threading.Thread(target=worker) for _ in range(params["threads"])]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    print(
        "LOAD "
        + json.dumps(
            {
                **totals,
                "statuses": statuses,
                "elapsed_s": elapsed,
                "events_sent": 0 if params.get("poll") else batches * EVENTS_PER_BATCH,
                "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
                "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else None,
            }
        )
    )


# --------------------------------------------------------------------------- attribution


def background_main(stop_file: str) -> None:
    """What the Celery worker does during the load, without pauses: flush the exposures
    polls and batches noted, and attribute the events not counted on arrival. Once the stop
    file appears it drains both and reports how long that took."""
    import django

    django.setup()
    from experiments.events.attribution import events_attribute
    from rollout.exposures import exposure_buffer_flush

    flushed = settled = 0
    stop = Path(stop_file)
    while not stop.exists():
        flushed += exposure_buffer_flush()
        count = events_attribute()
        settled += count
        if not count:
            time.sleep(0.2)
    started = time.perf_counter()
    while True:
        written = exposure_buffer_flush()
        count = events_attribute()
        flushed, settled = flushed + written, settled + count
        if not written and not count:
            break
    print(
        "BACKGROUND "
        + json.dumps(
            {
                "flushed": flushed,
                "settled": settled,
                "drain_s": time.perf_counter() - started,
                "cpu_s": time.process_time(),
            }
        )
    )


def attribute_main(acknowledged: int) -> None:
    """Flush exposures, attribute every event, and count what the database holds."""
    import django

    django.setup()
    from django.db.models import Count, Q, Sum

    from experiments.events.attribution import events_attribute
    from experiments.models import DeviceOutcome, OutcomeEvent
    from rollout.exposures import exposure_buffer_flush
    from rollout.models import Exposure

    started = time.perf_counter()
    flushed = 0
    while written := exposure_buffer_flush():
        flushed += written
    flush_s = time.perf_counter() - started

    pending = OutcomeEvent.objects.filter(attributed=False).count()
    started = time.perf_counter()
    rounds = settled = 0
    while count := events_attribute():
        settled += count
        rounds += 1
    attribute_s = time.perf_counter() - started

    events = OutcomeEvent.objects.aggregate(
        total=Count("id"),
        distinct=Count("event_id", distinct=True),
        attributed=Count("id", filter=Q(attributed=True)),
        counted=Count("id", filter=Q(rollout__isnull=False)),
    )
    outcomes = DeviceOutcome.objects.aggregate(devices=Count("id"), events=Sum("events"))
    print(
        "ATTRIBUTED "
        + json.dumps(
            {
                "exposure_notes_flushed": flushed,
                "exposures": Exposure.objects.count(),
                "flush_s": flush_s,
                "pending_before": pending,
                "settled": settled,
                "calls": rounds,
                "attribute_s": attribute_s,
                "acknowledged": acknowledged,
                **{f"events_{name}": value for name, value in events.items()},
                "device_outcomes": outcomes["devices"],
                "device_outcome_events": outcomes["events"] or 0,
            }
        )
    )


# --------------------------------------------------------------------------- COPY floor


@dataclass
class Run:
    events: int
    wall_s: float
    cpu_s: float  # the writer's and its PostgreSQL backends' CPU

    @property
    def rate(self) -> float:
        return self.events / self.wall_s

    @property
    def per_cpu_s(self) -> float:
        return self.events / self.cpu_s


def copy_rows(limit: int) -> list[bytes]:
    """The last rows the endpoint stored, in COPY text format, one bytes line each."""
    with bench_database() as db, db.cursor() as cursor:
        buffer = bytearray()
        with cursor.copy(
            f"COPY (SELECT {COLUMNS} FROM {TABLE} ORDER BY id DESC LIMIT {int(limit)}) TO STDOUT"
        ) as copy:
            for data in copy:
                buffer += data
    return bytes(buffer).splitlines(keepends=True)


def scratch_reset() -> None:
    """An empty copy of the events table: same columns, defaults, indexes and constraints."""
    with bench_database() as db:
        db.execute("DROP TABLE IF EXISTS bench_copy_scratch")
        db.execute(f"CREATE TABLE bench_copy_scratch (LIKE {TABLE} INCLUDING ALL)")


def copy_run(chunks: list[bytes], connections: int, rows: int) -> Run:
    """COPY each chunk in its own statement (and commit), from `connections` in parallel."""
    scratch_reset()
    sql = f"COPY bench_copy_scratch ({COLUMNS}) FROM STDIN"
    dbs = [bench_database() for _ in range(connections)]
    backends = [db.info.backend_pid for db in dbs]
    barrier = threading.Barrier(connections + 1)

    def run(db, mine):
        barrier.wait()
        with db.cursor() as cursor:
            for chunk in mine:
                with cursor.copy(sql) as copy:
                    copy.write(chunk)

    threads = [
        threading.Thread(target=run, args=(db, chunks[index::connections]))
        for index, db in enumerate(dbs)
    ]
    for thread in threads:
        thread.start()
    cpu = time.process_time() + cpu_seconds(backends)
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    cpu = time.process_time() + cpu_seconds(backends) - cpu
    for db in dbs:
        db.close()
    with bench_database() as db:
        (count,) = db.execute("SELECT count(*) FROM bench_copy_scratch").fetchone()
    if count != rows:
        sys.exit(f"COPY wrote {count} rows, expected {rows}")
    return Run(rows, wall, cpu)


def median_run(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda run: run.rate)[len(runs) // 2]


# --------------------------------------------------------------------------- the benchmark


def endpoint_runs(args, env: dict, tmp: Path, key: str) -> tuple[list[Run], list[dict], dict]:
    """Start gunicorn, warm it up, run the load --rounds times; return the runs and answers."""
    port = free_port()
    log_path = tmp / "gunicorn.log"
    print(f"\n==> gunicorn controlplane.wsgi on 127.0.0.1:{port}: 2 sync workers, DEBUG off")
    server = server_start(env, port, log_path)
    load = {"port": port, "key": key, "devices": args.devices, "threads": args.threads}
    runs, answers = [], []
    stop_file = tmp / "background.stop"
    background = None
    try:
        polled = python_mode(env, "--load", json.dumps({**load, "batches": 0, "run": 0, "poll": 1}))
        print(
            f"    every device polled once first: {polled['requests']} requests in "
            f"{polled['elapsed_s']:.1f} s, statuses {polled['statuses']}"
        )
        background = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--background", str(stop_file)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        print(
            "    beside the server, the background job (exposure flush + attribution, as the "
            "Celery worker runs them, without pauses)"
        )
        warm = python_mode(env, "--load", json.dumps({**load, "batches": args.warmup, "run": 1}))
        print(f"    warm-up: {warm['requests']} requests, statuses {warm['statuses']}")
        answers.append(warm)
        workers = children_of(server.pid)
        rounds_started = time.perf_counter()
        for number in range(1, args.rounds + 1):
            backends = backend_pids()
            worker_cpu, backend_cpu = cpu_seconds(workers), cpu_seconds(backends)
            result = python_mode(
                env, "--load", json.dumps({**load, "batches": args.batches, "run": 1 + number})
            )
            worker_cpu = cpu_seconds(workers) - worker_cpu
            backend_cpu = cpu_seconds(backends) - backend_cpu
            cpu = worker_cpu + backend_cpu
            if backend_pids() != backends:
                print("    (database connections changed during the run: CPU undercounted)")
            answers.append(result)
            runs.append(Run(result["accepted"], result["elapsed_s"], cpu))
            print(
                f"    round {number}: {result['requests']} batches, {result['accepted']} events "
                f"accepted in {result['elapsed_s']:.2f} s = {runs[-1].rate:,.0f} events/s "
                f"({result['requests'] / result['elapsed_s']:,.0f} requests/s, p50 "
                f"{result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms); CPU: workers "
                f"{worker_cpu:.2f} s + their backends {backend_cpu:.2f} s = "
                f"{runs[-1].per_cpu_s:,.0f} events per CPU-second, "
                f"{1000 * worker_cpu / result['requests']:.2f} + "
                f"{1000 * backend_cpu / result['requests']:.2f} ms per batch"
            )
        stop_file.touch()
        out, _ = background.communicate(timeout=600)
        until_counted_s = time.perf_counter() - rounds_started
        drained = json.loads(
            next(line for line in out.splitlines() if line.startswith("BACKGROUND "))[11:]
        )
        print(
            f"    after the last round the background job had every event settled in "
            f"{drained['drain_s']:.2f} s ({drained['flushed']} exposure notes flushed and "
            f"{drained['settled']} events attributed by it in all; {drained['cpu_s']:.1f} s CPU)"
        )
        acknowledged = sum(answer["accepted"] for answer in answers)
        print(
            f"    {acknowledged - drained['settled']:,} of the {acknowledged:,} events "
            "acknowledged (warm-up included) were counted as they arrived, the rest by the job"
        )
        # The rounds' own time plus the job's drain after the last: the gaps between rounds
        # (a new load process builds its requests) are left out, and the job works on during
        # them, but it had next to nothing left to drain anyway.
        events = sum(run.events for run in runs)
        seconds = sum(run.wall_s for run in runs) + drained["drain_s"]
        drained["end_to_end"] = Run(events, seconds, 0.0)
        print(
            f"    end to end: {events} events in the rounds' {seconds - drained['drain_s']:.2f} s "
            f"plus {drained['drain_s']:.2f} s until the job had every one counted = "
            f"{events / seconds:,.0f} events/s ({until_counted_s:.1f} s in all, with the gaps)"
        )
    finally:
        if background is not None and background.poll() is None:
            background.kill()
        server_stop(server)
        server_log_problems(log_path)
    for answer in answers:
        if set(answer["statuses"]) != {"200"} or answer["rejected"] or answer["duplicates"]:
            sys.exit(f"unexpected answers: {answer}")
    return runs, answers, drained


def floor_runs(args, events: int) -> dict[str, Run]:
    print("\n==> floor: psycopg 3 COPY of the same rows into a scratch copy of the table")
    lines = copy_rows(events)
    batches = [
        b"".join(lines[i : i + EVENTS_PER_BATCH]) for i in range(0, len(lines), EVENTS_PER_BATCH)
    ]
    floors = {}
    for label, chunks, connections in (
        ("COPY batches of 50, 1 connection", batches, 1),
        ("COPY batches of 50, 2 connections", batches, 2),
        ("one COPY of every row", [b"".join(lines)], 1),
    ):
        runs = [copy_run(chunks, connections, len(lines)) for _ in range(args.rounds)]
        floors[label] = median_run(runs)
        print(
            f"    {label}: {floors[label].rate:,.0f} rows/s, "
            f"{floors[label].per_cpu_s:,.0f} rows per CPU-second (median of {args.rounds}: "
            f"{', '.join(f'{r.wall_s:.2f} s' for r in runs)})"
        )
    with bench_database() as db:
        db.execute("DROP TABLE IF EXISTS bench_copy_scratch")
    return floors


def attribution_run(env: dict, acknowledged: int) -> bool:
    print("\n==> attribution: exposures flushed, then events_attribute until none is left")
    counted = python_mode(env, "--attribute", str(acknowledged))
    print(
        f"    {counted['exposure_notes_flushed']} exposure notes flushed in "
        f"{counted['flush_s']:.2f} s ({counted['exposures']} exposures); "
        f"{counted['settled']} of {counted['pending_before']} pending events settled in "
        f"{counted['attribute_s']:.2f} s = "
        f"{counted['settled'] / max(counted['attribute_s'], 1e-9):,.0f} events/s "
        f"({counted['calls']} calls); {counted['events_counted']} counted for an arm, "
        f"{counted['device_outcomes']} device rows holding {counted['device_outcome_events']}"
    )
    checks = {
        "every acknowledged event is stored": counted["events_total"] == acknowledged,
        "each once": counted["events_distinct"] == counted["events_total"],
        "every event attributed": counted["events_attributed"] == counted["events_total"],
        "device rows add up to the counted events": counted["device_outcome_events"]
        == counted["events_counted"],
    }
    print(
        f"    acknowledged (sum of accepted) {acknowledged}, in the database "
        f"{counted['events_total']}: "
        + "; ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks.items())
    )
    return all(checks.values())


def benchmark(args, tmp: Path) -> None:
    print(f"machine: {machine()}")
    print(
        "note: a shared, noisy machine; the load generator, both gunicorn workers and "
        "PostgreSQL share its CPUs, so wall-clock figures compare the variants, not capacity; "
        "the CPU figures (writer + its PostgreSQL backends) hold up better under noise.\n"
    )
    env = bench_env(
        tmp,
        database=DATABASE,
        redis_url=REDIS_URL,
        broker_url=REDIS_URL,
        settings_module="benchmarks.bench_settings",
        # One database connection per worker for the whole run: its backend's CPU is counted.
        DB_CONN_MAX_AGE="3600",
    )
    print(f"==> database {DATABASE} (re)created, Redis {REDIS_URL} flushed, migrating")
    database_recreate(DATABASE)
    redis_flush(REDIS_URL)
    run_checked([sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], env, "migrate")
    if args.without_event_foreign_keys:
        print(f"==> what-if: the foreign keys of {TABLE} dropped (the model keeps them)")
        with bench_database() as db:
            for (name,) in db.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f'",
                [TABLE],
            ).fetchall():
                db.execute(f'ALTER TABLE {TABLE} DROP CONSTRAINT "{name}"')
    print("==> seeding as benchmarks/poll.py does (two models, a running 50 % rollout)")
    seeded = python_mode(env, "--seed")
    print(f"    flow {seeded['flow']['name']}, rollout {seeded['rollout']['arms']}")

    runs, answers, drained = endpoint_runs(args, env, tmp, seeded["sdk_key"])
    endpoint = median_run(runs)
    end_to_end = drained["end_to_end"]
    floors = floor_runs(args, runs[-1].events)
    ok = attribution_run(env, sum(answer["accepted"] for answer in answers))

    print(
        f"\n==> summary (medians of {args.rounds} rounds; endpoint: {args.threads} client "
        f"threads, {args.devices} devices, {EVENTS_PER_BATCH} events per batch)"
    )
    print("| what | events/s | endpoint / it | events per CPU-second | endpoint / it |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| endpoint (gunicorn, 2 workers) | {endpoint.rate:,.0f} | | {endpoint.per_cpu_s:,.0f} | |"
    )
    print(f"| end to end (all rounds until every event counted) | {end_to_end.rate:,.0f} | | | |")
    for label, run in floors.items():
        print(
            f"| {label} | {run.rate:,.0f} | {endpoint.rate / run.rate:.1%} | "
            f"{run.per_cpu_s:,.0f} | {endpoint.per_cpu_s / run.per_cpu_s:.1%} |"
        )
    # The issue's floor is COPY in batches of 50 over one connection ("about 44 000 rows/s
    # on this machine"); two connections in parallel (one per gunicorn worker) is stricter,
    # and swings widely from run to run on this shared machine.
    for label, what in (
        ("COPY batches of 50, 1 connection", "target"),
        ("COPY batches of 50, 2 connections", "stricter"),
    ):
        for name, run in (("end to end", end_to_end), ("endpoint", endpoint)):
            ratio = run.rate / floors[label].rate
            print(
                f"{what}: {name} / {label} = {ratio:.1%} "
                f"(>= {TARGET:.0%}: {'met' if ratio >= TARGET else 'NOT met'})"
            )
    print(f"finished {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    if not ok:
        sys.exit("a check failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--batches", type=int, default=3000, help="batches per round (3000)")
    parser.add_argument("--warmup", type=int, default=400, help="batches of warm-up (400)")
    parser.add_argument("--threads", type=int, default=4, help="client threads (4)")
    parser.add_argument("--devices", type=int, default=20_000, help="distinct devices (20 000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant (3)")
    parser.add_argument(
        "--without-event-foreign-keys",
        action="store_true",
        help="what-if: drop the events table's foreign keys first, to see what they cost",
    )
    parser.add_argument("--seed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--attribute", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--background", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed:
        seed_main()
        return
    if args.load:
        load_main(json.loads(args.load))
        return
    if args.attribute is not None:
        attribute_main(args.attribute)
        return
    if args.background:
        background_main(args.background)
        return

    in_throwaway_installation("ingest", DATABASE, REDIS_URL, lambda tmp: benchmark(args, tmp))


if __name__ == "__main__":
    main()
