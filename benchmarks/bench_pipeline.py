"""End-to-end benchmark: finpipe through the real broker and database, against baselines.

In one run, on the same synthetic bars (yearly tasks, SYMBOLS x YEARS):

1. finpipe: AGENTS agents and PROCESSORS processors (subprocesses, as deployed) on the local
   Kafka and PostgreSQL; bars/s from the first task sent to the last task done. The CPU
   seconds each part of the stack used in that window are printed (where the time goes).
2. baseline "seed design": one process that, per task (= per message), fetches the bars,
   recomputes pandas-ta-classic's default indicators over the symbol's history held in
   memory, and writes that task's price and indicator rows with one batched
   ``execute_values`` upsert each, one commit per task (on the first SEED_SYMBOLS symbols);
3. baseline "best single process": the same source, all of a symbol's tasks fetched, TA-Lib
   over the whole symbol (``compute_batch``), binary COPY into the same (empty) tables: what
   one machine does without Kafka;
4. raw COPY of the finished price and indicator rows into empty copies of the tables (the
   sink's limit);
5. one new day for DAILY_SYMBOLS symbols with stored state: tasks sent to the last task done,
   with the CPU seconds per part;
6. with ``--scale``: the backfill again on SCALE_SYMBOLS symbols with 1/1, 1/2, 2/1 and 2/2
   agents/processors.

Every database and topic it creates is private and dropped at the end; exits 0 on success.

    .venv/bin/python benchmarks/bench_pipeline.py                       # 500 x 10 y, 5,000 daily
    .venv/bin/python benchmarks/bench_pipeline.py --scale               # + scale-out runs
    .venv/bin/python benchmarks/bench_pipeline.py --symbols 50 --years 2 --daily-symbols 500
    .venv/bin/python benchmarks/bench_pipeline.py --symbols 5000 --years 20 --seed-symbols 0 \\
        --daily-symbols 0 --skip-baselines                              # the 25M-bar backfill

Needs the local stack (`make up`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psycopg2.extras
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from psycopg2 import sql

from finpipe import stack
from finpipe.stack.paths import state_dir
from finpipe.stack.postgres import PostgresCluster
from finpipe.stack.settings import StackSettings, get_stack_settings
from finpipe_core import contracts
from finpipe_core import tasks as task_rows
from finpipe_core.calendar import trading_days
from finpipe_core.db import apply_migrations, connect, connection
from finpipe_core.db.bulk import copy_rows, pack_rows
from finpipe_core.indicators import INDICATOR_COLUMNS, Bars, compute_batch, split_adjust
from finpipe_core.kafka import producer_config
from finpipe_core.settings import Settings
from workers.sources.synthetic import SyntheticSource

REPO = Path(__file__).resolve().parents[1]
PRICE_COLUMNS = ("open", "high", "low", "close", "adj_close", "volume", "dividends", "splits")
_TICKS = os.sysconf("SC_CLK_TCK")
LAST_YEAR = 2013


# -- private resources -----------------------------------------------------------------------
@dataclass
class Scratch:
    """Every topic and database this run created, so they are all dropped at the end."""

    base: Settings
    databases: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)

    def database(self, name: str) -> Settings:
        settings = self.base.model_copy(update={"pg_database": name})
        admin = PostgresCluster(self.base).admin_connection()
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(self.base.pg_user)
                )
            )
        admin.close()
        self.databases.append(name)
        apply_migrations(settings)
        return settings

    def pipeline(self) -> Settings:
        """Settings with private topics, consumer groups and database."""
        tag = uuid.uuid4().hex[:8]
        settings = self.database(f"bench_{tag}").model_copy(
            update={
                "tasks_topic": f"bench-tasks-{tag}",
                "data_topic": f"bench-data-{tag}",
                "dlq_topic": f"bench-dlq-{tag}",
                "agent_group": f"bench-agents-{tag}",
                "processor_group": f"bench-processors-{tag}",
                "source": "synthetic",
            }
        )
        topics = [settings.tasks_topic, settings.data_topic, settings.dlq_topic]
        self.topics += topics
        stack.ensure_topics(settings, topics)
        return settings

    def drop(self) -> None:
        admin = PostgresCluster(self.base).admin_connection()
        admin.autocommit = True
        with admin.cursor() as cur:
            for name in self.databases:
                cur.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        admin.close()
        if self.topics:
            # Keep the client referenced until every future is resolved: futures outliving
            # their AdminClient fail with KafkaException(_DESTROY).
            client = AdminClient(self.base.kafka_client_config())
            futures = client.delete_topics(self.topics, operation_timeout=30)
            for topic, future in futures.items():
                try:
                    future.result(timeout=60)
                except Exception as exc:  # report it, keep deleting the others
                    print(f"warning: topic {topic} not deleted: {exc}", file=sys.stderr)
            del client


# -- CPU accounting ----------------------------------------------------------------------------
def _proc_cpu(pid: int, children_reaped: bool = False) -> float:
    """CPU seconds of a process (all threads); with ``children_reaped``, plus its exited
    children's (PostgreSQL backends that ended are accounted to the postmaster)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children_reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


def _children(ppid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(stat[1]) == ppid:
                out.append(int(entry.name))
    return out


class CpuMeter:
    """CPU seconds used by the workers, this stack's PostgreSQL and its Kafka broker."""

    def __init__(self, base: StackSettings, workers: dict[str, list[subprocess.Popen]]) -> None:
        state = state_dir(base)
        self.postmaster = int((state / "postgres/data/postmaster.pid").read_text().split()[0])
        self.kafka = int((state / "run/kafka.pid").read_text().split()[0])
        self.workers = workers

    def sample(self) -> dict[str, float]:
        pg = _proc_cpu(self.postmaster, children_reaped=True) + sum(
            _proc_cpu(p) for p in _children(self.postmaster)
        )
        out = {k: sum(_proc_cpu(w.pid) for w in ws) for k, ws in self.workers.items()}
        out["postgres"] = pg
        out["kafka"] = _proc_cpu(self.kafka)
        out["this script"] = _proc_cpu(os.getpid())
        return out

    @staticmethod
    def report(before: dict[str, float], after: dict[str, float], wall: float) -> str:
        parts = [f"{k} {after[k] - before[k]:.1f}" for k in before]
        total = sum(after[k] - before[k] for k in before)
        return (
            f"CPU seconds in {wall:.1f} s wall: " + ", ".join(parts) + f" (sum {total:.1f}, "
            f"{total / wall:.2f} cores busy of {os.cpu_count()})"
        )


# -- finpipe -----------------------------------------------------------------------------------
def start_worker(settings: Settings, kind: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINPIPE_")}
    names = settings.env_var_names()
    for name in (
        "tasks_topic",
        "data_topic",
        "dlq_topic",
        "agent_group",
        "processor_group",
        "pg_database",
        "source",
        "kafka_bootstrap_servers",
        "pg_port",
    ):
        env[names[name]] = str(getattr(settings, name))
    env[names["health_port"]] = "0"
    env[names["metrics_port"]] = "0"
    env["FINPIPE_LOG_LEVEL"] = os.environ.get("FINPIPE_LOG_LEVEL", "WARNING")
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", f"workers.{kind}"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def send_tasks(settings: Settings, tasks: list[tuple[str, dt.date, dt.date]]) -> list[str]:
    """Store the tasks as the manager does (processors only move stored tasks on), then
    publish them."""
    with connection(settings) as conn, conn, conn.cursor() as cur:
        task_rows.insert_pending(
            cur, [(contracts.make_task_id(s, a, b), s, a, b, False, "bench") for s, a, b in tasks]
        )
    producer = Producer(producer_config(settings))
    ids = []
    for symbol, start, end in tasks:
        task_id = contracts.make_task_id(symbol, start, end)
        task = contracts.FetchTask(
            schema_version=1,
            task_id=task_id,
            symbol=symbol,
            start=start,
            end=end,
            requested_by="bench",
        )
        producer.produce(settings.tasks_topic, key=symbol.encode(), value=contracts.encode(task))
        producer.poll(0)
        ids.append(task_id)
    producer.flush(60)
    return ids


def wait_done(settings: Settings, ids: list[str], timeout: float) -> None:
    conn = connect(settings)
    conn.autocommit = True
    deadline = time.monotonic() + timeout
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE wanted (task_id text PRIMARY KEY)")
        psycopg2.extras.execute_values(cur, "INSERT INTO wanted VALUES %s", [(i,) for i in ids])
        while True:
            cur.execute(
                "SELECT count(*) FROM tasks JOIN wanted USING (task_id) "
                "WHERE status IN ('done', 'no_data', 'failed')"
            )
            if cur.fetchone()[0] == len(ids):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("benchmark tasks did not finish")
            # Each poll joins every wanted id: poll big runs less often, so the poll itself
            # takes no noticeable share of PostgreSQL.
            time.sleep(0.1 if len(ids) <= 10_000 else 2.0)
    conn.close()


def scalar(settings: Settings, query: str) -> int:
    conn = connect(settings)
    with conn.cursor() as cur:
        cur.execute(query)
        value = cur.fetchone()[0]
    conn.close()
    return int(value)


def yearly_tasks(symbols: list[str], years: int) -> list[tuple[str, dt.date, dt.date]]:
    first = LAST_YEAR + 1 - years
    return [
        (s, dt.date(y, 1, 1), dt.date(y, 12, 31))
        for s in symbols
        for y in range(first, LAST_YEAR + 1)
    ]


def peak_rss(procs: dict[str, list[subprocess.Popen]]) -> dict[str, int]:
    """Largest peak resident memory (VmHWM, bytes) of each kind of worker."""
    peak: dict[str, int] = {}
    for kind, ws in procs.items():
        for w in ws:
            for line in Path(f"/proc/{w.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak[kind] = max(peak.get(kind, 0), int(line.split()[1]) * 1024)
    return peak


@contextmanager
def workers_running(
    settings: Settings, logs: Path, agents: int, processors: int
) -> Iterator[dict[str, list[subprocess.Popen]]]:
    procs = {
        "agent": [start_worker(settings, "agent", logs / f"agent{i}.log") for i in range(agents)],
        "processor": [
            start_worker(settings, "processor", logs / f"processor{i}.log")
            for i in range(processors)
        ],
    }
    try:
        time.sleep(4)  # let the workers join their groups
        yield procs
    finally:
        for ws in procs.values():
            for w in ws:
                w.terminate()
        for ws in procs.values():
            for w in ws:
                try:
                    w.wait(60)
                except subprocess.TimeoutExpired:
                    w.kill()
                    w.wait()


def backfill(
    settings: Settings, procs: dict[str, list[subprocess.Popen]], symbols: list[str], years: int
) -> tuple[int, float, str]:
    meter = CpuMeter(settings, procs)
    before = meter.sample()
    t0 = time.perf_counter()
    wait_done(settings, send_tasks(settings, yearly_tasks(symbols, years)), timeout=7200)
    elapsed = time.perf_counter() - t0
    after = meter.sample()
    bars = scalar(settings, "SELECT count(*) FROM prices")
    return bars, elapsed, CpuMeter.report(before, after, elapsed)


# -- baselines -----------------------------------------------------------------------------------
def seed_design_rate(settings: Settings, symbols: list[str], years: int) -> tuple[int, float]:
    """The seed's design done competently: per task, fetch, pandas-ta-classic defaults over the
    symbol's history (kept in memory; no incremental state), one execute_values upsert per
    table and one commit per task."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pandas as pd
        import pandas_ta_classic  # noqa: F401  (registers the .ta accessor)
    source = SyntheticSource()
    conn = connect(settings)
    bars = 0
    price_sql = (
        f"INSERT INTO prices (symbol, date, {', '.join(PRICE_COLUMNS)}) VALUES %s "
        "ON CONFLICT (symbol, date) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in PRICE_COLUMNS)
    )
    ind_sql = (
        f"INSERT INTO indicators (symbol, date, {', '.join(INDICATOR_COLUMNS)}) VALUES %s "
        "ON CONFLICT (symbol, date) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in INDICATOR_COLUMNS)
    )
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        for symbol in symbols:
            history = None
            for _, start, end in yearly_tasks([symbol], years):
                raw = source.fetch(symbol, start, end)
                chunk = pd.DataFrame(
                    {c: getattr(raw, c) for c in PRICE_COLUMNS}, index=pd.Index(raw.dates)
                )
                history = chunk if history is None else pd.concat([history, chunk])
                ratios = history["splits"].to_numpy()
                ratios = np.where((ratios > 0) & (ratios != 1), ratios, 1.0)
                # A bar is divided by the product of the ratios of the splits after it.
                factors = np.append(np.cumprod(ratios[::-1])[::-1][1:], 1.0)
                df = history[["open", "high", "low", "close"]].div(factors, axis=0)
                df["volume"] = history["volume"].to_numpy() * factors
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ind = pd.concat(
                        [
                            df.ta.rsi(length=14),
                            df.ta.macd(),
                            df.ta.sma(length=20),
                            df.ta.sma(length=50),
                            df.ta.sma(length=200),
                            df.ta.ema(length=12),
                            df.ta.ema(length=26),
                            df.ta.ema(length=50),
                            df.ta.bbands(length=20).iloc[:, :3],
                            df.ta.atr(length=14),
                            df.ta.obv(),
                            df.ta.stoch(),
                            df.ta.adx().iloc[:, :1],
                        ],
                        axis=1,
                    ).iloc[-len(chunk) :]
                values = ind.to_numpy(dtype=np.float64)
                rows_i = [
                    (symbol, day, *[None if v != v else float(v) for v in row])
                    for day, row in zip(raw.dates, values.tolist(), strict=True)
                ]
                rows_p = [
                    (symbol, day, *row)
                    for day, row in zip(raw.dates, chunk.to_numpy().tolist(), strict=True)
                ]
                psycopg2.extras.execute_values(cur, price_sql, rows_p, page_size=1000)
                psycopg2.extras.execute_values(cur, ind_sql, rows_i, page_size=1000)
                conn.commit()
                bars += len(raw.dates)
    elapsed = time.perf_counter() - t0
    conn.close()
    return bars, elapsed


def talib_copy_rate(settings: Settings, symbols: list[str], years: int) -> tuple[int, float]:
    """The best single process: fetch every task of a symbol, TA-Lib over the whole symbol,
    binary COPY of its price and indicator rows (NaN as NULL) into the same empty tables."""
    source = SyntheticSource()
    conn = connect(settings)
    bars = 0
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        for symbol in symbols:
            parts = [source.fetch(symbol, s, e) for _, s, e in yearly_tasks([symbol], years)]
            dates = [d for p in parts for d in p.dates]
            cols = {c: np.concatenate([getattr(p, c) for p in parts]) for c in PRICE_COLUMNS}
            splits = [
                (d, s) for d, s in zip(dates, cols["splits"], strict=True) if s > 0 and s != 1
            ]
            adjusted = split_adjust(
                Bars(cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"]),
                dates,
                splits,
            )
            out = compute_batch(adjusted)
            prices = pack_rows(symbol, dates, [cols[c] for c in PRICE_COLUMNS])
            indicators = pack_rows(
                symbol, dates, [out[c] for c in INDICATOR_COLUMNS], nan_as_null=True
            )
            for table, columns, payload in (
                ("prices", PRICE_COLUMNS, prices),
                ("indicators", INDICATOR_COLUMNS, indicators),
            ):
                copy_rows(cur, table, ("symbol", "date", *columns), [payload])
            conn.commit()
            bars += len(dates)
    elapsed = time.perf_counter() - t0
    conn.close()
    return bars, elapsed


def export_rows(source: Settings) -> dict[str, io.BytesIO]:
    """finpipe's finished price and indicator rows in binary COPY format."""
    buffers = {}
    conn = connect(source)
    with conn.cursor() as cur:
        for table in ("prices", "indicators"):
            buffers[table] = io.BytesIO()
            cur.copy_expert(f"COPY {table} TO STDOUT WITH (FORMAT binary)", buffers[table])
    conn.close()
    return buffers


def raw_copy_rate(buffers: dict[str, io.BytesIO], target: Settings) -> tuple[int, float]:
    """Bars/s when finished rows are only COPYed (binary) into empty tables, one commit."""
    conn = connect(target)
    with conn.cursor() as cur:
        t0 = time.perf_counter()
        for table, buf in buffers.items():
            buf.seek(0)
            cur.copy_expert(f"COPY {table} FROM STDIN WITH (FORMAT binary)", buf)
        conn.commit()
        elapsed = time.perf_counter() - t0
        cur.execute("SELECT count(*) FROM prices")
        bars = cur.fetchone()[0]
    conn.close()
    return bars, elapsed


def bytes_per_bar(settings: Settings) -> str:
    conn = connect(settings)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_table_size('prices'), pg_indexes_size('prices'), "
            "pg_table_size('indicators'), pg_indexes_size('indicators'), "
            "(SELECT count(*) FROM prices)"
        )
        pt, pi, it, ii, n = cur.fetchone()
    conn.close()
    total = pt + pi + it + ii
    return (
        f"{total / n:.0f} B/bar (prices {pt / n:.0f} + index {pi / n:.0f}, indicators "
        f"{it / n:.0f} + index {ii / n:.0f}; {n:,} bars, {total / 2**20:.0f} MiB)"
    )


# -- daily update ---------------------------------------------------------------------------------
def daily_update(
    settings: Settings, procs: dict[str, list[subprocess.Popen]], n: int, profile: Path | None
) -> None:
    days = trading_days(dt.date(2014, 1, 1), dt.date(2014, 6, 30))
    daily = [f"D{i:05d}" for i in range(n)]
    wait_done(settings, send_tasks(settings, [(s, days[0], days[59]) for s in daily]), 3600)
    time.sleep(2)
    meter = CpuMeter(settings, procs)
    spies = start_profiles(procs, profile, "daily") if profile is not None else {}
    before = meter.sample()
    t0 = time.perf_counter()
    sent = send_tasks(settings, [(s, days[60], days[60]) for s in daily])
    t_sent = time.perf_counter() - t0
    wait_done(settings, sent, 3600)
    elapsed = time.perf_counter() - t0
    after = meter.sample()
    print(
        f"one new day for {n:,} symbols with stored state: {elapsed:.2f} s from the first task "
        f"sent to the last done (sending took {t_sent:.2f} s; target < 5 s)"
    )
    print("  " + CpuMeter.report(before, after, elapsed))
    stop_profiles(spies)


def start_profiles(
    procs: dict[str, list[subprocess.Popen]], directory: Path, phase: str
) -> dict[Path, subprocess.Popen]:
    """py-spy (raw collapsed stacks, on-CPU samples at 200 Hz) on the first agent and processor."""
    directory.mkdir(parents=True, exist_ok=True)
    spies = {}
    for kind in ("agent", "processor"):
        out = directory / f"{phase}-{kind}.txt"
        spies[out] = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(procs[kind][0].pid),
                "--format",
                "raw",
                "--rate",
                "200",
                "--output",
                str(out),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    time.sleep(2)
    return spies


def stop_profiles(spies: dict[Path, subprocess.Popen]) -> None:
    for out, spy in spies.items():
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
        summarize_profile(out.stem, out)


def summarize_profile(kind: str, path: Path, top: int = 16) -> None:
    """Share of a worker's on-CPU samples per function: inclusive (anywhere on the stack,
    frames common to every sample left out) and self (the leaf, where the CPU actually is)."""
    inclusive: dict[str, int] = {}
    leaf: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [f.split(" (")[0] for f in stack_text.split(";")]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
        leaf[frames[-1]] = leaf.get(frames[-1], 0) + n
    if not total:
        return
    print(f"  {kind} profile ({path}), {total} samples on CPU:")
    shown = [kv for kv in sorted(inclusive.items(), key=lambda kv: -kv[1]) if kv[1] < 0.95 * total]
    print("    inclusive: " + "; ".join(f"{f} {100 * n / total:.0f}%" for f, n in shown[:top]))
    mine = sorted(leaf.items(), key=lambda kv: -kv[1])[: top // 2]
    print("    self: " + "; ".join(f"{f} {100 * n / total:.0f}%" for f, n in mine))


def run_baselines(
    scratch: Scratch,
    settings: Settings,
    procs: dict[str, list[subprocess.Popen]],
    symbols: list[str],
    args: argparse.Namespace,
    e2e: float,
    cpu_total: float,
) -> None:
    """The three baselines on the same bars; each rate as a ratio of finpipe's, and the CPU
    seconds per million bars of each (less sensitive than wall time to a busy machine)."""
    rates: dict[str, tuple[int, float, float]] = {}
    meter = CpuMeter(scratch.base, procs)

    def run(name: str, fn, *fn_args) -> None:  # type: ignore[no-untyped-def]
        before = meter.sample()
        n, seconds = fn(*fn_args)
        after = meter.sample()
        cpu = sum(after[k] - before[k] for k in ("postgres", "this script"))
        rates[name] = (n, seconds, cpu)

    if args.seed_symbols:
        seed_db = scratch.database(f"bench_seed_{uuid.uuid4().hex[:6]}")
        run(
            "1 seed design (pandas-ta-classic, execute_values per task)",
            seed_design_rate,
            seed_db,
            symbols[: args.seed_symbols],
            args.years,
        )
    best = scratch.database(f"bench_best_{uuid.uuid4().hex[:6]}")
    run("2 best single process (TA-Lib, binary COPY)", talib_copy_rate, best, symbols, args.years)
    copy_db = scratch.database(f"bench_copy_{uuid.uuid4().hex[:6]}")
    run("3 raw binary COPY of finished rows", raw_copy_rate, export_rows(settings), copy_db)
    bars = scalar(settings, "SELECT count(*) FROM prices")
    print("baselines, same bars, same run (CPU = this script + PostgreSQL):")
    print(f"  finpipe: {e2e:,.0f} bars/s, {cpu_total / bars * 1e6:.1f} CPU s per 1M bars")
    for name, (n, seconds, cpu) in rates.items():
        rate = n / seconds
        print(
            f"  {name}: {n:,} bars in {seconds:.1f} s = {rate:,.0f} bars/s, "
            f"{cpu / n * 1e6:.1f} CPU s per 1M bars; finpipe = {e2e / rate:.2f}x its rate"
        )
    print("  PostgreSQL after plain COPY (baseline 2): " + bytes_per_bar(best))


# -- main -----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--agents", type=int, default=1)
    parser.add_argument("--processors", type=int, default=1)
    parser.add_argument(
        "--seed-symbols",
        type=int,
        default=50,
        help="symbols for the seed-design baseline (its rate is per bar)",
    )
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--daily-symbols", type=int, default=5000)
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="directory for py-spy profiles of the agent and processor (backfill, daily update)",
    )
    parser.add_argument("--scale", action="store_true", help="1/2 agents x 1/2 processors")
    parser.add_argument("--scale-symbols", type=int, default=200)
    args = parser.parse_args()

    base = get_stack_settings()
    stack.up(base)
    scratch = Scratch(base)
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"finpipe-bench-{uuid.uuid4().hex[:6]}"
    logs.mkdir()
    print(
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    try:
        symbols = [f"B{i:04d}" for i in range(args.symbols)]
        settings = scratch.pipeline()
        with workers_running(settings, logs, args.agents, args.processors) as procs:
            spies = start_profiles(procs, args.profile, "backfill") if args.profile else {}
            bars, elapsed, cpu = backfill(settings, procs, symbols, args.years)
            stop_profiles(spies)
            cpu_total = float(cpu.split("(sum ")[1].split(",")[0])
            peak = peak_rss(procs)
            e2e = bars / elapsed
            print(
                f"finpipe end to end: {bars:,} bars in {elapsed:.1f} s = {e2e:,.0f} bars/s "
                f"({args.symbols} symbols x {args.years} years, {args.agents} agent(s) + "
                f"{args.processors} processor(s))"
            )
            print("  " + cpu)
            print("  peak RSS: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in peak.items()))
            print("  PostgreSQL after the backfill: " + bytes_per_bar(settings))
            if not args.skip_baselines:
                run_baselines(scratch, settings, procs, symbols, args, e2e, cpu_total)
            if args.daily_symbols:
                daily_update(settings, procs, args.daily_symbols, args.profile)
        if args.scale:
            print(f"scale-out, {args.scale_symbols} symbols x {args.years} years each:")
            for agents, processors in ((1, 1), (1, 2), (2, 1), (2, 2)):
                s = scratch.pipeline()
                with workers_running(s, logs, agents, processors) as procs:
                    bars, elapsed, cpu = backfill(
                        s, procs, symbols[: args.scale_symbols], args.years
                    )
                    peak = peak_rss(procs)
                print(
                    f"  {agents} agent(s), {processors} processor(s): {bars:,} bars in "
                    f"{elapsed:.1f} s = {bars / elapsed:,.0f} bars/s; {cpu}; peak RSS "
                    + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in peak.items())
                )
    finally:
        scratch.drop()
    print(f"worker logs: {logs}")


if __name__ == "__main__":
    main()
