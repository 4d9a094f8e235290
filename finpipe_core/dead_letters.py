"""Writing dead letters: a message finpipe cannot use goes to the dead-letter topic, unchanged,
with headers saying where it came from and why (``contracts.dlq_headers``).

Agents write through their transactional producer, so a dead letter commits with the offsets
of the task it replaces; processors write through a plain producer and ``confirm`` before their
database transaction commits, so an offset never moves past a message that is not on the
dead-letter topic.
"""

from __future__ import annotations

from typing import Final, Protocol

from finpipe_core.contracts import dlq_headers
from finpipe_core.exceptions import RetriableError

# Waiting for the broker to take dead letters (it blocks the caller's loop).
CONFIRM_SECONDS: Final = 30.0


class DeadLetterUnavailableError(RetriableError):
    """The dead-letter topic did not take the dead letters: retry the work that made them."""


class _Producer(Protocol):
    def produce(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> None: ...

    def flush(self, timeout: float) -> int: ...


class DeadLetterWriter:
    """The one way finpipe writes to the dead-letter topic."""

    def __init__(self, producer: _Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    def send(
        self,
        source: tuple[str, int, int],
        key: bytes | None,
        value: bytes | None,
        error: BaseException,
    ) -> None:
        """Queue the message read at ``source`` (topic, partition, offset) as a dead letter."""
        topic, partition, offset = source
        self.producer.produce(
            self.topic, key=key, value=value, headers=dlq_headers(topic, partition, offset, error)
        )

    def confirm(self, timeout: float = CONFIRM_SECONDS) -> None:
        """Wait until the broker has every queued dead letter, or raise."""
        if self.producer.flush(timeout) > 0:
            raise DeadLetterUnavailableError(f"dead-letter topic {self.topic} unreachable")
