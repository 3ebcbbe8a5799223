"""
Benchmark of the SDK poll (`GET /api/v1/sdk/assignments`) against a bare Django JSON view.

    .venv/bin/python benchmarks/poll.py [--rounds 3] [--duration 10] [--connections 32]

It sets up a throw-away installation (PostgreSQL database `cohort_bench`, Redis database 12),
seeds an app with a running 50 % rollout of two trained models, starts gunicorn as in production
(DEBUG off, 2 sync workers, no access log) with one extra route `bench/bare`
(`benchmarks.bench_settings`), warms every worker up, checks that polls make no database
query, and then loads three targets with wrk, alternately, for several rounds:

    A  bare view   `bench/bare`, JsonResponse({"ok": True}): the framework's floor
    B  poll 200    assignments of --devices known devices in turn (exposures already noted)
    C  poll 304    the same devices sending the ETag they were given: `304 Not Modified`

It prints each round (requests/s, p50 and p99 latency, and the CPU time the gunicorn workers
spent per request, which holds up better than rates on a shared machine), the medians and the
ratios B/A and C/A against the targets, and removes everything it made (server, database, Redis
data, temporary files) at the end.
"""

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from random import Random

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    app_with_rollout_seed,
    bench_env,
    database_recreate,
    in_throwaway_installation,
    postgres_admin,
    server_log_problems,
)

DATABASE = "cohort_bench"
REDIS_URL = "redis://127.0.0.1:6379/12"
BROKER_URL = "redis://127.0.0.1:6379/11"
EXPOSURE_BUFFER_KEY = "cohort:exposure-buffer"  # rollout.exposures.BUFFER_KEY
SDK_VERSION = "1.4.0"
FLOW = "onboarding_upsell"
# PostgreSQL flushes an idle backend's statistics within 10 s (PGSTAT_IDLE_INTERVAL).
STATS_SETTLE_SECONDS = 11
TARGETS = {"B": 0.80, "C": 0.90}
# Warm when fewer polls than this note an exposure a worker has not remembered yet.
WARM_MISS_RATE = 0.002
VARIANTS = {"A": "bare view", "B": "poll 200", "C": "poll 304"}
EXPECTED_STATUS = {"A": 200, "B": 200, "C": 304}

# One Lua script for every variant, so wrk does the same work per request for each: requests
# are formatted once, from a file of "path<TAB>etag" lines, and sent in turn.
LUA = r"""
local data_file, authorization, send_etag, count_statuses = %(args)s
local reqs, n, i = {}, 0, 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  local headers_base = {Host = wrk.headers["Host"], Authorization = authorization}
  for line in io.lines(data_file) do
    local path, etag = line:match("^([^\t]+)\t?(.*)$")
    local headers = {}
    for k, v in pairs(headers_base) do headers[k] = v end
    if send_etag and etag ~= "" then headers["If-None-Match"] = etag end
    n = n + 1
    reqs[n] = wrk.format("GET", path, headers)
  end
  -- Each thread of each run starts at a random device, so that runs shorter than a cycle
  -- still spread over all of them.
  math.randomseed(os.time() * 100 + id)
  i = math.random(n) - 1
end

function request()
  i = i %% n + 1
  return reqs[i]
end

if count_statuses then
  statuses = {}

  function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
  end

  function done(summary, latency, requests)
    local total = {}
    for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses")) do
        total[status] = (total[status] or 0) + count
      end
    end
    for status, count in pairs(total) do
      io.write(string.format("STATUS %%d %%d\n", status, count))
    end
  end
end
"""


# --------------------------------------------------------------------------- seeding


def seed_main() -> None:
    """Run in a subprocess with the benchmark's environment: seed, check queries, print JSON."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()

    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    seeded = app_with_rollout_seed("Benchmark", [50])
    app, sdk_key, plaintext = seeded["app"], seeded["sdk_key"], seeded["plaintext"]
    flow, versions, rollout = seeded["flow"], seeded["versions"], seeded["rollout"]

    # The same check in-process, through every middleware: queries per poll once warm.
    client = Client(HTTP_HOST="127.0.0.1", headers={"authorization": f"Bearer {plaintext}"})
    queries = {}
    etag = None
    for label, device, send_etag in (
        ("first poll (cold process)", "seed-check-1", False),
        ("new device", "seed-check-2", False),
        ("same device again", "seed-check-2", False),
        ("same device, If-None-Match", "seed-check-2", True),
    ):
        headers = {"if-none-match": etag} if send_etag else {}
        with CaptureQueriesContext(connection) as captured:
            response = client.get(
                "/api/v1/sdk/assignments",
                {"device_id": device, "sdk_version": SDK_VERSION},
                headers=headers,
            )
        etag = response["ETag"]
        queries[label] = {"status": response.status_code, "queries": len(captured)}

    print(
        "SEEDED "
        + json.dumps(
            {
                "app": {"id": str(app.pk), "name": app.name},
                "sdk_key": plaintext,
                "sdk_key_prefix": sdk_key.prefix,
                "flow": {"name": flow.name, "flow_id": flow.flow_id, "id": str(flow.pk)},
                "models": {
                    name: {"id": str(v.pk), "size": v.size, "sha256": v.sha256}
                    for name, v in versions.items()
                },
                "rollout": {
                    "id": str(rollout.pk),
                    "state": rollout.state,
                    "arms": [
                        {"name": arm.name, "share_bp": arm.share, "stages_bp": arm.stages}
                        for arm in rollout.arms.all()
                    ],
                },
                "queries": queries,
            }
        )
    )


# --------------------------------------------------------------------------- set-up


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}; "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}; "
        f"load average {load_average()}"
    )


def database_transactions() -> dict:
    """Transactions PostgreSQL counted in the benchmark database, and its open connections."""
    with postgres_admin() as admin:
        row = admin.execute(
            "SELECT xact_commit, xact_rollback, numbackends FROM pg_stat_database "
            "WHERE datname = %s",
            [DATABASE],
        ).fetchone()
    return {"commit": row[0], "rollback": row[1], "connections": row[2]}


def redis_client():
    import redis

    return redis.Redis.from_url(REDIS_URL)


def exposure_notes() -> int:
    """Exposure notes buffered in Redis (no Celery worker runs, so the list only grows)."""
    return redis_client().llen(EXPOSURE_BUFFER_KEY)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_checked(command: list[str], env: dict, what: str) -> str:
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done.stdout


def server_start(env: dict, port: int, log_path: Path) -> subprocess.Popen:
    log = log_path.open("wb")
    # No --access-logfile: gunicorn writes no access log. Its own process group, to stop it all.
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:controlplane.gunicorn", "controlplane.wsgi",
         "--bind", f"127.0.0.1:{port}", "--workers", "2", "--worker-class", "sync",
         "--timeout", "60", "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"gunicorn exited:\n{log_path.read_text()[-3000:]}")
        try:
            if get(port, "/healthz")[0] == 200:
                return process
        except OSError:
            time.sleep(0.2)
    server_stop(process)
    sys.exit(f"gunicorn did not answer within 60 s:\n{log_path.read_text()[-3000:]}")


def server_stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


# --------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    bytes_per_response: float
    errors: int
    statuses: dict[int, int]
    # CPU time the gunicorn workers spent per request: less sensitive to other load than req/s.
    server_cpu_us: float = float("nan")


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_UNITS_BYTES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text).groups()
    return float(number) * _UNITS_MS[unit]


def wrk_parse(output: str) -> WrkResult:
    def find(pattern: str) -> str:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise ValueError(f"wrk output without {pattern!r}:\n{output}")
        return match.group(1)

    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if bad:
        errors += int(bad.group(1))
    requests = int(find(r"^\s+(\d+) requests in"))
    size, unit = re.fullmatch(
        r"([\d.]+)(B|KB|MB|GB)", find(r"requests in \S+, (\S+) read")
    ).groups()
    return WrkResult(
        requests_per_s=float(find(r"^Requests/sec:\s+([\d.]+)")),
        p50_ms=_ms(find(r"^\s+50%\s+(\S+)")),
        p99_ms=_ms(find(r"^\s+99%\s+(\S+)")),
        requests=requests,
        bytes_per_response=float(size) * _UNITS_BYTES[unit] / max(requests, 1),
        errors=errors,
        statuses={int(s): int(n) for s, n in re.findall(r"^STATUS (\d+) (\d+)$", output, re.M)},
    )


def children_cpu_seconds(parent: int) -> float:
    """User + system CPU time of the parent's child processes (the gunicorn workers), in s."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After "pid (comm)": state, ppid, ... utime and stime are the 14th and 15th fields.
        if int(fields[1]) == parent:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class Wrk:
    def __init__(self, binary: str, server: subprocess.Popen, port: int, args, tmp: Path):
        self.binary, self.server, self.port, self.tmp = binary, server, port, tmp
        self.threads, self.connections = args.threads, args.connections

    def script(self, name: str, data: Path, authorization: str, *, etag: bool, count: bool):
        path = self.tmp / f"{name}.lua"
        args = ", ".join(
            [
                json.dumps(str(data)),
                json.dumps(authorization),
                str(etag).lower(),
                str(count).lower(),
            ]
        )
        path.write_text(LUA % {"args": args})
        return path

    def run(self, script: Path, seconds: float) -> WrkResult:
        command = [
            self.binary, "--threads", str(self.threads), "--connections", str(self.connections),
            "--duration", f"{seconds:g}s", "--latency", "--script", str(script),
            f"http://127.0.0.1:{self.port}/",
        ]  # fmt: skip
        cpu_before = children_cpu_seconds(self.server.pid)
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
        cpu = children_cpu_seconds(self.server.pid) - cpu_before
        if done.returncode != 0:
            sys.exit(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        result = wrk_parse(done.stdout)
        result.server_cpu_us = cpu / max(result.requests, 1) * 1e6
        return result


# --------------------------------------------------------------------------- the benchmark


def device_ids(count: int) -> list[str]:
    """IDFV-like device ids (uppercase UUIDs), the same on every run."""
    rng = Random(20261128)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper() for _ in range(count)]


def poll_path(device: str) -> str:
    return f"/api/v1/sdk/assignments?device_id={device}&sdk_version={SDK_VERSION}"


def first_polls(port: int, key: str, devices: list[str]) -> tuple[dict[str, str], dict]:
    """Poll every device once (from 8 threads); return its ETag and the arms seen."""
    host = f"127.0.0.1:{port}"

    def one(device):
        status, headers, body = get(
            port, poll_path(device), {"Authorization": f"Bearer {key}", "Host": host}
        )
        if status != 200:
            raise RuntimeError(f"poll of {device}: {status} {body[:300]!r}")
        entry = json.loads(body)["models"][0]
        return device, headers["ETag"], (entry["rollout"] or {}).get("arm")

    etags, arms = {}, {}
    with ThreadPoolExecutor(8) as pool:
        for device, etag, arm in pool.map(one, devices):
            etags[device] = etag
            arms[arm] = arms.get(arm, 0) + 1
    return etags, arms


def check_statuses(label: str, result: WrkResult, expected: int) -> None:
    other = {s: n for s, n in result.statuses.items() if s != expected}
    if other or result.errors:
        sys.exit(f"{label}: unexpected answers {result.statuses}, {result.errors} errors")


def table(rows: list[tuple[str, WrkResult, int | None]]) -> str:
    lines = [
        "| variant | req/s | p50 ms | p99 ms | server CPU µs/request | requests "
        "| bytes/response | errors | new exposure notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r, notes in rows:
        lines.append(
            f"| {label} | {r.requests_per_s:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.server_cpu_us:.0f} | {r.requests} | {r.bytes_per_response:.0f} | {r.errors} | "
            f"{'' if notes is None else notes} |"
        )
    return "\n".join(lines)


def benchmark(args, wrk_binary: str, tmp: Path) -> None:
    print(f"machine: {machine()}")
    print(
        "note: a shared, noisy machine; wrk and both gunicorn workers share its CPUs, so the "
        "figures are comparisons between the variants, not capacity.\n"
    )
    env = bench_env(
        tmp,
        database=DATABASE,
        redis_url=REDIS_URL,
        broker_url=BROKER_URL,
        settings_module="benchmarks.bench_settings",
    )

    print(f"==> database {DATABASE} (re)created, Redis {REDIS_URL} flushed, migrating")
    database_recreate(DATABASE)
    redis_client().flushdb()
    run_checked([sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], env, "migrate")

    print("==> seeding (training two models with n_estimators=10)")
    out = run_checked([sys.executable, str(Path(__file__).resolve()), "--seed"], env, "seeding")
    seeded = json.loads(next(line for line in out.splitlines() if line.startswith("SEEDED "))[7:])
    key = seeded.pop("sdk_key")
    queries = seeded.pop("queries")
    print(json.dumps(seeded, indent=2))
    print("queries per poll in-process (django.test.Client, all middleware):")
    for label, figures in queries.items():
        print(f"  {label}: HTTP {figures['status']}, {figures['queries']} queries")

    port = free_port()
    log_path = tmp / "gunicorn.log"
    print(f"\n==> gunicorn controlplane.wsgi on 127.0.0.1:{port}: 2 sync workers, DEBUG off")
    server = server_start(env, port, log_path)
    try:
        run_load(args, Wrk(wrk_binary, server, port, args, tmp), port, key)
    finally:
        server_stop(server)
        server_log_problems(log_path)


def run_load(args, wrk: Wrk, port: int, key: str) -> None:
    devices = device_ids(args.devices)
    started = time.monotonic()
    etags, arms = first_polls(port, key, devices)
    print(
        f"first poll of {len(devices)} devices in {time.monotonic() - started:.1f} s; "
        f"arms: {arms}; exposure notes buffered: {exposure_notes()}"
    )
    bare = wrk.tmp / "bare.tsv"
    bare.write_text("/bench/bare\t\n")
    polls = wrk.tmp / "polls.tsv"
    polls.write_text("".join(f"{poll_path(d)}\t{etags[d]}\n" for d in devices))
    auth = f"Bearer {key}"
    scripts = {
        "A": wrk.script("bare", bare, auth, etag=False, count=False),
        "B": wrk.script("poll_200", polls, auth, etag=False, count=False),
        "C": wrk.script("poll_304", polls, auth, etag=True, count=False),
    }
    counting = {
        "A": wrk.script("bare_count", bare, auth, etag=False, count=True),
        "B": wrk.script("poll_200_count", polls, auth, etag=False, count=True),
        "C": wrk.script("poll_304_count", polls, auth, etag=True, count=True),
    }

    # Warm-up: every worker builds its snapshot and notes each device's exposure once. A request
    # lands on whichever worker accepts it first, so poll until (almost) no new note appears.
    print("\n==> warm-up")
    for variant in "ABC":
        result = wrk.run(counting[variant], 2)
        check_statuses(f"warm-up {variant}", result, EXPECTED_STATUS[variant])
        print(f"  {variant} {VARIANTS[variant]}: statuses {result.statuses}")
    for variant in "AC":
        result = wrk.run(scripts[variant], args.warmup)
        print(f"  {variant} {VARIANTS[variant]}: {result.requests_per_s:.0f} req/s")
    deadline = time.monotonic() + args.max_warmup
    while True:
        before = exposure_notes()
        result = wrk.run(scripts["B"], args.warmup)
        new = exposure_notes() - before
        print(
            f"  B {VARIANTS['B']}: {result.requests_per_s:.0f} req/s, {result.errors} errors, "
            f"{new} new exposure notes in {result.requests} polls "
            f"({before + new} buffered of at most 2 workers x {len(devices)} devices)"
        )
        if new <= result.requests * WARM_MISS_RATE or time.monotonic() > deadline:
            break

    print(f"\n==> database transactions during {args.duration:g} s of 200 polls")
    time.sleep(STATS_SETTLE_SECONDS)
    before = database_transactions()
    result = wrk.run(scripts["B"], args.duration)
    time.sleep(STATS_SETTLE_SECONDS)
    after = database_transactions()
    print(
        f"  pg_stat_database({DATABASE}) before: {before}; after: {after}\n"
        f"  {result.requests} polls, {after['commit'] - before['commit']} commits and "
        f"{after['rollback'] - before['rollback']} rollbacks in between"
    )

    rounds: list[dict[str, WrkResult]] = []
    for number in range(1, args.rounds + 1):
        rows, results = [], {}
        for variant in "ABC":
            notes_before = exposure_notes()
            results[variant] = wrk.run(scripts[variant], args.duration)
            notes = exposure_notes() - notes_before if variant != "A" else None
            rows.append((f"{variant} {VARIANTS[variant]}", results[variant], notes))
        rounds.append(results)
        ratios = ", ".join(
            f"{v}/A {results[v].requests_per_s / results['A'].requests_per_s:.1%}" for v in "BC"
        )
        print(
            f"\n==> round {number} of {args.rounds} ({ratios}; load average {load_average()})\n"
            f"{table(rows)}"
        )

    medians = {}
    for variant in "ABC":
        runs = [r[variant] for r in rounds]
        medians[variant] = WrkResult(
            requests_per_s=statistics.median(r.requests_per_s for r in runs),
            p50_ms=statistics.median(r.p50_ms for r in runs),
            p99_ms=statistics.median(r.p99_ms for r in runs),
            requests=int(statistics.median(r.requests for r in runs)),
            bytes_per_response=statistics.median(r.bytes_per_response for r in runs),
            server_cpu_us=statistics.median(r.server_cpu_us for r in runs),
            errors=sum(r.errors for r in runs),
            statuses={},
        )
    print(
        f"\n==> medians of {args.rounds} rounds ({args.duration:g} s each, wrk {args.threads} "
        f"threads, {args.connections} connections, {len(devices)} devices)"
    )
    print(table([(f"{v} {VARIANTS[v]}", medians[v], None) for v in "ABC"]))
    for variant, target in TARGETS.items():
        ratio = medians[variant].requests_per_s / medians["A"].requests_per_s
        verdict = "met" if ratio >= target else "NOT met"
        per_round = [r[variant].requests_per_s / r["A"].requests_per_s for r in rounds]
        cpu_per_round = [r["A"].server_cpu_us / r[variant].server_cpu_us for r in rounds]
        print(
            f"{variant}/A = {ratio:.1%} of the median req/s (target >= {target:.0%}: {verdict})\n"
            f"    per round {', '.join(f'{x:.0%}' for x in per_round)}; "
            f"median of the rounds' ratios {statistics.median(per_round):.1%}\n"
            f"    by server CPU per request (A's / {variant}'s, the throughput ratio of a "
            f"CPU-bound server): per round {', '.join(f'{x:.0%}' for x in cpu_per_round)}; "
            f"median {statistics.median(cpu_per_round):.1%}"
        )
    print(f"finished {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--rounds", type=int, default=3, help="rounds of A B C (default 3)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per run (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--devices", type=int, default=10_000, help="devices polled (10 000)")
    parser.add_argument("--warmup", type=float, default=10, help="seconds per warm-up run (10)")
    parser.add_argument(
        "--max-warmup", type=float, default=180, help="longest warm-up of the poll (180 s)"
    )
    parser.add_argument("--seed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed:
        seed_main()
        return
    wrk_binary = shutil.which("wrk")
    if wrk_binary is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    in_throwaway_installation(
        "poll", DATABASE, REDIS_URL, lambda tmp: benchmark(args, wrk_binary, tmp)
    )


if __name__ == "__main__":
    main()
