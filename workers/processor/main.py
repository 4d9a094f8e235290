"""The processor's Kafka loop: offsets live in PostgreSQL, next to the rows they produced.

Per poll batch: one DB transaction (``BatchWriter``) writes prices, indicators, state, task
status and ``consumer_offsets``; dead letters are flushed to the DLQ before that commit; after
it, the offsets are also committed to Kafka so consumer lag (and KEDA) sees progress. On
assignment the consumer starts from the offsets stored in PostgreSQL, so a crash between the
DB commit and the Kafka commit never processes a message twice.

Ownership: the loop keeps the set of partitions it owns (rebalance callbacks) and drops, rather
than retries, the messages of a partition revoked or lost meanwhile. That is an optimisation;
correctness does not depend on it: ``BatchWriter`` fences every transaction on the stored
offsets, so a processor that does not know yet that it lost a partition cannot apply anything
its successor applied.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import psycopg2
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from finpipe_core.db import connect
from finpipe_core.dead_letters import CONFIRM_SECONDS, DeadLetterWriter
from finpipe_core.exceptions import FatalError, RetriableError
from finpipe_core.kafka import consumer_config, leave_group, producer_config, wait_polling
from finpipe_core.retry import backoff_delay
from finpipe_core.settings import Settings
from workers.processor.batch import (
    RETRIABLE_DB_ERRORS,
    BatchResult,
    BatchWriter,
    InputMessage,
    stored_offsets,
)
from workers.runtime import (
    BARS,
    BATCH_SECONDS,
    ERRORS,
    MESSAGES,
    Health,
    LagReporter,
    run_worker,
)

logger = logging.getLogger(__name__)
WORKER = "processor"

# Messages per DB transaction: bigger batches amortise the COPY and commit.
BATCH_SIZE = 500
# ...but at most about this many bytes of message values (about 25,000 bars, a second of
# work): a rebalance waits for the batch in hand and a killed processor loses it, so a
# backfill's 1,000-bar messages come 25 at a time while a daily update's stay 500.
BATCH_BYTES = 4_000_000
# KEDA's lagThreshold for processors: one poll batch per replica (checked by tests/test_k8s).
LAG_PER_REPLICA = BATCH_SIZE
DB_RETRY_ATTEMPTS = 10
# What makes a batch worth retrying whole: the database or the dead-letter topic unavailable.
RETRIABLE = (*RETRIABLE_DB_ERRORS, RetriableError)
# How long a rebalance callback waits for the database (it blocks polling, so keep it well
# under max.poll.interval.ms).
ASSIGN_RETRY_SECONDS = 60.0


class Processor:
    """One processor process: a consumer in the processors' group writing to PostgreSQL."""

    def __init__(self, settings: Settings, health: Health | None = None) -> None:
        self.settings = settings
        self.group = settings.processor_group
        self.health = health or Health()
        self.lag = LagReporter(WORKER)
        self.stop = threading.Event()
        self.conn = self._connect()
        self.consumer = Consumer(consumer_config(settings, self.group))
        self.dlq = DeadLetterWriter(Producer(producer_config(settings)), settings.dlq_topic)
        # Partitions this process owns now, as the rebalance callbacks said.
        self.owned: set[tuple[str, int]] = set()
        # Messages to ask for per poll, adapted to their size (see BATCH_BYTES).
        self.batch_messages = BATCH_SIZE

    def _connect(self) -> psycopg2.extensions.connection:
        conn = connect(self.settings, application_name="finpipe-processor")
        conn.autocommit = False
        return conn

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        self.consumer.subscribe(
            [self.settings.data_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        try:
            while not self.stop.is_set():
                self.health.beat()
                self.lag.maybe_report(self.consumer)
                messages = self._poll()
                good = [m for m in messages if not self._is_error(m)]
                for batch in self._by_size(good):
                    with BATCH_SECONDS.labels(WORKER).time():
                        self._process_with_retry(batch)
        finally:
            leave_group(self.consumer)  # hand the partitions over now
            self.dlq.producer.flush(CONFIRM_SECONDS)
            self.conn.close()

    def _poll(self) -> list[Message]:
        """Up to ``batch_messages`` messages, as soon as there is one: ``consume(n, timeout)``
        waits out the timeout for a full batch while a transaction's tail sits in hand."""
        first = self.consumer.consume(num_messages=1, timeout=1.0)
        if not first:
            return first
        return first + self.consumer.consume(num_messages=self.batch_messages - 1, timeout=0)

    def _by_size(self, messages: list[Message]) -> list[list[Message]]:
        """``messages`` in batches of at most BATCH_BYTES, and the next poll's size."""
        batches: list[list[Message]] = []
        size = total = 0
        for m in messages:
            n = len(m.value() or b"")
            if not batches or size + n > BATCH_BYTES:
                batches.append([])
                size = 0
            batches[-1].append(m)
            size += n
            total += n
        if messages:
            average = max(1, total // len(messages))
            self.batch_messages = max(1, min(BATCH_SIZE, BATCH_BYTES // average))
        return batches

    def _is_error(self, msg: Message) -> bool:
        error = msg.error()
        if error is None:
            return False
        ERRORS.labels(WORKER, error.name()).inc()
        if error.fatal():
            raise FatalError(f"fatal Kafka error: {error}")
        if error.code() != KafkaError._PARTITION_EOF:
            logger.warning("consume error=%s", error)
        return True

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start every newly assigned partition at the offset PostgreSQL recorded."""
        by_topic: dict[str, list[int]] = {}
        for tp in partitions:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        stored = self._stored_offsets_with_retry(by_topic)
        for tp in partitions:
            tp.offset = stored.get((tp.topic, tp.partition), OFFSET_BEGINNING)
        consumer.assign(partitions)  # eager protocol: the whole new assignment
        self.owned.update((tp.topic, tp.partition) for tp in partitions)
        self.health.ready = True
        logger.info("assigned %s", [(tp.partition, tp.offset) for tp in partitions])

    def _stored_offsets_with_retry(
        self, by_topic: dict[str, list[int]]
    ) -> dict[tuple[str, int], int]:
        """Offsets from PostgreSQL, waiting out a short outage (a rebalance can come while
        the database restarts); past ASSIGN_RETRY_SECONDS the process exits for a restart."""
        deadline = time.monotonic() + ASSIGN_RETRY_SECONDS
        for attempt in range(1000):
            try:
                stored: dict[tuple[str, int], int] = {}
                for topic, parts in by_topic.items():
                    for p, offset in stored_offsets(self.conn, self.group, topic, parts).items():
                        stored[(topic, p)] = offset
                self.conn.rollback()  # end the read-only transaction
                return stored
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                if time.monotonic() > deadline:
                    raise FatalError(f"database unavailable on assignment: {exc}") from exc
                logger.warning("offsets unreadable on assignment (%s); retrying", str(exc).strip())
                self.health.beat()
                time.sleep(backoff_delay(attempt, base=0.5, cap=5.0))
                self._reconnect()
        raise FatalError("database unavailable on assignment")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Batches commit before the next poll; a batch waiting to be retried (a rebalance
        # can run inside that wait) drops these partitions' messages (``_owned_only``).
        self.owned.difference_update((tp.topic, tp.partition) for tp in partitions)
        logger.info("revoked partitions=%s", [tp.partition for tp in partitions])

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost, not revoked: another member may own them already; never commit here.
        self.owned.difference_update((tp.topic, tp.partition) for tp in partitions)
        logger.warning("lost partitions=%s", [tp.partition for tp in partitions])

    # -- one batch ----------------------------------------------------------------------------
    def _owned_only(self, batch: list[InputMessage]) -> list[InputMessage]:
        kept = [m for m in batch if (m.topic, m.partition) in self.owned]
        if len(kept) < len(batch):
            MESSAGES.labels(WORKER, "dropped_revoked").inc(len(batch) - len(kept))
            logger.info("dropped %d messages of partitions no longer owned", len(batch) - len(kept))
        return kept

    def _process_with_retry(self, messages: list[Message]) -> None:
        batch = [
            InputMessage(m.topic(), m.partition(), m.offset(), m.key(), m.value() or b"")
            for m in messages
        ]
        for attempt in range(DB_RETRY_ATTEMPTS):
            # consume() can return messages of a partition revoked during the same call, and
            # a retry waits polling, where a rebalance can take partitions away.
            batch = self._owned_only(batch)
            if not batch or self.stop.is_set():
                return  # whoever owns them now starts from the offsets stored in PostgreSQL
            try:
                self._process(batch)
                return
            except RETRIABLE as exc:
                ERRORS.labels(WORKER, type(exc).__name__).inc()
                delay = backoff_delay(attempt, base=0.5, cap=15.0)
                logger.warning(
                    "batch not committed (%s); retry %d in %.1f s",
                    str(exc).strip(),
                    attempt + 1,
                    delay,
                )
                self._wait_polling(delay)
                self._reconnect()
        raise FatalError(f"database unavailable after {DB_RETRY_ATTEMPTS} attempts")

    def _process(self, batch: list[InputMessage]) -> None:
        """Commit ``batch``; if a message makes the whole batch fail, find it and dead-letter
        it, one message at a time. Only RETRIABLE errors leave this method."""
        try:
            self._commit(batch)
        except RETRIABLE:
            raise
        except Exception as exc:
            # A row the database refuses, or a fault outside one message's handling: find
            # the message by going one at a time (the committed ones are fenced on a retry).
            logger.warning(
                "batch failed (%s: %s); isolating the message", type(exc).__name__, str(exc).strip()
            )
            for message in batch:
                try:
                    self._commit([message])
                except RETRIABLE:
                    raise
                except Exception as one:
                    self._dead_letter_alone(message, one)

    def _commit(self, batch: list[InputMessage]) -> None:
        started = time.perf_counter()
        result = self._in_transaction(lambda writer: writer.apply(batch))
        MESSAGES.labels(WORKER, "ok").inc(len(batch) - len(result.dead_letters) - result.fenced)
        MESSAGES.labels(WORKER, "fenced").inc(result.fenced)
        BARS.labels(WORKER).inc(result.bars_stored)
        logger.debug(
            "batch messages=%d bars=%d dead_letters=%d fenced=%d seconds=%.3f",
            len(batch),
            result.bars_stored,
            len(result.dead_letters),
            result.fenced,
            time.perf_counter() - started,
        )

    def _in_transaction(self, write: Callable[[BatchWriter], BatchResult]) -> BatchResult:
        """Run ``write`` in one transaction, put its dead letters on the DLQ topic, commit,
        then tell Kafka (``_after_commit``). Rolls back on any error."""
        writer = BatchWriter(self.conn, self.group, self.settings.max_message_bytes)
        try:
            result = write(writer)
            for dead in result.dead_letters:
                m = dead.message
                self.dlq.send((m.topic, m.partition, m.offset), m.key, m.value, dead.error)
            # The dead letters are on the broker before their offsets can be committed.
            if result.dead_letters:
                self.dlq.confirm()
            self.conn.commit()
        except BaseException:
            if not self.conn.closed:
                self.conn.rollback()
            raise
        MESSAGES.labels(WORKER, "dead_letter").inc(len(result.dead_letters))
        self._after_commit(result)
        return result

    def _after_commit(self, result: BatchResult) -> None:
        """Tell Kafka what PostgreSQL holds: offsets for lag, and skip what others applied."""
        for (topic, partition), offset in result.seek_to.items():
            if (topic, partition) in self.owned:
                with contextlib.suppress(KafkaException):
                    self.consumer.seek(TopicPartition(topic, partition, offset))
        offsets = [TopicPartition(t, p, o) for (t, p), o in result.next_offsets.items()]
        if not offsets:
            return
        try:  # for lag and KEDA only: PostgreSQL holds the offsets that count
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            logger.warning("kafka offset commit failed (%s); PostgreSQL has them", exc)

    def _dead_letter_alone(self, message: InputMessage, exc: Exception) -> None:
        """DLQ a message that fails even alone, park its symbol, advance past it."""
        self._in_transaction(lambda writer: writer.dead_letter_only(message, exc))

    def _reconnect(self) -> None:
        with contextlib.suppress(psycopg2.Error):
            self.conn.close()
        try:
            self.conn = self._connect()
        except psycopg2.OperationalError as exc:
            logger.warning("reconnect failed: %s", str(exc).strip())

    def _wait_polling(self, seconds: float) -> None:
        wait_polling(self.consumer, seconds, self.stop, self.health.beat)


def main() -> int:
    return run_worker("processor", lambda settings, health: Processor(settings, health=health))
