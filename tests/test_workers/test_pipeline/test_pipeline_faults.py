"""Workers killed, added and removed mid-run: no row lost, none doubled, order kept."""

from __future__ import annotations

import datetime as dt
import random
import re
import signal
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from finpipe_core.kafka import consumer_config
from tests.fixtures.pipeline import Pipeline, assert_indicators_exact, table_counts
from tests.fixtures.tcp_proxy import TcpProxy
from workers.sources.synthetic import SyntheticSource

pytestmark = [pytest.mark.integration, pytest.mark.slow]

D = dt.date


def _yearly_tasks(symbols: list[str], first_year: int, years: int):
    """Chronological one-year tasks per symbol (so order problems would show)."""
    return [
        (s, D(y, 1, 1), D(y, 12, 31))
        for s in symbols
        for y in range(first_year, first_year + years)
    ]


def _processed_bars(pipe: Pipeline) -> int:
    conn = pipe.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM prices")
        n = cur.fetchone()[0]
    conn.close()
    return n


def _assert_exact_and_ordered(pipe: Pipeline, tasks) -> None:
    conn = pipe.connect()
    src = SyntheticSource()
    symbols = sorted({s for s, _, _ in tasks})
    total = 0
    for symbol in symbols:
        mine = [t for t in tasks if t[0] == symbol]
        expected = len(src.fetch(symbol, min(t[1] for t in mine), max(t[2] for t in mine)))
        assert assert_indicators_exact(conn, symbol) == expected
        total += expected
    assert table_counts(conn) == {"prices": total, "indicators": total}
    with conn.cursor() as cur:
        # Per symbol, tasks finished in the order they were sent (their start dates).
        cur.execute(
            "SELECT symbol, array_agg(start_date ORDER BY completed_at) FROM tasks GROUP BY symbol"
        )
        for symbol, starts in cur.fetchall():
            assert starts == sorted(starts), f"{symbol} processed out of order: {starts}"
    conn.close()


def test_sigkill_agent_and_processor_repeatedly(pipeline_factory):
    rng = random.Random(20261125)
    pipe = pipeline_factory(source="synthetic", bars_per_message=40)
    tasks = _yearly_tasks([f"KIL{i}" for i in range(12)], 2008, 3)  # ~9,000 bars
    agent, processor = pipe.start("agent"), pipe.start("processor")
    ids = pipe.send_tasks(tasks)
    in_flight = 0
    for kill in range(3):
        if kill == 0:  # the first kill as soon as bars flow: mid-work however fast the stack is
            while _processed_bars(pipe) == 0:
                time.sleep(0.05)
        else:
            time.sleep(rng.uniform(1.0, 4.0))
        victim = rng.choice(["agent", "processor", "both"])
        in_flight += _unfinished(pipe, ids) > 0  # the kill interrupted work
        if victim in ("agent", "both"):
            agent.kill(signal.SIGKILL)
            agent = pipe.start("agent")
        if victim in ("processor", "both"):
            processor.kill(signal.SIGKILL)
            processor = pipe.start("processor")
    pipe.wait_tasks(ids, timeout=240)
    _assert_exact_and_ordered(pipe, tasks)
    assert in_flight >= 1, "every kill came after the work was done: nothing was tested"


def _unfinished(pipe: Pipeline, ids: list[str]) -> int:
    conn = pipe.connect()
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM tasks WHERE task_id = ANY(%s) AND status IN "
            "('done', 'no_data', 'failed')",
            (ids,),
        )
        done = cur.fetchone()[0]
    conn.close()
    return len(ids) - done


def test_workers_join_and_leave_mid_run(pipeline_factory):
    pipe = pipeline_factory(source="synthetic", bars_per_message=40)
    tasks = _yearly_tasks([f"DYN{i}" for i in range(16)], 2006, 3)
    first_agent, first_processor = pipe.start("agent"), pipe.start("processor")
    ids = pipe.send_tasks(tasks)

    deadline = time.monotonic() + 60
    while _processed_bars(pipe) < 1000 and time.monotonic() < deadline:
        time.sleep(0.3)
    # Partitions are redistributed to the newcomers...
    pipe.start("agent")
    pipe.start("processor")
    time.sleep(6)
    # ...and taken back when one of each leaves gracefully.
    assert first_agent.stop() == 0
    assert first_processor.stop() == 0
    pipe.wait_tasks(ids, timeout=240)
    _assert_exact_and_ordered(pipe, tasks)
    second = [w for w in pipe.workers if w.kind == "processor"][1]
    assert re.search(r"assigned \[\(\d+", second.log.read_text()), (
        "the second processor never got partitions"
    )


def test_processor_loses_partitions_during_a_database_outage(pipeline_factory):
    """Processor A holds a batch it cannot commit (its database connection is cut) while a
    second processor B takes the partitions of that batch and applies their messages; when
    A's database comes back, A must not apply what B applied (nor move B's offsets back)."""
    pipe = pipeline_factory(source="synthetic", bars_per_message=60)
    s = pipe.settings
    proxy = TcpProxy(s.pg_host, s.pg_port)
    try:
        agent = pipe.start("agent")
        # Static members "a" and "b": the round-robin assignment orders members by id, so
        # once B joins, A keeps the even partitions and B takes the odd ones.
        a = pipe.start("processor", slot="a", FINPIPE_PG_PORT=str(proxy.port))
        first = _yearly_tasks([f"OUT{i}" for i in range(24)], 2010, 1)
        ids = pipe.send_tasks(first)
        pipe.wait_tasks(ids, timeout=120)
        # Only symbols of odd partitions get more bars: whatever part of them A's next poll
        # takes, it is a batch of partitions B will take.
        odd = sorted(sym for sym, p in _partitions_of_symbols(pipe).items() if p % 2)
        assert odd, "no symbol landed on an odd partition"
        proxy.cut()
        later = _yearly_tasks(odd, 2011, 2)
        ids += pipe.send_tasks(later)
        wait_log(a, "batch not committed")  # A retries, polling, with the batch in hand
        b = pipe.start("processor", slot="b")
        wait_log(a, "revoked partitions=[", timeout=60)
        wait_log(b, "assigned [(", timeout=60)
        taken = {int(p) for p in re.findall(r"\((\d+), -?\d+\)", b.log.read_text())}
        assert taken and all(p % 2 for p in taken), f"B was assigned {sorted(taken)}"
        # B applies the messages of the partitions it took over while A still waits.
        deadline = time.monotonic() + 60
        while _done_by_partition_owner(pipe, b) == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        proxy.restore()
        pipe.wait_tasks(ids, timeout=180)
        agent.stop()
    finally:
        proxy.close()
    _assert_exact_and_ordered(pipe, first + later)
    dropped = sum(
        int(n)
        for n in re.findall(
            r"dropped (\d+) messages of partitions no longer "
            r"owned",
            a.log.read_text(),
        )
    )
    assert dropped > 0, "A's retry never met a revoked partition: the fault did not happen"


def _partitions_of_symbols(pipe: Pipeline) -> dict[str, int]:
    """The data topic's partition of each symbol stored so far, read from the topic."""
    s = pipe.settings
    consumer = Consumer(consumer_config(s, f"{s.processor_group}-reader"))
    found: dict[str, int] = {}
    try:
        topic = consumer.list_topics(s.data_topic, timeout=10).topics[s.data_topic]
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(s.data_topic, p), timeout=5)[1]
            for p in topic.partitions
        }
        consumer.assign([TopicPartition(s.data_topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            positions = consumer.position([TopicPartition(s.data_topic, p) for p in ends])
            if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in positions):
                break
            for m in consumer.consume(500, timeout=0.5):
                if m.error() is None:
                    found[m.key().decode()] = m.partition()
    finally:
        consumer.close()
    return found


def wait_log(worker, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in worker.log.read_text(errors="replace"):
        worker.assert_alive_or_stopped()
        assert time.monotonic() < deadline, f"{worker.kind}: {text!r} not logged"
        time.sleep(0.1)


def _done_by_partition_owner(pipe: Pipeline, worker) -> int:
    """Bars stored so far by ``worker`` (its log's batch lines are not needed: the offsets of
    the partitions it was assigned have moved in PostgreSQL)."""
    owned = [int(p) for p in re.findall(r"\((\d+), -?\d+\)", worker.log.read_text())]
    conn = pipe.connect()
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM consumer_offsets WHERE group_id = %s AND "
            "partition = ANY(%s) AND updated_at > now() - interval '60 seconds'",
            (pipe.settings.processor_group, owned),
        )
        n = cur.fetchone()[0]
    conn.close()
    return n
