"""The workers' lag gauge on the real broker: it says how far a consumer is behind each of its
partitions, and forgets partitions it no longer holds."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from finpipe_core.kafka import consumer_config, producer_config
from finpipe_core.settings import Settings
from workers import runtime

pytestmark = pytest.mark.integration


def _gauge(worker: str, partition: int) -> float | None:
    for metric in runtime.LAG.collect():
        for sample in metric.samples:
            if sample.labels == {"worker": worker, "partition": str(partition)}:
                return sample.value
    return None


def test_lag_is_high_watermark_minus_position(
    local_stack: Settings, topic_factory, group_factory, monkeypatch
) -> None:
    monkeypatch.setattr(runtime, "LAG_REPORT_SECONDS", 0.0)
    topic = topic_factory("lag", partitions=1)
    producer = Producer(producer_config(local_stack))
    for i in range(10):
        producer.produce(topic, key=b"k", value=str(i).encode())
    assert producer.flush(30) == 0

    consumer = Consumer(consumer_config(local_stack, group_factory("lag")))
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 4 and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                got.append(msg)
        assert len(got) == 4
        reporter = runtime.LagReporter("lag-test")
        reporter.maybe_report(consumer)
        assert _gauge("lag-test", 0) == 6  # offsets 4..9 not read yet

        consumer.unassign()
        reporter.maybe_report(consumer)
        assert _gauge("lag-test", 0) is None  # a partition no longer held is not reported
    finally:
        consumer.close()
