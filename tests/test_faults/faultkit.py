"""Shared helpers of the fault tests: progress sampling, topic reading, exactness checks,
worker processes started from a wrapper script, and the one-line figures each test prints.

Imported by the fault tests as ``faultkit`` (pytest puts this directory on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from finpipe_core import contracts
from finpipe_core.db import connect
from finpipe_core.kafka import consumer_config
from finpipe_core.settings import Settings
from tests.fixtures.pipeline import REPO, Pipeline, WorkerProcess, assert_indicators_exact
from workers.sources.synthetic import SyntheticSource

HERE = Path(__file__).resolve().parent
# One line per test, copied into docs/reliability.md.
FIGURES_PREFIX = "FAULT-FIGURES"
FIGURES: list[str] = []

Task = tuple[str, dt.date, dt.date]


def yearly_tasks(symbols: Iterable[str], first_year: int, years: int) -> list[Task]:
    """One task per symbol and calendar year, in chronological order per symbol."""
    return [
        (s, dt.date(y, 1, 1), dt.date(y, 12, 31))
        for y in range(first_year, first_year + years)
        for s in symbols
    ]


def record_figures(test: str, **figures: object) -> str:
    """Print (and keep for the session summary) one line of measured figures."""
    parts = []
    for key, value in figures.items():
        parts.append(f"{key}={value:.1f}" if isinstance(value, float) else f"{key}={value}")
    line = f"{FIGURES_PREFIX} {test}: " + " ".join(parts)
    FIGURES.append(line)
    print("\n" + line, flush=True)
    return line


# --- progress ---------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # time.monotonic()
    bars: int | None  # sum of tasks.bars (None: the database did not answer)
    finished: int | None  # tasks done, no_data or failed


@dataclass
class ProgressSampler:
    """Samples the pipeline's progress from the tasks table in a background thread.

    Bars processed come from ``sum(tasks.bars)``: the processor writes it in the same
    transaction as the rows, and the tasks table stays small (cheap to poll).
    """

    settings: Settings
    interval: float = 0.2
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ProgressSampler:
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            bars = finished = None
            try:
                if conn is None or conn.closed:
                    conn = connect(self.settings, connect_timeout=2)
                    conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT coalesce(sum(bars), 0), count(*) FILTER (WHERE status "
                        "IN ('done', 'no_data', 'failed')) FROM tasks"
                    )
                    bars, finished = cur.fetchone()
            except Exception:  # the database may be down on purpose
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
            self.samples.append(Sample(time.monotonic(), bars, finished))
            self._stop.wait(self.interval)
        if conn is not None:
            conn.close()

    def latest_bars(self) -> int:
        for s in reversed(self.samples):
            if s.bars is not None:
                return s.bars
        return 0

    def wait_bars(self, at_least: int, timeout: float) -> float:
        """Wait until ``at_least`` bars are processed; return the time it was seen."""
        deadline = time.monotonic() + timeout
        while self.latest_bars() < at_least:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"only {self.latest_bars()} of {at_least} bars after {timeout:.0f} s"
                )
            time.sleep(0.05)
        return time.monotonic()

    def first_progress_after(self, t0: float) -> float | None:
        """Seconds from ``t0`` to the first sample with more bars than the last one before."""
        before = [s.bars for s in self.samples if s.t <= t0 and s.bars is not None]
        base = before[-1] if before else 0
        for s in self.samples:
            if s.t > t0 and s.bars is not None and s.bars > base:
                return s.t - t0
        return None

    def longest_stall(self, since: float, until: float, outstanding: int) -> float:
        """Longest time between ``since`` and ``until`` in which fewer than ``outstanding``
        bars were processed and the count did not move (no answer counts as no move)."""
        longest, last_change, last = 0.0, since, None
        for s in self.samples:
            if s.t < since or s.t > until:
                continue
            if s.bars is not None and s.bars != last:
                last, last_change = s.bars, s.t
            elif last is not None and last < outstanding:
                longest = max(longest, s.t - last_change)
        return longest


# --- Kafka topics -------------------------------------------------------------------------------


def read_topic(settings: Settings, topic: str, timeout: float = 60.0) -> list:
    """Every committed record of ``topic`` from the start to its current end (read_committed).

    Ends at each partition's EOF (the last stable offset), so transaction markers at the end
    of a partition do not keep the read waiting.
    """
    consumer = Consumer(
        consumer_config(
            settings,
            f"fault-reader-{uuid.uuid4().hex[:8]}",
            **{"enable.partition.eof": True, "fetch.max.bytes": 50 * 1024 * 1024},
        )
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        todo = set(partitions)
        records = []
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic}: partitions {sorted(todo)} unfinished")
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                error = msg.error()
                if error is None:
                    records.append(msg)
                elif error.code() == KafkaError._PARTITION_EOF:
                    todo.discard(msg.partition())
        return records
    finally:
        consumer.close()


def dlq_counts(settings: Settings) -> Counter:
    """Dead letters by source topic; a record without a reason header counts as ``None``."""
    counts: Counter = Counter()
    for msg in read_topic(settings, settings.dlq_topic):
        headers = contracts.parse_dlq_headers(msg.headers())
        has_reason = bool(headers.get(contracts.DLQ_HEADER_ERROR_CLASS)) and bool(
            headers.get(contracts.DLQ_HEADER_ERROR)
        )
        counts[headers.get(contracts.DLQ_HEADER_TOPIC) if has_reason else None] += 1
    return counts


def duplicate_deliveries(settings: Settings) -> tuple[int, int]:
    """(committed bar messages, how many of them repeat a (task_id, chunk) seen before)."""
    seen: Counter = Counter()
    total = 0
    for msg in read_topic(settings, settings.data_topic):
        try:
            value = msgspec.json.decode(msg.value() or b"")
            seen[(value.get("task_id"), value.get("chunk", 0))] += 1
            total += 1
        except (msgspec.DecodeError, AttributeError):
            continue
    return total, sum(n - 1 for n in seen.values())


# --- the final tables ---------------------------------------------------------------------------


@dataclass
class Exactness:
    expected_bars: int
    stored_bars: int
    lost: int
    doubled: int


def assert_exact(
    pipe: Pipeline, tasks: list[Task], task_ids: list[str] | None = None, whole_db: bool = True
) -> Exactness:
    """The tables equal a fault-free run: per symbol, every synthetic bar of its tasks is
    stored once with the source's values, every indicator equals TA-Lib over those prices,
    and every task is done once with exactly its own bar count.

    :param task_ids: the tasks' ids when they are not ``make_task_id(symbol, start, end)``.
    :param whole_db: the price table holds these symbols only (its row count is checked).
    """
    src = SyntheticSource()
    conn = pipe.connect()
    try:
        by_symbol: dict[str, list[Task]] = {}
        for t in tasks:
            by_symbol.setdefault(t[0], []).append(t)
        expected_total = 0
        lost = doubled = 0
        with conn.cursor() as cur:
            for symbol, mine in sorted(by_symbol.items()):
                bars = src.fetch(symbol, min(t[1] for t in mine), max(t[2] for t in mine))
                expected_total += len(bars)
                cur.execute(
                    "SELECT date, open, high, low, close, volume, splits FROM prices "
                    "WHERE symbol = %s ORDER BY date",
                    (symbol,),
                )
                rows = cur.fetchall()
                stored = {r[0]: r[1:] for r in rows}
                lost += sum(1 for d in bars.dates if d not in stored)
                doubled += len(rows) - len(stored)
                for i, day in enumerate(bars.dates):
                    if day in stored:
                        want = (
                            bars.open[i],
                            bars.high[i],
                            bars.low[i],
                            bars.close[i],
                            bars.volume[i],
                            bars.splits[i],
                        )
                        assert tuple(float(v) for v in stored[day]) == tuple(
                            float(v) for v in want
                        ), f"{symbol} {day}: stored values differ"
                assert len(rows) == len(bars), f"{symbol}: {len(rows)} rows, want {len(bars)}"
                assert assert_indicators_exact(conn, symbol) == len(bars)
            cur.execute(
                "SELECT count(*), count(DISTINCT (symbol, date)) FROM prices "
                "WHERE symbol = ANY(%s)",
                (list(by_symbol),),
            )
            total, distinct = cur.fetchone()
            doubled += total - distinct
            cur.execute(
                "SELECT count(*) FROM indicators WHERE symbol = ANY(%s)", (list(by_symbol),)
            )
            assert cur.fetchone()[0] == total
            # Each task done once, with the bars of its own range (not twice that).
            cur.execute("SELECT task_id, status, bars FROM tasks")
            got = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
        ids = dict(zip(task_ids or [contracts.make_task_id(*t) for t in tasks], tasks, strict=True))
        for task_id, (symbol, start, end) in ids.items():
            status, bars = got[task_id]
            want = len(src.fetch(symbol, start, end)) if start <= end else 0
            assert status == "done", f"{task_id}: {status}"
            if bars > want:
                doubled += bars - want
            assert bars == want, f"{task_id}: {bars} bars recorded, {want} expected"
        if whole_db:
            assert total == expected_total, f"{total} price rows, {expected_total} expected"
        return Exactness(expected_total, total, lost, doubled)
    finally:
        conn.close()


# --- worker processes ---------------------------------------------------------------------------


def start_script(pipe: Pipeline, script: str, name: str, **extra_env: str) -> WorkerProcess:
    """Run ``tests/test_faults/<script>`` like a worker (the Pipeline's FINPIPE_* env)."""
    n = sum(1 for w in pipe.workers if w.kind == name)
    log = pipe.log_dir / f"{name}-{n}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / script)],
            cwd=REPO,
            env=pipe.env(**extra_env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = WorkerProcess(name, proc, log)
    pipe.workers.append(worker)
    return worker


def wait_log(worker: WorkerProcess, text: str, timeout: float = 60.0, count: int = 1) -> float:
    """Wait until ``text`` appears ``count`` times in the worker's log; return seconds."""
    t0 = time.monotonic()
    while worker.log.read_text(errors="replace").count(text) < count:
        worker.assert_alive_or_stopped()
        if time.monotonic() - t0 > timeout:
            raise AssertionError(
                f"{worker.kind}: {text!r} not logged within {timeout:.0f} s; "
                f"log:\n{worker.log.read_text(errors='replace')[-3000:]}"
            )
        time.sleep(0.1)
    return time.monotonic() - t0


def log_count(workers: Iterable[WorkerProcess], text: str) -> int:
    return sum(w.log.read_text(errors="replace").count(text) for w in workers)


def dump(obj: object) -> str:
    return json.dumps(obj, default=str, sort_keys=True)


def env_flag(name: str, default: str) -> str:
    return os.environ.get(name, default)


# --- group membership: who owns which partition, when offsets move ---------------------------


_EVENT_RE = re.compile(r"\b(assigned|revoked|lost)(?: partitions=| )\[([^\]]*)\]")


def owned_partitions(log_text: str) -> set[int]:
    """The partitions a worker owned at the end of its log (incremental assign/revoke)."""
    owned: set[int] = set()
    for event, inner in _EVENT_RE.findall(log_text):
        numbers = re.findall(r"\((\d+),", inner) if "(" in inner else re.findall(r"\d+", inner)
        parts = {int(n) for n in numbers}
        owned = owned | parts if event == "assigned" else owned - parts
    return owned


class OffsetWatch:
    """Samples both groups' committed offsets every 0.1 s in a background thread."""

    def __init__(self, pipe: Pipeline) -> None:
        self.settings = pipe.settings
        self.history: dict[tuple[str, int], list[tuple[float, int]]] = {}
        self._stop = threading.Event()
        self._admin = AdminClient(self.settings.kafka_client_config())
        self._thread = threading.Thread(target=self._run, daemon=True, name="offsets")

    def __enter__(self) -> OffsetWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _record(self, kind: str, partition: int, offset: int, t: float) -> None:
        series = self.history.setdefault((kind, partition), [])
        if not series or series[-1][1] != offset:
            series.append((t, offset))

    def _run(self) -> None:
        conn = connect(self.settings)
        conn.autocommit = True
        s = self.settings
        while not self._stop.is_set():
            t = time.monotonic()
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT partition, next_offset FROM consumer_offsets WHERE "
                    "group_id = %s AND topic = %s",
                    (s.processor_group, s.data_topic),
                )
                for partition, offset in cur.fetchall():
                    self._record("processor", partition, offset, t)
            try:
                future = self._admin.list_consumer_group_offsets(
                    [ConsumerGroupTopicPartitions(s.agent_group)], request_timeout=5
                )[s.agent_group]
                for tp in future.result().topic_partitions:
                    if tp.offset >= 0:
                        self._record("agent", tp.partition, tp.offset, t)
            except Exception:  # the group may be between coordinators; sample again
                pass
            self._stop.wait(0.1)
        conn.close()

    def offset_at(self, kind: str, partition: int, t: float) -> int:
        before = [o for ts, o in self.history.get((kind, partition), []) if ts <= t]
        return before[-1] if before else 0

    def first_advance(self, kind: str, partition: int, t: float) -> float | None:
        """Seconds from ``t`` to the first commit on ``partition`` past its offset at ``t``."""
        base = self.offset_at(kind, partition, t)
        for ts, offset in self.history.get((kind, partition), []):
            if ts > t and offset > base:
                return ts - t
        return None


def summary(values: list[float]) -> str:
    """count, p50, p95, max and total of some durations, for a figures line."""
    if not values:
        return "none"
    values = sorted(values)
    return (
        f"n={len(values)} p50={statistics.median(values):.1f}s p95={p95(values):.1f}s "
        f"max={values[-1]:.1f}s total={sum(values):.0f}s"
    )


def p95(values: list[float]) -> float:
    """The nearest-rank 95th percentile (with 10 values: the largest)."""
    values = sorted(values)
    return values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]


_LOG_TIME_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def assignments(log_text: str) -> list[tuple[float, set[int]]]:
    """Each ``assigned`` line of a worker's log: (wall-clock time, partitions)."""
    out = []
    for line in log_text.splitlines():
        when = _LOG_TIME_RE.match(line)
        event = _EVENT_RE.search(line)
        if when and event and event.group(1) == "assigned":
            stamp = dt.datetime.strptime(when.group(1), "%Y-%m-%d %H:%M:%S,%f")
            inner = event.group(2)
            numbers = re.findall(r"\((\d+),", inner) if "(" in inner else re.findall(r"\d+", inner)
            out.append((stamp.timestamp(), {int(n) for n in numbers}))
    return out
