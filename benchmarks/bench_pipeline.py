"""End-to-end benchmark: a synthetic backfill through the real broker and database.

In one run, on the same data:

1. finpipe: one agent and one processor (subprocesses, as deployed) fed yearly tasks for
   SYMBOLS x YEARS of synthetic bars; bars/s from the first task sent to the last task done.
2. naive baseline: one process that fetches, computes pandas-ta-classic's default indicators
   and upserts row by row (on a subset of symbols; its rate is per bar, so it compares).
3. raw COPY: the same price and indicator rows COPYed into empty tables (the ceiling).
4. one new day for DAILY_SYMBOLS symbols whose state exists: seconds from sending the tasks
   to the last one done.

    .venv/bin/python benchmarks/bench_pipeline.py                   # 500 x 10 y, 5,000 daily
    .venv/bin/python benchmarks/bench_pipeline.py --symbols 50 --years 2 --daily-symbols 500

Needs the local stack (`make up`). Uses private topics and a scratch database, dropped after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from psycopg2 import sql

from finpipe import stack
from finpipe.stack.postgres import PostgresCluster
from workers import contracts
from workers.calendar import trading_days
from workers.db import apply_migrations, connect
from workers.kafka import producer_config
from workers.settings import Settings, get_settings
from workers.sources.synthetic import SyntheticSource

REPO = Path(__file__).resolve().parents[1]


def private_settings(base: Settings) -> Settings:
    tag = uuid.uuid4().hex[:8]
    settings = base.model_copy(update={
        "tasks_topic": f"bench-tasks-{tag}", "data_topic": f"bench-data-{tag}",
        "dlq_topic": f"bench-dlq-{tag}", "agent_group": f"bench-agents-{tag}",
        "processor_group": f"bench-processors-{tag}", "pg_database": f"bench_{tag}",
        "source": "synthetic",
    })
    stack.ensure_topics(settings, [settings.tasks_topic, settings.data_topic, settings.dlq_topic])
    admin = PostgresCluster(base).admin_connection()
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(settings.pg_database), sql.Identifier(base.pg_user)))
    admin.close()
    apply_migrations(settings)
    return settings


def drop_private(base: Settings, settings: Settings) -> None:
    admin = PostgresCluster(base).admin_connection()
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(settings.pg_database)))
    admin.close()
    topics = [settings.tasks_topic, settings.data_topic, settings.dlq_topic]
    for f in AdminClient(base.kafka_client_config()).delete_topics(
        topics, operation_timeout=30
    ).values():
        f.result()


def start_worker(settings: Settings, kind: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINPIPE_")}
    names = settings.env_var_names()
    for field in ("tasks_topic", "data_topic", "dlq_topic", "agent_group", "processor_group",
                  "pg_database", "source", "kafka_bootstrap_servers", "pg_port"):
        env[names[field]] = str(getattr(settings, field))
    env[names["health_port"]] = "0"
    env[names["metrics_port"]] = "0"
    env["FINPIPE_LOG_LEVEL"] = os.environ.get("FINPIPE_LOG_LEVEL", "INFO")
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", f"workers.{kind}"], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def send_tasks(settings: Settings, tasks: list[tuple[str, dt.date, dt.date]]) -> list[str]:
    producer = Producer(producer_config(settings))
    ids = []
    for symbol, start, end in tasks:
        task_id = contracts.make_task_id(symbol, start, end)
        producer.produce(settings.tasks_topic, key=symbol.encode(), value=contracts.encode(
            contracts.FetchTask(schema_version=1, task_id=task_id, symbol=symbol, start=start,
                                end=end, requested_by="bench")))
        producer.poll(0)
        ids.append(task_id)
    producer.flush(60)
    return ids


def wait_done(settings: Settings, ids: list[str], timeout: float) -> None:
    conn = connect(settings)
    conn.autocommit = True
    deadline = time.monotonic() + timeout
    with conn.cursor() as cur:
        while True:
            cur.execute("SELECT count(*) FROM tasks WHERE task_id = ANY(%s) AND status IN "
                        "('done', 'no_data', 'failed')", (ids,))
            if cur.fetchone()[0] == len(ids):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("benchmark tasks did not finish")
            time.sleep(0.2)
    conn.close()


def count(settings: Settings, table: str) -> int:
    conn = connect(settings)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        n = cur.fetchone()[0]
    conn.close()
    return n


def raw_copy_rate(settings: Settings) -> float:
    """Bars/s when the finished price and indicator rows are only COPYed into empty tables."""
    conn = connect(settings)
    buffers = {}
    with conn.cursor() as cur:
        for table in ("prices", "indicators"):
            buffers[table] = io.StringIO()
            cur.copy_expert(f"COPY {table} TO STDOUT", buffers[table])
            cur.execute(f"CREATE TEMP TABLE copy_{table} (LIKE {table} INCLUDING ALL)")
        bars = count(settings, "prices")
        t0 = time.perf_counter()
        for table, buf in buffers.items():
            buf.seek(0)
            cur.copy_expert(f"COPY copy_{table} FROM STDIN", buf)
        conn.commit()
        elapsed = time.perf_counter() - t0
    conn.close()
    return bars / elapsed


def naive_rate(settings: Settings, symbols: list[str], start: dt.date, end: dt.date) -> float:
    """Bars/s of fetch + pandas-ta-classic defaults + row-by-row upserts in one process."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pandas as pd
        import pandas_ta_classic  # noqa: F401  (registers the .ta accessor)
    source = SyntheticSource()
    conn = connect(settings)
    bars_done = 0
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE naive_prices (LIKE prices INCLUDING ALL)")
        cur.execute("CREATE TEMP TABLE naive_indicators (LIKE indicators INCLUDING ALL)")
        for symbol in symbols:
            raw = source.fetch(symbol, start, end)
            df = pd.DataFrame({"open": raw.open, "high": raw.high, "low": raw.low,
                               "close": raw.close, "volume": raw.volume}, index=raw.dates)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ind = pd.concat([
                    df.ta.rsi(length=14), df.ta.macd(), df.ta.sma(length=20),
                    df.ta.sma(length=50), df.ta.sma(length=200), df.ta.ema(length=12),
                    df.ta.ema(length=26), df.ta.ema(length=50), df.ta.bbands(length=20).iloc[:, :3],
                    df.ta.atr(length=14), df.ta.obv(), df.ta.stoch(), df.ta.adx().iloc[:, :1],
                ], axis=1)
            for i, day in enumerate(raw.dates):
                cur.execute(
                    "INSERT INTO naive_prices (symbol, date, open, high, low, close, adj_close, "
                    "volume) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (symbol, date) DO "
                    "UPDATE SET close = EXCLUDED.close",
                    (symbol, day, float(raw.open[i]), float(raw.high[i]), float(raw.low[i]),
                     float(raw.close[i]), float(raw.adj_close[i]), float(raw.volume[i])))
                values = [None if v != v else float(v) for v in ind.iloc[i].tolist()]
                cur.execute(
                    "INSERT INTO naive_indicators VALUES (%s,%s," + ",".join(["%s"] * 18) + ") "
                    "ON CONFLICT (symbol, date) DO UPDATE SET rsi_14 = EXCLUDED.rsi_14",
                    (symbol, day, *values))
            conn.commit()
            bars_done += len(raw.dates)
    conn.close()
    return bars_done / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--naive-symbols", type=int, default=10)
    parser.add_argument("--daily-symbols", type=int, default=5000)
    args = parser.parse_args()

    base = get_settings()
    stack.up(base)
    settings = private_settings(base)
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"finpipe-bench-{uuid.uuid4().hex[:6]}"
    logs.mkdir()
    workers = [start_worker(settings, "agent", logs / "agent.log"),
               start_worker(settings, "processor", logs / "processor.log")]
    try:
        first_year = 2014 - args.years
        symbols = [f"B{i:04d}" for i in range(args.symbols)]
        tasks = [(s, dt.date(y, 1, 1), dt.date(y, 12, 31)) for s in symbols
                 for y in range(first_year, 2014)]
        time.sleep(3)  # let both workers join their groups
        t0 = time.perf_counter()
        wait_done(settings, send_tasks(settings, tasks), timeout=3600)
        elapsed = time.perf_counter() - t0
        bars = count(settings, "prices")
        e2e = bars / elapsed
        print(f"finpipe end to end: {bars:,} bars in {elapsed:.1f} s = {e2e:,.0f} bars/s "
              f"({args.symbols} symbols x {args.years} years, 1 agent + 1 processor)")
        copy = raw_copy_rate(settings)
        print(f"raw COPY of the same rows: {copy:,.0f} bars/s (price + indicator row per bar)")
        naive = naive_rate(settings, symbols[: args.naive_symbols], dt.date(first_year, 1, 1),
                           dt.date(2013, 12, 31))
        print(f"naive single process ({args.naive_symbols} symbols): {naive:,.0f} bars/s")
        print(f"ratios: finpipe / naive = {e2e / naive:.1f}x (target >= 10x); "
              f"finpipe / raw COPY = {100 * e2e / copy:.0f}% (target >= 25%)")

        # One new day for many symbols with existing state: seed 60 sessions, then add one.
        days = trading_days(dt.date(2014, 1, 1), dt.date(2014, 6, 30))
        daily = [f"D{i:05d}" for i in range(args.daily_symbols)]
        seed = [(s, days[0], days[59]) for s in daily]
        wait_done(settings, send_tasks(settings, seed), timeout=3600)
        t0 = time.perf_counter()
        wait_done(settings, send_tasks(settings, [(s, days[60], days[60]) for s in daily]),
                  timeout=3600)
        print(f"one new day for {args.daily_symbols:,} symbols: "
              f"{time.perf_counter() - t0:.1f} s (target < 15 s)")
    finally:
        for w in workers:
            w.terminate()
            w.wait(60)
        drop_private(base, settings)
    print(f"worker logs: {logs}")


if __name__ == "__main__":
    main()
