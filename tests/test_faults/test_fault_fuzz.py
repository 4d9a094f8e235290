"""Fuzzing both topics with real workers: 10,000 generated messages on each (tests/test_faults/
fuzzgen.py, seeded), bad ones mixed with valid ones.

- No worker crashes.
- Every bad message is in the DLQ exactly once, with its error class and message, identified
  by the source topic/partition/offset headers (matched against the delivery reports).
- Valid messages around them are processed: their tasks done, prices equal to the source,
  indicators equal to TA-Lib.
- Valid-but-extreme messages are either stored or dead-lettered, never dropped silently, and
  never crash a worker.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections import Counter

import pytest
from confluent_kafka import Producer
from faultkit import assert_exact, read_topic, record_figures, wait_log
from fuzzgen import Fuzzed, Generator

from finpipe_core import contracts
from finpipe_core.calendar import trading_days
from finpipe_core.kafka import producer_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = int(os.environ.get("FAULT_FUZZ_SEED", "20261125"))
PER_TOPIC = 10_000
TIMEOUT_S = 150.0
DLQ_WAIT_S = 45.0


def _interleave(gen: Generator, ordered: list[Fuzzed], rest: list[Fuzzed]) -> list[Fuzzed]:
    """``rest`` shuffled, with ``ordered`` spread among it in its own order."""
    rng = gen.rng
    rng.shuffle(rest)
    total = len(ordered) + len(rest)
    slots = set(rng.sample(range(total), len(ordered)))
    good, other = iter(ordered), iter(rest)
    return [next(good) if i in slots else next(other) for i in range(total)]


def _produce(settings, topic: str, messages: list[Fuzzed]) -> list[tuple[int, int]]:
    """Produce in order; return each message's (partition, offset) from its delivery report."""
    producer = Producer(producer_config(settings, **{"linger.ms": 50}))
    where: list[tuple[int, int] | None] = [None] * len(messages)

    def report(i: int):
        def on_delivery(err, msg) -> None:
            assert err is None, err
            where[i] = (msg.partition(), msg.offset())

        return on_delivery

    for i, m in enumerate(messages):
        while True:
            try:
                producer.produce(topic, key=m.key, value=m.value, on_delivery=report(i))
                break
            except BufferError:
                producer.poll(0.2)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert all(w is not None for w in where)
    return where  # type: ignore[return-value]


def _dead_letters(settings) -> dict[tuple[str, int, int], list[dict]]:
    out: dict[tuple[str, int, int], list[dict]] = {}
    for msg in read_topic(settings, settings.dlq_topic):
        h = contracts.parse_dlq_headers(msg.headers())
        source = (
            h.get(contracts.DLQ_HEADER_TOPIC),
            int(h.get(contracts.DLQ_HEADER_PARTITION, -1)),
            int(h.get(contracts.DLQ_HEADER_OFFSET, -1)),
        )
        out.setdefault(source, []).append(h)
    return out


def test_fuzzed_messages_on_both_topics(fault_pipelines):
    t_begin = time.monotonic()
    pipe = fault_pipelines()
    s = pipe.settings
    gen = Generator(SEED)

    # Tasks topic: 30 symbols x 40 weekly tasks, 50 extreme-but-valid tasks, the rest bad.
    good_tasks = gen.good_tasks([f"FZG{i:02d}" for i in range(30)], 40, dt.date(2011, 1, 3))
    edge_tasks = gen.edge_tasks(50)
    bad_tasks = [gen.bad_task() for _ in range(PER_TOPIC - len(good_tasks) - len(edge_tasks))]
    task_msgs = _interleave(gen, good_tasks, edge_tasks + bad_tasks)
    # Data topic: 20 symbols x 60 five-bar messages, 48 extreme-but-valid, the rest bad.
    base_days = trading_days(dt.date(2014, 1, 2), dt.date(2014, 12, 31))
    good_bars = gen.good_bars([f"FZD{i:02d}" for i in range(20)], 60, 5, dt.date(2012, 1, 3))
    edge_bars = gen.edge_bars(48, base_days)
    bad_bars = [gen.bad_bars(base_days) for _ in range(PER_TOPIC - len(good_bars) - len(edge_bars))]
    data_msgs = _interleave(gen, good_bars, edge_bars + bad_bars)
    assert len(task_msgs) == len(data_msgs) == PER_TOPIC
    largest = max(len(m.value or b"") for m in task_msgs + data_msgs)

    agent, processor = pipe.start("agent"), pipe.start("processor")
    wait_log(agent, "assigned partitions")
    wait_log(processor, "assigned [")
    # The manager stores a task before publishing it; processors only move stored tasks on.
    good_bar_tasks = {
        (
            b["task_id"],
            b["symbol"],
            dt.date.fromisoformat(b["start"]),
            dt.date.fromisoformat(b["end"]),
        )
        for b in (json.loads(m.value) for m in good_bars)
    }
    edge_task_rows = {
        (
            t["task_id"],
            t["symbol"],
            dt.date.fromisoformat(t["start"]),
            dt.date.fromisoformat(t["end"]),
        )
        for t in (json.loads(m.value) for m in edge_tasks)
    }
    pipe.register_tasks(
        [(contracts.make_task_id(*m.task), *m.task) for m in good_tasks]
        + sorted(good_bar_tasks)
        + sorted(edge_task_rows)
    )
    t_produce = time.monotonic()
    task_where = _produce(s, s.tasks_topic, task_msgs)
    data_where = _produce(s, s.data_topic, data_msgs)

    good_task_ids = [contracts.make_task_id(*m.task) for m in good_tasks]
    good_bar_ids = [f"fz-{m.symbol}-{i // 20}" for i, m in enumerate(good_bars)]
    pipe.wait_tasks(good_task_ids + good_bar_ids, timeout=TIMEOUT_S)

    bad_task_at = {
        (s.tasks_topic, *w) for m, w in zip(task_msgs, task_where, strict=True) if m.label == "bad"
    }
    bad_data_at = {
        (s.data_topic, *w) for m, w in zip(data_msgs, data_where, strict=True) if m.label == "bad"
    }
    edge_data_at = {
        (s.data_topic, *w): m
        for m, w in zip(data_msgs, data_where, strict=True)
        if m.label == "edge"
    }
    deadline = time.monotonic() + DLQ_WAIT_S  # the good tasks are done: little is left
    while True:
        dead = _dead_letters(s)
        if bad_task_at | bad_data_at <= set(dead) or time.monotonic() > deadline:
            break
        agent.assert_alive_or_stopped()
        processor.assert_alive_or_stopped()
        time.sleep(2)
    t_drained = time.monotonic()

    # Every bad message dead-lettered once, with a reason; nothing else from the tasks topic,
    # and from the data topic at most some extreme-but-valid messages.
    missing = (bad_task_at | bad_data_at) - set(dead)
    assert not missing, f"{len(missing)} bad messages not in the DLQ, e.g. {sorted(missing)[:5]}"
    repeated = {k: len(v) for k, v in dead.items() if len(v) > 1}
    assert not repeated, f"dead-lettered more than once: {list(repeated.items())[:5]}"
    for source, [headers] in dead.items():
        assert headers.get(contracts.DLQ_HEADER_ERROR_CLASS), source
        assert headers.get(contracts.DLQ_HEADER_ERROR), source
    from_tasks = {k for k in dead if k[0] == s.tasks_topic}
    from_data = {k for k in dead if k[0] == s.data_topic}
    assert from_tasks == bad_task_at
    assert from_data - bad_data_at <= set(edge_data_at), "a valid message was dead-lettered"
    edge_rejected = from_data - bad_data_at

    # Valid messages around them: exact.
    tasks_exact = assert_exact(pipe, [m.task for m in good_tasks], whole_db=False)
    bars_exact = assert_exact(pipe, [m.task for m in good_bars], good_bar_ids, whole_db=False)
    conn = pipe.connect()
    with conn.cursor() as cur:
        # Extreme-but-valid tasks were answered (bars or no_data), none dead-lettered.
        cur.execute("SELECT status, count(*) FROM tasks WHERE symbol LIKE 'FZET%%' GROUP BY status")
        edge_task_status = dict(cur.fetchall())
        # Extreme-but-valid bar messages: stored, or dead-lettered (their symbol parked).
        unaccounted = []
        for where, m in edge_data_at.items():
            cur.execute("SELECT count(*) FROM prices WHERE symbol = %s", (m.symbol,))
            if cur.fetchone()[0] == 0 and where not in edge_rejected:
                unaccounted.append(m.kind)
        cur.execute(
            "SELECT count(*) FROM symbol_state WHERE status = 'parked' "
            "AND (symbol LIKE 'FZG%%' OR symbol LIKE 'FZD%%')"
        )
        good_parked = cur.fetchone()[0]
    conn.close()
    assert sum(edge_task_status.values()) == len(edge_tasks)
    assert set(edge_task_status) <= {"done", "no_data"}, edge_task_status
    assert not unaccounted, f"extreme messages neither stored nor dead-lettered: {unaccounted}"
    assert good_parked == 0
    for w in (agent, processor):
        assert w.proc.poll() is None, f"{w.kind} exited with {w.proc.returncode}"

    kinds = Counter(m.kind for m in bad_tasks) + Counter(m.kind for m in bad_bars)
    rejected_kinds = sorted({edge_data_at[k].kind for k in edge_rejected})
    record_figures(
        "fuzz",
        seed=SEED,
        task_msgs=len(task_msgs),
        data_msgs=len(data_msgs),
        bad_tasks=len(bad_tasks),
        bad_data=len(bad_bars),
        dlq_from_tasks=len(from_tasks),
        dlq_from_data=len(from_data),
        bad_kinds=len(kinds),
        largest_msg_bytes=largest,
        good_bars=tasks_exact.stored_bars + bars_exact.stored_bars,
        edge_valid=len(edge_tasks) + len(edge_bars),
        edge_dead_lettered=f"{len(edge_rejected)}({','.join(rejected_kinds) or '-'})",
        produce_to_drained_s=t_drained - t_produce,
        wall_s=time.monotonic() - t_begin,
    )
