"""Messages go through the real local broker and come back with their keys and partitions."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from finpipe_core.kafka import consumer_config, producer_config
from finpipe_core.settings import Settings

pytestmark = pytest.mark.integration

SYMBOLS = ["AAPL", "MSFT", "IBM", "GOOG", "BRK-B", "^GSPC", "EURUSD=X", "7203.T"]


def _produce(settings: Settings, topic: str, records: list[tuple[str, bytes]]) -> dict:
    """Produce and return {value: (key, partition, offset)} from the delivery reports."""
    delivered: dict[bytes, tuple[str, int, int]] = {}
    errors: list = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered[msg.value()] = (msg.key().decode(), msg.partition(), msg.offset())

    producer = Producer(producer_config(settings))
    for key, value in records:
        producer.produce(topic, key=key.encode(), value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert not errors
    return delivered


def _consume_from(settings: Settings, group: str, starts: list[TopicPartition], count: int) -> list:
    consumer = Consumer(consumer_config(settings, group))
    consumer.assign(starts)
    got = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg)
            if len(got) >= count:
                break
    finally:
        consumer.close()
    return got


@pytest.mark.parametrize("topic_attr", ["tasks_topic", "data_topic", "dlq_topic"])
def test_each_finpipe_topic_round_trips_keys(
    local_stack: Settings, topic_factory, group_factory, topic_attr
):
    # A private topic made like the real one (settings' partitions): test messages on the
    # real topics would be consumed by any local workers and parked as garbage.
    settings = local_stack
    topic = topic_factory(getattr(settings, topic_attr), partitions=settings.topic_partitions)
    run = uuid.uuid4().hex
    records = [(s, f"{run}:{s}:{i}".encode()) for i in range(3) for s in SYMBOLS]
    delivered = _produce(settings, topic, records)
    assert len(delivered) == len(records)

    starts = [
        TopicPartition(topic, p, min(off for _, pp, off in delivered.values() if pp == p))
        for p in {p for _, p, _ in delivered.values()}
    ]
    got = [
        m
        for m in _consume_from(settings, group_factory(), starts, len(records))
        if m.value().startswith(run.encode())
    ]
    assert sorted((m.key().decode(), m.value()) for m in got) == sorted((k, v) for k, v in records)
    # Same key, same partition, every time; and messages of one key arrive in order.
    partitions_by_key: dict[str, set[int]] = {}
    for m in got:
        partitions_by_key.setdefault(m.key().decode(), set()).add(m.partition())
    assert all(len(p) == 1 for p in partitions_by_key.values())
    for symbol in SYMBOLS:
        seq = [int(m.value().rsplit(b":", 1)[1]) for m in got if m.key().decode() == symbol]
        assert seq == [0, 1, 2]


def test_key_partition_is_stable_across_producers(local_stack: Settings, topic_factory):
    topic = topic_factory(partitions=12)
    first = _produce(local_stack, topic, [(s, f"a:{s}".encode()) for s in SYMBOLS])
    second = _produce(local_stack, topic, [(s, f"b:{s}".encode()) for s in SYMBOLS])
    by_key_first = {k: p for k, p, _ in first.values()}
    by_key_second = {k: p for k, p, _ in second.values()}
    assert by_key_first == by_key_second
    # Spread over more than one partition (12 partitions, 8 keys): keys really are hashed.
    assert len(set(by_key_first.values())) > 1


def test_topics_have_configured_partitions(local_stack: Settings):
    from confluent_kafka.admin import AdminClient

    md = AdminClient(local_stack.kafka_client_config()).list_topics(timeout=10)
    for name in (local_stack.tasks_topic, local_stack.data_topic, local_stack.dlq_topic):
        assert len(md.topics[name].partitions) == local_stack.topic_partitions
