"""The 3-broker KRaft mode starts, replicates, and survives losing one broker."""

from __future__ import annotations

import signal
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from finpipe import stack
from finpipe_core.kafka import consumer_config, producer_config
from finpipe_core.settings import Settings
from tests.fixtures import kafka_nodes

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(settings: Settings):
    bootstrap, seconds = kafka_nodes.cluster_up(settings)
    print(f"3-broker cluster ready in {seconds:.1f} s")
    yield settings.model_copy(update={"kafka_bootstrap_servers": bootstrap})
    kafka_nodes.cluster_down(settings)


def _roundtrip(settings: Settings, topic: str, n: int) -> tuple[bool, tuple[int, int]]:
    producer = Producer(producer_config(settings))
    values = [f"{uuid.uuid4().hex}".encode() for _ in range(n)]
    for i, value in enumerate(values):
        producer.produce(topic, key=f"K{i % 7}".encode(), value=value)
    assert producer.flush(60) == 0
    consumer = Consumer(consumer_config(settings, f"g-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([topic])
    wanted = set(values)  # the topic also holds earlier rounds' messages
    got: list[bytes] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.value() in wanted:
                got.append(msg.value())
            if len(got) >= n:
                break
    finally:
        consumer.close()
    return sorted(got) == sorted(values), (len(got), n)


def test_three_brokers_replicate_and_tolerate_one_loss(cluster: Settings):
    admin = AdminClient(cluster.kafka_client_config())
    assert len(admin.list_topics(timeout=10).brokers) == 3
    topic = f"replicated-{uuid.uuid4().hex[:8]}"
    stack.ensure_topics(cluster, [topic], partitions=6, replication=3, min_insync=2)
    md = admin.list_topics(topic, timeout=10).topics[topic]
    assert all(len(p.replicas) == 3 for p in md.partitions.values())

    ok, counts = _roundtrip(cluster, topic, 300)
    assert ok, counts

    # One broker killed: acks=all with min.insync.replicas=2 still accepts writes.
    victim = kafka_nodes.kafka_cluster_nodes(cluster)[2]
    victim.process(cluster).signal(signal.SIGKILL)
    ok, counts = _roundtrip(cluster, topic, 300)
    assert ok, counts
