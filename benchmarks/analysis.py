"""
Benchmark of the judge's analysis (`experiments.judge.rollout_analyze`) on a million devices.

    .venv/bin/python benchmarks/analysis.py [--devices 1000000] [--challengers 3] [--repeats 3]

It sets up a throw-away installation (PostgreSQL database `cohort_bench_analysis`, Redis
database 7), migrates, and in one Django process (`controlplane.settings`, DEBUG off):

    1  seeds an app, a flow, a baseline and --challengers challenger models (each trained with
       its own seed and bias, so every file differs) and a running rollout, every challenger
       with the stages 5, 15 and 25 % (or less, so that they fit), with the guardrails `value`
       and `outcome:Dismissed` (so the label counts are computed too); it starts the rollout
       and advances it twice, then moves the three phases (and their audit-log entries) back
       to 3, 2 and 1 days ago
    2  bulk-loads, with psycopg 3 COPY, --devices exposures, their first exposure spread
       uniformly over the three phases (SDK 1.4.0 or 1.5.0). 99 % are comparable devices in a
       bucket that maps to their arm both in their phase and under the current shares, so the
       analysis counts them, in the stratum of their phase; 1 %, exposed before the last
       advance, are in a baseline bucket a challenger took since: half still in the baseline,
       half moved to the challenger and no longer comparable (the analysis leaves both out).
       A `DeviceOutcome` row (with the exposure's arm_since and bucket) for ~40 % of the
       comparable devices (~10 % of them converted, with a value; ~1 % with model errors),
       then ANALYZEs both tables
    3  times `rollout_analyze(rollout=..., act=False)` --repeats times (wall clock; the first
       call also imports and warms up, so it is reported apart) and the SQL of each call

It checks that every analysis counted what was loaded (per arm: devices, reporting and
converted devices; per arm and stratum: devices) and stops if not. It prints the timings, the
decision and the exposed devices per arm, the target (< 1 s per analysis) and, if it is
missed (or with --explain), EXPLAIN (ANALYZE, BUFFERS) of the selectors' queries. The database
and the Redis data are removed at the end.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Shared with the poll benchmark: the PostgreSQL server, its admin connection, the machine.
from benchmarks.common import (  # noqa: E402
    POSTGRES,
    bench_env,
    database_recreate,
    in_throwaway_installation,
    redis_flush,
)
from benchmarks.poll import FLOW, machine, run_checked  # noqa: E402

DATABASE = "cohort_bench_analysis"
REDIS_URL = "redis://127.0.0.1:6379/7"
BROKER_URL = "redis://127.0.0.1:6379/6"
TARGET_SECONDS = 1.0
STAGE_PERCENT = 25  # every challenger's final stage (or less, so that they fit)
STAGE_FRACTIONS = (0.2, 0.6, 1.0)  # the stages, of STAGE_PERCENT: 5, 15 and 25 %
PHASE_LENGTH = timedelta(days=1)  # between the start and each advance, and since the last
EXCLUDED = 0.01  # devices in a bucket a challenger took since their exposure (left out)
SDK_VERSIONS = ("1.4.0", "1.5.0")
REPORTING = 0.40  # devices with a DeviceOutcome row
CONVERSION = 0.10  # of the reporting devices, before each arm's lift
TABLES = ("rollout_exposure", "experiments_deviceoutcome")


# --------------------------------------------------------------------------- set-up


# --------------------------------------------------------------------------- in Django


def seed(challengers: int):
    """An app, a flow, a baseline and trained challengers, and a running rollout of them."""
    from io import BytesIO

    from registry import services as registry_services
    from registry import training
    from rollout import services as rollout_services

    app = registry_services.app_create(
        name="Analysis benchmark", bundle_identifiers=["com.example.analysis"]
    )
    flow = registry_services.flow_create(
        app=app,
        name=FLOW,
        flow_id=8362,
        positive_label=training.PURCHASED,
        signals={"input": "1.0.0"},
    )
    features = ["Battery Level", "Phone Charging?"]
    versions = []
    for index in range(challengers + 1):
        name = "baseline" if index == 0 else f"challenger-{index}"
        rows = training.demo_rows(600, seed=index, purchase_bias=0.05 * index)
        x = [[row["Battery Level"], 1.0 if row["Phone Charging?"] else 0.0] for row in rows]
        y = [row["Outcome"] for row in rows]
        result = training.train_outcome_classifier(
            features, x, y, seed=index, n_estimators=5, short_description=f"Benchmark {name}"
        )
        version, _ = registry_services.model_version_upload(
            flow=flow,
            file=BytesIO(result.model_bytes),
            filename=f"{name}.mlmodel",
            notes=f"benchmark {name}",
            metrics=result.report,
        )
        versions.append(version)
    if len({v.sha256 for v in versions}) != len(versions):
        sys.exit("two trained models have the same bytes: change the seeds or biases")
    registry_services.flow_baseline_set(
        flow=flow, model_version=versions[0], actor="benchmark", reason="benchmark"
    )
    # Every challenger ends at 25 % (or less, so that they fit in 100 % together); the rollout
    # is started and advanced through the earlier stages, so it has one phase per stage.
    percent = min(STAGE_PERCENT, 100 // (challengers + 1))
    stages = [round(percent * fraction, 2) for fraction in STAGE_FRACTIONS]
    rollout = rollout_services.rollout_create(
        flow=flow,
        challengers=[{"model_id": str(v.pk), "stages": stages} for v in versions[1:]],
        actor="benchmark",
        guardrails=["value", f"outcome:{training.DISMISSED}"],
    )
    rollout = rollout_services.rollout_start(rollout=rollout, actor="benchmark")
    for _ in STAGE_FRACTIONS[1:]:
        rollout = rollout_services.rollout_advance(rollout=rollout, actor="benchmark")
    return rollout


def phases_backdate(rollout) -> list[datetime]:
    """Move the rollout's start and advances (and their audit-log entries) back in time, one
    day apart, the current phase beginning a day ago; return the phase starts."""
    from rollout.models import Rollout, RolloutEvent
    from rollout.selectors import PHASE_ACTIONS, rollout_phase_starts

    events = list(
        RolloutEvent.objects.filter(rollout=rollout, action__in=PHASE_ACTIONS).order_by("at", "pk")
    )
    now = datetime.now(UTC).replace(microsecond=0)
    starts = [now - PHASE_LENGTH * (len(events) - index) for index in range(len(events))]
    for event, at in zip(events, starts, strict=True):
        RolloutEvent.objects.filter(pk=event.pk).update(at=at)
    Rollout.objects.filter(pk=rollout.pk).update(started_at=starts[0], stage_started_at=starts[-1])
    rollout.refresh_from_db()
    if rollout_phase_starts(rollout=rollout) != starts:
        sys.exit(f"the audit log does not give the phases {starts}")
    return starts


def placements(arms, phases: int) -> tuple[list[list[tuple[int, str]]], list[list[tuple]]]:
    """Per phase: the (bucket, arm) places a device exposed then can have and still count
    (its bucket maps to the same arm then and now), and the (bucket, arm now, phase the
    bucket joined that arm) places of the baseline buckets a challenger has taken since."""
    from rollout.arms import BASELINE
    from rollout.hashing import BUCKETS

    def arm_at(bucket: int, phase: int) -> str:
        for arm in arms:
            if arm.segment_start <= bucket < arm.segment_start + arm.stages[phase]:
                return arm.name
        return BASELINE

    last = phases - 1
    counted, moved = [], []
    for phase in range(phases):
        here, taken = [], []
        for bucket in range(BUCKETS):
            then, now = arm_at(bucket, phase), arm_at(bucket, last)
            if then == now:
                here.append((bucket, then))
            elif then == BASELINE:
                joined = next(p for p in range(phase, phases) if arm_at(bucket, p) == now)
                taken.append((bucket, now, joined))
        counted.append(here)
        moved.append(taken)
    return counted, moved


def bulk_load(rollout, phase_starts: list[datetime], devices: int) -> dict:
    """COPY the exposures and per-device outcomes of `devices` devices; return what the
    analysis must count (per arm and stratum) and the load's figures.

    Devices enter over the phases (uniformly in time, from the start to a minute ago) and
    get a bucket that maps to the same arm then and under the current shares; a fraction
    `EXCLUDED` of them, exposed before the last advance, are in a bucket a challenger has
    taken since: half still in the baseline (not polled since; the analysis leaves them out
    by their bucket, outcome row or not), half moved to the challenger (no longer comparable,
    no outcome row).
    """
    import bisect
    import random

    import psycopg
    from django.db import connection
    from psycopg.types.json import Jsonb

    from rollout.arms import BASELINE

    arms = list(rollout.arms.order_by("position"))
    names = [BASELINE, *(a.name for a in arms)]
    lift = {name: 1.0 + 0.05 * index for index, name in enumerate(names)}
    counted_places, moved_places = placements(arms, len(phase_starts))
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=60)

    def moment(start: datetime, stop: datetime) -> datetime:
        return start + timedelta(seconds=rng.randrange(int((stop - start).total_seconds())))

    def phase_of(at: datetime) -> int:
        return bisect.bisect_right(phase_starts, at) - 1

    rng = random.Random(8362)
    excluded = round(devices * EXCLUDED) if len(phase_starts) > 1 else 0
    kinds = ["counted"] * (devices - excluded)
    kinds += ["moved range"] * (excluded // 2) + ["moved"] * (excluded - excluded // 2)
    rng.shuffle(kinds)
    expected = {name: {"n": 0, "reporting": 0, "converted": 0, "strata": {}} for name in names}
    tally = dict.fromkeys(("counted", "moved range", "moved"), 0)
    outcome_rows = 0
    settings = connection.settings_dict
    conninfo = f"{POSTGRES}/{settings['NAME']}"
    started_copy = time.perf_counter()
    with psycopg.connect(conninfo) as db:
        with (
            db.cursor() as cur,
            cur.copy(
                "COPY rollout_exposure (rollout_id, device_id, arm, bucket, sdk_version, "
                "first_exposed_at, arm_since, comparable, baseline_confirmed_at) FROM STDIN"
            ) as exposures,
        ):
            outcomes = []
            for i, kind in enumerate(kinds):
                tally[kind] += 1
                device = f"{rng.getrandbits(128):032x}"
                sdk = SDK_VERSIONS[i % 4 == 0]  # a quarter on 1.5.0
                if kind == "counted":
                    first = moment(phase_starts[0], end)
                    phase = phase_of(first)
                    bucket, arm = rng.choice(counted_places[phase])
                    since, comparable = first, True
                else:  # exposed before the last advance, in a bucket taken since
                    first = moment(phase_starts[0], phase_starts[-1])
                    phase = phase_of(first)
                    bucket, now_arm, joined = rng.choice(moved_places[phase])
                    if kind == "moved range":
                        arm, since, comparable = BASELINE, first, True
                    else:
                        arm, comparable = now_arm, False
                        since = moment(phase_starts[joined], end)
                exposures.write_row(
                    (rollout.pk, device, arm, bucket, sdk, first, since, comparable, None)
                )
                reports = comparable and rng.random() < REPORTING
                if reports:
                    outcomes.append((device, arm, since, bucket, kind == "counted"))
                if kind == "counted":
                    expected[arm]["n"] += 1
                    strata = expected[arm]["strata"]
                    strata[phase] = strata.get(phase, 0) + 1
                    expected[arm]["reporting"] += reports
        with (
            db.cursor() as cur,
            cur.copy(
                "COPY experiments_deviceoutcome (rollout_id, device_id, arm, arm_since, bucket, "
                "events, conversions, value_sum, model_errors, ran_assigned_model, "
                "outcome_counts, last_event_at) FROM STDIN"
            ) as copy,
        ):
            for device, arm, since, bucket, counts_in_analysis in outcomes:
                converted = rng.random() < CONVERSION * lift[arm]
                conversions = 1 + (rng.random() < 0.1) if converted else 0
                dismissed = rng.randrange(3)
                errors = 1 if rng.random() < 0.01 else 0
                counts = {}
                if conversions:
                    counts["Purchased"] = conversions
                if dismissed:
                    counts["Dismissed"] = dismissed
                value = round(sum(rng.choice((0.99, 4.99, 9.99)) for _ in range(conversions)), 2)
                events = conversions + dismissed + errors or 1
                last = since + timedelta(seconds=rng.randrange(3600))
                copy.write_row(
                    (rollout.pk, device, arm, since, bucket, events, conversions, value, errors,
                     rng.random() < 0.97, Jsonb(counts), last)
                )  # fmt: skip
                if counts_in_analysis:
                    expected[arm]["converted"] += conversions > 0
                outcome_rows += 1
        db.commit()
        copy_seconds = time.perf_counter() - started_copy
        db.autocommit = True
        started_analyze = time.perf_counter()
        for table in TABLES:
            db.execute(f"ANALYZE {table}")
        analyze_seconds = time.perf_counter() - started_analyze
        sizes = {
            table: db.execute(
                "SELECT pg_size_pretty(pg_total_relation_size(%s::regclass))", [table]
            ).fetchone()[0]
            for table in TABLES
        }
    return {
        "expected": expected,
        "kinds": tally,
        "reporting": outcome_rows,
        "copy_seconds": copy_seconds,
        "analyze_seconds": analyze_seconds,
        "sizes": sizes,
    }


def counts_check(analysis, expected: dict) -> list[str]:
    """Where the analysis' counts differ from what was loaded (per arm: n, reporting,
    converted; per arm and stratum: n)."""
    arms = analysis.inputs.get("arms", {})
    strata = analysis.inputs.get("strata", {})
    problems = []
    for name, loaded in expected.items():
        counted = arms.get(name, {})
        for key in ("n", "reporting", "converted"):
            if counted.get(key, 0) != loaded[key]:
                problems.append(
                    f"{name} {key}: analysed {counted.get(key, 0)}, loaded {loaded[key]}"
                )
        by_stratum = {int(k): v["n"] for k, v in strata.get(name, {}).items() if v["n"]}
        if by_stratum != loaded["strata"]:
            problems.append(f"{name} per stratum: analysed {by_stratum}, loaded {loaded['strata']}")
    return problems


def explain(queries: list[dict]) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of the selectors' queries, as the judge sent them."""
    from django.db import connection

    print("\n==> EXPLAIN (ANALYZE, BUFFERS) of the queries on the two large tables")
    with connection.cursor() as cursor:
        for query in queries:
            if not any(table in query["sql"] for table in TABLES):
                continue
            print(
                f"\n-- {float(query['time']) * 1000:.0f} ms in the last analysis:\n{query['sql']}"
            )
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + query["sql"])
            print("\n".join(row[0] for row in cursor.fetchall()))


def run_main(params: dict) -> None:
    """In the benchmark's Django process: seed, load, time the analysis."""
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from experiments.judge import rollout_analyze

    began = time.perf_counter()
    rollout = seed(params["challengers"])
    print(f"==> seeded in {time.perf_counter() - began:.1f} s: rollout {rollout.pk}, arms")
    for arm in rollout.arms.order_by("position"):
        print(f"    {arm.name}: share {arm.share / 100:g} %, segment {arm.segment_start}-"
              f"{arm.segment_end}, model {arm.model_version_id}")  # fmt: skip

    phase_starts = phases_backdate(rollout)
    print(
        f"    phases (start, advance, advance) began {', '.join(f'{s:%m-%d %H:%M}' for s in phase_starts)} UTC"
    )

    print(f"==> COPY of {params['devices']:,} exposures and their device outcomes")
    loaded = bulk_load(rollout, phase_starts, params["devices"])
    expected = loaded["expected"]
    print(
        f"    {sum(loaded['kinds'].values()):,} exposures and {loaded['reporting']:,} device "
        f"outcomes in {loaded['copy_seconds']:.1f} s; ANALYZE {loaded['analyze_seconds']:.1f} s; "
        f"sizes (with indexes) {loaded['sizes']}"
    )
    print(f"    exposures by kind: {loaded['kinds']}")
    for name, e in expected.items():
        print(f"    to count in {name}: {e['n']:,} (per stratum {dict(sorted(e['strata'].items()))}), "
              f"{e['reporting']:,} reporting, {e['converted']:,} converted")  # fmt: skip

    timings, analyses, queries = [], [], []
    for number in range(params["repeats"] + 1):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            analysis = rollout_analyze(rollout=rollout, act=False)
            timings.append(time.perf_counter() - started)
        analyses.append(analysis)
        queries = captured.captured_queries
        label = "first (warms imports)" if number == 0 else f"repeat {number}"
        slowest = sorted((float(q["time"]) * 1000 for q in queries), reverse=True)[:3]
        print(
            f"==> analysis {label}: {timings[-1] * 1000:.0f} ms, {len(queries)} queries; "
            f"slowest {', '.join(f'{ms:.0f} ms' for ms in slowest)}"
        )

    analysis = analyses[-1]
    counts = analysis.inputs["arms"]
    print(f"\n==> last analysis: decision {analysis.decision!r}, SRM p {analysis.srm_p_value}")
    print("| arm | exposed (n) | reporting | converted | errored | Dismissed label |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, c in sorted(counts.items(), key=lambda item: (item[0] != "baseline", item[0])):
        print(
            f"| {name} | {c['n']:,} | {c['reporting']:,} | {c['converted']:,} | "
            f"{c['errored']:,} | {c['labels'].get('Dismissed', 0):,} |"
        )
    total = sum(c["n"] for c in counts.values())
    for number, each in enumerate(analyses):
        problems = counts_check(each, expected)
        if problems:
            sys.exit(f"analysis {number} does not count what was loaded: {'; '.join(problems)}")
    print(
        f"    {total:,} devices counted, as loaded (per arm n, reporting, converted; per stratum "
        f"n), in every analysis; {sum(loaded['kinds'].values()) - total:,} left out"
    )

    repeats = timings[1:]
    median = statistics.median(repeats)
    print(
        f"\n==> rollout_analyze on {total:,} devices: first call {timings[0]:.3f} s; repeats "
        f"{', '.join(f'{t:.3f}' for t in repeats)} s; median {median:.3f} s, "
        f"min {min(repeats):.3f} s (target < {TARGET_SECONDS:g} s: "
        f"{'met' if median < TARGET_SECONDS else 'NOT met'})"
    )
    if median >= TARGET_SECONDS or params["explain"]:
        explain(queries)


# --------------------------------------------------------------------------- driver


def benchmark(args, tmp: Path) -> None:
    print(f"machine: {machine()}")
    env = bench_env(
        tmp,
        database=DATABASE,
        redis_url=REDIS_URL,
        broker_url=BROKER_URL,
    )
    print(f"==> database {DATABASE} (re)created, Redis {REDIS_URL} flushed, migrating")
    database_recreate(DATABASE)
    redis_flush(REDIS_URL)
    run_checked([sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], env, "migrate")
    params = {
        "devices": args.devices,
        "challengers": args.challengers,
        "repeats": args.repeats,
        "explain": args.explain,
    }
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--run", json.dumps(params)],
        cwd=ROOT,
        env=env,
    )
    if done.returncode != 0:
        sys.exit(f"the benchmark process failed ({done.returncode})")
    print(f"finished {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--devices", type=int, default=1_000_000, help="exposed devices (1M)")
    parser.add_argument("--challengers", type=int, default=3, help="challenger arms (3)")
    parser.add_argument("--repeats", type=int, default=3, help="timed analyses after the first")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN even if the target is met")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_main(json.loads(args.run))
        return
    if args.devices < 1 or args.challengers < 1 or args.repeats < 1:
        parser.error("--devices, --challengers and --repeats must be at least 1")

    in_throwaway_installation("analysis", DATABASE, REDIS_URL, lambda tmp: benchmark(args, tmp))


if __name__ == "__main__":
    main()
