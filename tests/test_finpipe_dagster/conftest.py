"""Helpers for the Dagster tests: a per-test tasks topic, reading it back, finishing tasks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import psycopg2.extensions
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from workers.contracts import FetchTask, decode_task
from workers.kafka import consumer_config
from workers.settings import Settings

SAMPLE = ("AAPL", "FB", "GOOG", "IBM", "MSFT")
# A read of a small test topic finishes in well under a second; this bounds a broken one.
READ_TIMEOUT_S = 30.0


@pytest.fixture
def sample_universe(monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    """The manager uses the five-symbol sample universe (env, as a deployment would)."""
    monkeypatch.setenv("FINPIPE_UNIVERSE", "sample")
    return SAMPLE


@pytest.fixture
def tasks_topic(topic_factory: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh topic that FINPIPE_TASKS_TOPIC points the manager at."""
    topic = topic_factory("tasks")
    monkeypatch.setenv("FINPIPE_TASKS_TOPIC", topic)
    return topic


@pytest.fixture
def read_topic(local_stack: Settings) -> Iterator[Callable[[str], list[FetchTask]]]:
    """Reads every message of a topic (from the start to the current end) as FetchTasks."""
    consumers: list[Consumer] = []

    def read(topic: str) -> list[FetchTask]:
        consumer = Consumer(
            consumer_config(local_stack, "test-reader", **{"enable.partition.eof": False})
        )
        consumers.append(consumer)
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions}
        todo = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        tasks: list[FetchTask] = []
        deadline = dt.datetime.now() + dt.timedelta(seconds=READ_TIMEOUT_S)
        while todo:
            if dt.datetime.now() > deadline:
                raise AssertionError(f"timed out reading {topic}: partitions {todo} unfinished")
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            task = decode_task(msg.value())
            assert msg.key() == task.symbol.encode()
            tasks.append(task)
            if msg.offset() + 1 >= ends[msg.partition()]:
                todo.discard(msg.partition())
        return tasks

    yield read
    for consumer in consumers:
        consumer.close()


@pytest.fixture
def finish_tasks() -> Callable[..., int]:
    """Plays the processors' part: marks tasks finished (see ``_finish_tasks``)."""
    return _finish_tasks


def _finish_tasks(
    conn: psycopg2.extensions.connection,
    *,
    symbols: tuple[str, ...] | list[str] | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    status: str = "done",
    age: dt.timedelta = dt.timedelta(minutes=5),
) -> int:
    """Play the processors' part: mark matching tasks finished ``age`` ago."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE tasks SET status = %s, completed_at = now() - %s, updated_at = now() "
            "WHERE (%s::text[] IS NULL OR symbol = ANY(%s)) "
            "AND (%s::date IS NULL OR start_date >= %s) AND (%s::date IS NULL OR end_date <= %s) "
            "AND status NOT IN ('done', 'no_data')",
            (status, age, symbols and list(symbols), symbols and list(symbols),
             start, start, end, end),
        )
        return cur.rowcount
