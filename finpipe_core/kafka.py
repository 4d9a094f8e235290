"""Kafka client configuration shared by every finpipe producer and consumer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from finpipe_core.settings import Settings

# The longest a graceful stop polls for its revocation to be served and its LeaveGroup sent
# (``leave_group``); it takes one or two polls, this bounds a wedged client.
LEAVE_TIMEOUT_SECONDS = 10.0


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """An idempotent, acks=all producer that partitions keys like the Java client.

    ``murmur2_random`` is the Java client's partitioner: the same symbol lands in the same
    partition whichever language produced it (librdkafka's default is CRC32-based).
    """
    config = settings.kafka_client_config()
    config.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "compression.type": "lz4",
            # Batch for up to 20 ms: tasks and bar chunks come in bursts.
            "linger.ms": 20,
        }
    )
    config.update(overrides)
    return config


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A consumer in ``group_id`` that commits offsets itself (never auto-commit).

    With ``settings.worker_id`` it is a static member (``group.instance.id``): a replacement
    with the same id takes the partitions of a killed predecessor back without waiting for
    its session to expire and without a rebalance.
    """
    config = settings.kafka_client_config()
    config.update(
        {
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # Eager, not cooperative-sticky: a cooperative move takes two rebalance rounds,
            # and a static member killed between them and restarted under its name rejoins
            # without a rebalance, so the partitions it had given up stayed unowned (seen in
            # tests/test_faults/test_chaos.py). An eager rebalance assigns every partition in
            # one round; it pauses all members for it, which only scaling events cause.
            "partition.assignment.strategy": "roundrobin",
            # Only read committed transactional output (the agents write in transactions).
            "isolation.level": "read_committed",
            # How fast a dead member's partitions move on (see Settings).
            "session.timeout.ms": settings.kafka_session_timeout_ms,
            "heartbeat.interval.ms": settings.kafka_heartbeat_interval_ms,
            "max.poll.interval.ms": settings.kafka_max_poll_interval_ms,
        }
    )
    if settings.worker_id:
        config["group.instance.id"] = settings.worker_id
    config.update(overrides)
    return config


def leave_group(consumer: Consumer, timeout: float = LEAVE_TIMEOUT_SECONDS) -> None:
    """Leave the group now, handing the partitions over, then close the consumer.

    ``close()`` alone does not leave for a static member (KIP-345: it expects to come back
    and keeps its partitions until the session times out). ``unsubscribe()`` does leave, but
    only once the revocation it starts has been served by a ``poll()``: closing right after
    it terminated the group before the LeaveGroup went out, so a SIGTERMed worker's
    partitions waited for the session timeout like a killed one's (measured in
    tests/test_faults/test_fault_handover.py). So poll until librdkafka has sent the
    LeaveGroup (it clears the member id then), at most ``timeout`` seconds; ``close()``
    then waits for its answer. Messages such a poll returns are dropped: their offsets were
    never committed, so the next owner gets them.
    """
    try:
        consumer.unsubscribe()
        deadline = time.monotonic() + timeout
        while consumer.memberid() and time.monotonic() < deadline:
            consumer.poll(0.1)
    finally:
        consumer.close()


def wait_polling(
    consumer: Consumer, seconds: float, stop: threading.Event, beat: Callable[[], None]
) -> None:
    """Wait ``seconds`` without leaving the group: pause the assigned partitions and keep
    polling (so ``max.poll.interval.ms`` is never exceeded), then resume them."""
    consumer.pause(consumer.assignment())
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not stop.is_set():
            beat()
            msg = consumer.poll(min(0.5, max(0.0, deadline - time.monotonic())))
            if msg is not None and msg.error() is None:
                # A partition assigned during the wait is not paused: put its message back
                # (seek to it) and pause it, so nothing is skipped.
                tp = TopicPartition(msg.topic(), msg.partition(), msg.offset())
                consumer.seek(tp)
                consumer.pause([tp])
    finally:
        consumer.resume(consumer.assignment())
