"""Dagster's bookkeeping against the workers' time, side by side, in one run.

On a scratch finpipe database, private topics and a scratch Dagster database (a temporary
DAGSTER_HOME), for the sample universe (5 symbols) and the synthetic source:

1. manager run: ``dagster asset materialize --select stock_tasks --partition-range`` of DAYS
   partitions, as a user runs it. The first run emits the tasks; a second run of the same range
   (the outbox emits nothing) is Dagster alone; a one-partition run is the fixed start. Dagster
   seconds per 1,000 partitions = (range run - one-partition run) / DAYS x 1,000, with
   finpipe's event settings (``DAGSTER_EVENT_ENV``) and, on a shorter range, with Dagster's
   defaults (one write per event) as the baseline.
2. workers: one agent and one processor, started once the Dagster runs are over, fetch and
   store the tasks of run 1; seconds from their start to the last task finished.
3. completion reporting: the completion sensor reports every day of the range (two events a
   day) on the scratch instance: batched writes, against the daemon's way
   (``report_runless_asset_event`` per event) on a shorter range as the baseline.

    .venv/bin/python benchmarks/bench_dagster.py                 # 2,000 days
    .venv/bin/python benchmarks/bench_dagster.py --days 9216 --first-day 1990-01-02

Needs the local stack (`make up`). Everything it creates is dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pipeline import Scratch, start_worker
from psycopg2 import sql

from finpipe.stack.postgres import PostgresCluster
from finpipe.stack.settings import get_stack_settings
from finpipe_core.calendar import last_completed_session, trading_days
from finpipe_core.db import connect
from finpipe_core.settings import Settings
from finpipe_dagster.constants import DAGSTER_EVENT_ENV

REPO = Path(__file__).resolve().parents[1]
FIRST_DAY = dt.date(1996, 1, 2)  # the synthetic source's bars start in 1995 (no_data before)
DAGSTER_DEFAULTS = {
    "DAGSTER_EVENT_BATCH_SIZE": "0",
    "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "false",
}

DAGSTER_YAML = """\
storage:
  postgres:
    postgres_db:
      hostname: {host}
      port: {port}
      username: {user}
      db_name: {db}
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""


def scratch_dagster_home(base: Settings, home: Path) -> str:
    """A DAGSTER_HOME whose instance stores in a new scratch database; returns its name."""
    name = f"bench_dagster_{uuid.uuid4().hex[:8]}"
    admin = PostgresCluster(base).admin_connection()
    with admin.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(base.pg_user)
            )
        )
    admin.close()
    (home / "dagster.yaml").write_text(
        DAGSTER_YAML.format(host=base.pg_host, port=base.pg_port, user=base.pg_user, db=name)
    )
    return name


def drop_database(base: Settings, name: str) -> None:
    admin = PostgresCluster(base).admin_connection()
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.close()


def materialize(env: dict[str, str], first: dt.date, last: dt.date) -> float:
    """Seconds of one ``dagster asset materialize`` of stock_tasks over first..last."""
    selection = (
        ["--partition", first.isoformat()]
        if first == last
        else ["--partition-range", f"{first.isoformat()}...{last.isoformat()}"]
    )
    command = [
        sys.executable, "-m", "dagster", "asset", "materialize",
        "-m", "finpipe_dagster.definitions", "--select", "stock_tasks", *selection,
    ]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError("dagster run failed:\n" + (result.stdout + result.stderr)[-3000:])
    return seconds


def wait_tasks_finished(settings: Settings, timeout: float) -> None:
    conn = connect(settings)
    conn.autocommit = True
    deadline = time.monotonic() + timeout
    with conn.cursor() as cur:
        while True:
            cur.execute("SELECT count(*) FROM tasks WHERE status NOT IN ('done', 'no_data')")
            if cur.fetchone()[0] == 0:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("the workers did not finish the benchmark's tasks")
            time.sleep(0.2)
    conn.close()


def report_completion(
    settings: Settings, home: Path, first: dt.date, *, batched: bool, max_days: int | None = None
) -> tuple[int, float, int]:
    """Evaluate the completion sensor until it reports nothing new: (days, seconds, ticks).

    ``batched=False`` stores the same events one at a time, as the daemon stores a sensor's
    ``asset_events`` (the baseline); ``max_days`` stops after one tick of that many days."""
    import dagster as dg

    from finpipe_dagster.resources import PostgresResource
    from finpipe_dagster.sensors import completion

    os.environ["DAGSTER_HOME"] = str(home)
    instance = dg.DagsterInstance.get()
    options = {"max_dates": max_days} if max_days else {}
    sensor = completion.build_completion_sensor(settle_seconds=0, first_date=first, **options)
    written: list[dg.AssetMaterialization] = []
    original = completion.report_in_batches

    def write(inst: dg.DagsterInstance, events: list, **options: object) -> int:
        if batched:
            done = original(inst, events, **options)  # type: ignore[arg-type]
        else:
            for event in events:
                inst.report_runless_asset_event(event)
            done = len(events)
        written.extend(events[:done])
        return done

    completion.report_in_batches = write  # type: ignore[assignment]
    resources = {"postgres": PostgresResource(database=settings.pg_database, port=settings.pg_port)}
    cursor, ticks = None, 0
    started = time.monotonic()
    try:
        while True:
            with dg.build_sensor_context(
                cursor=cursor, instance=instance, resources=resources
            ) as context:
                result = sensor(context)
            ticks += 1
            cursor = result.cursor
            if result.skip_reason is not None or max_days:
                break
        seconds = time.monotonic() - started
    finally:
        completion.report_in_batches = original
        instance.dispose()
    return len(written) // 2, seconds, ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=2000, help="partitions of the range run")
    parser.add_argument(
        "--baseline-days", type=int, default=250, help="partitions for Dagster's defaults"
    )
    parser.add_argument(
        "--first-day", type=dt.date.fromisoformat, default=FIRST_DAY, help="first partition"
    )
    args = parser.parse_args()

    base = get_stack_settings()
    scratch = Scratch(base)
    settings = scratch.pipeline().model_copy(update={"universe": "sample"})
    sessions = trading_days(args.first_day, args.first_day + dt.timedelta(days=args.days * 2))
    first, last = sessions[0], sessions[args.days - 1]
    if last > last_completed_session(dt.datetime.now(dt.UTC)):
        parser.error(f"{args.days} sessions from {first} end after the last closed session")
    baseline_last = sessions[args.baseline_days - 1]
    workers: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="bench-dagster-") as tmp:
        home = Path(tmp)
        dagster_db = scratch_dagster_home(base, home)
        try:
            env = {
                **os.environ,
                **settings.to_env(include_secrets=True),
                "FINPIPE_PARTITIONS_START": first.isoformat(),
                "DAGSTER_HOME": str(home),
            }
            ours = {**env, **DAGSTER_EVENT_ENV}
            defaults = {**env, **DAGSTER_DEFAULTS}
            os.environ["FINPIPE_PARTITIONS_START"] = first.isoformat()

            emit_run = materialize(ours, first, last)
            one = materialize(ours, first, first)
            again = materialize(ours, first, last)
            baseline = materialize(defaults, first, baseline_last)
            # The workers alone on the machine: from their start to the last task stored.
            workers_started = time.monotonic()
            for kind in ("agent", "processor"):
                workers.append(start_worker(settings, kind, home / f"{kind}.log"))
            wait_tasks_finished(settings, timeout=1800)
            workers_seconds = time.monotonic() - workers_started

            days_b, completion_baseline, _ = report_completion(
                settings, home, first, batched=False, max_days=args.baseline_days
            )
            days, completion_seconds, ticks = report_completion(settings, home, first, batched=True)
        finally:
            for proc in workers:
                proc.terminate()
            for proc in workers:
                proc.wait(60)
            try:
                drop_database(base, dagster_db)
            finally:
                scratch.drop()

    per_k = lambda seconds, n: (seconds - one) / n * 1000  # noqa: E731
    print(f"\nDagster bookkeeping, sample universe (5 symbols), {args.days} partitions "
          f"{first}..{last}")  # fmt: skip
    rows = [
        ("manager run, fixed start (1 partition)", f"{one:.1f} s", ""),
        ("manager run, first (emits the tasks)", f"{emit_run:.1f} s",
         f"{per_k(emit_run, args.days):.1f} s"),
        ("manager run, again (Dagster only)", f"{again:.1f} s",
         f"{per_k(again, args.days):.1f} s"),
        (f"manager run, Dagster defaults ({args.baseline_days} partitions)",
         f"{baseline:.1f} s", f"{per_k(baseline, args.baseline_days):.1f} s"),
        (f"completion reporting, batched ({days} days in {ticks} ticks)",
         f"{completion_seconds:.1f} s", f"{completion_seconds / max(days, 1) * 1000:.1f} s"),
        (f"completion reporting, one write per event ({days_b} days)",
         f"{completion_baseline:.1f} s", f"{completion_baseline / max(days_b, 1) * 1000:.1f} s"),
        ("workers: start -> every task stored", f"{workers_seconds:.1f} s",
         f"{workers_seconds / args.days * 1000:.1f} s"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  {'seconds':>10}  {'per 1,000 days':>15}")
    for name, seconds, per in rows:
        print(f"{name:{width}}  {seconds:>10}  {per:>15}")


if __name__ == "__main__":
    main()
