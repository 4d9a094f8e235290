"""The agent: consume fetch tasks, fetch bars, publish them, all in one Kafka transaction.

consume-transform-produce: the bar messages, any dead letters and the consumed offsets of one
poll batch are committed atomically (``send_offsets_to_transaction``), so a crash anywhere
leaves either all of a batch's output or none of it, and the batch is fetched again.
Processors read with ``isolation.level=read_committed`` and never see aborted output.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from finpipe_core import contracts
from finpipe_core.contracts import BarBatch, FetchTask
from finpipe_core.dead_letters import DeadLetterWriter
from finpipe_core.exceptions import ContractError, FatalError, PoisonMessageError, RetriableError
from finpipe_core.kafka import consumer_config, leave_group, producer_config, wait_polling
from finpipe_core.retry import backoff_delay
from finpipe_core.settings import Settings
from workers.runtime import (
    BARS,
    BATCH_SECONDS,
    ERRORS,
    MESSAGES,
    Health,
    LagReporter,
    run_worker,
)
from workers.sources import (
    BarSource,
    NoDataError,
    RawBars,
    SourceError,
    make_rate_limiter,
    make_source,
)
from workers.sources.ratelimit import RateLimiter

logger = logging.getLogger(__name__)
WORKER = "agent"

# Tasks per poll. A transaction commits after at most TRANSACTION_BUDGET_SECONDS of fetching
# (the rest of the poll goes into the next one), so a fast source amortises commits over many
# tasks and a slow, rate-limited one never holds a transaction near its timeout.
BATCH_SIZE = 500
# 1 s also bounds what a killed agent loses and how long its successor takes to commit again
# (the fast-recovery goal is rows flowing within 10 s of a kill); a commit costs ~10 ms.
TRANSACTION_BUDGET_SECONDS = 1.0
# KEDA's lagThreshold for agents: tasks waiting per replica before another one is added
# (helm-values/finpipe-workers.yaml; checked by tests/test_k8s).
LAG_PER_REPLICA = 100
# A transaction commit taking longer than this is stuck (see _transaction): exit for a restart.
COMMIT_DEADLINE_SECONDS = 90.0


def _exit_stuck_commit() -> None:
    logger.critical(
        "transaction commit stuck for %.0f s; exiting so the supervisor restarts "
        "the agent (the open transaction will be aborted)",
        COMMIT_DEADLINE_SECONDS,
    )
    logging.shutdown()
    os._exit(3)


FETCH_ATTEMPTS = 5
TRANSACTION_TIMEOUT_MS = 120_000
# Size limit when checking a built message (the topic's own limit applies when producing).
MAX_CHECKED_BYTES = 10 * 1024 * 1024


def chunk_messages(task: FetchTask, bars: RawBars, per_message: int) -> list[BarBatch]:
    """The ``ok`` messages of a task: its bars in chunks of at most ``per_message``."""
    starts = list(range(0, len(bars), per_message))
    out = []
    for i, lo in enumerate(starts):
        part = bars.slice(lo, lo + per_message)
        out.append(
            BarBatch(
                schema_version=contracts.SCHEMA_VERSION,
                task_id=task.task_id,
                symbol=task.symbol,
                start=task.start,
                end=task.end,
                status="ok",
                source=bars.source,
                chunk=i,
                chunks=len(starts),
                dates=part.dates,
                open=part.open.tolist(),
                high=part.high.tolist(),
                low=part.low.tolist(),
                close=part.close.tolist(),
                adj_close=part.adj_close.tolist(),
                volume=part.volume.tolist(),
                dividends=part.dividends.tolist(),
                splits=part.splits.tolist(),
            )
        )
    return out


def result_message(task: FetchTask, status: str, reason: str, source: str) -> BarBatch:
    """A ``no_data`` or ``failed`` result: the task is answered, the reason recorded.

    The reason is cleaned to the contract: an exception's text can carry control characters,
    and a reason the processor refuses would park the symbol for a transient fetch error.
    """
    return BarBatch(
        schema_version=contracts.SCHEMA_VERSION,
        task_id=task.task_id,
        symbol=task.symbol,
        start=task.start,
        end=task.end,
        status=status,
        source=source,
        reason=contracts.clean_reason(reason) or status,
    )


def checked_messages(task: FetchTask, bars: RawBars, per_message: int) -> list[BarBatch]:
    """``chunk_messages``, each checked against the contract the processor decodes with.

    Building a ``BarBatch`` checks its shape (low above high, repeated dates); the value
    constraints (positive prices) are checked on decoding only, so each message is decoded
    once here too. A source result that breaks the contract raises ``ContractError``.
    """
    try:
        messages = chunk_messages(task, bars, per_message)
        for message in messages:
            contracts.decode_bars(contracts.encode(message), MAX_CHECKED_BYTES)
    except (ValueError, TypeError) as exc:  # ContractError is a ValueError
        raise ContractError(f"source bars break the contract: {exc}") from exc
    return messages


def transactional_id(settings: Settings) -> str:
    """The agent's transactional.id: stable per worker slot when ``worker_id`` is set.

    Stable, a replacement of a killed agent fences its predecessor at start. Without a
    worker id each process gets a unique one; zombies are then still fenced by the group
    generation (KIP-447), but a dead agent's open transaction blocks its partitions for
    up to ``transaction.timeout.ms``.
    """
    if settings.worker_id:
        return f"{settings.agent_group}-{settings.worker_id}"
    return f"{settings.agent_group}-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


class Agent:
    """One agent process: a consumer in the agents' group and a transactional producer."""

    def __init__(
        self,
        settings: Settings,
        source: BarSource,
        *,
        health: Health | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.rate_limiter = rate_limiter
        self.health = health or Health()
        self.lag = LagReporter(WORKER)
        self.stop = threading.Event()
        self.consumer = Consumer(consumer_config(settings, settings.agent_group))
        self.producer = Producer(
            producer_config(
                settings,
                **{
                    "transactional.id": transactional_id(settings),
                    "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
                },
            )
        )
        # With a stable transactional.id this fences a killed predecessor and aborts its
        # open transaction, which read_committed processors would otherwise wait behind
        # until transaction.timeout.ms.
        self.producer.init_transactions(30)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        """Poll until ``stop`` is set; then close the consumer and flush the producer."""
        self.consumer.subscribe(
            [self.settings.tasks_topic], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        try:
            while not self.stop.is_set():
                self.health.beat()
                self.lag.maybe_report(self.consumer)
                messages = self._poll()
                if messages:
                    with BATCH_SECONDS.labels(WORKER).time():
                        self._process_batch(messages)
        finally:
            leave_group(self.consumer)  # hand the partitions over now
            self.producer.flush(30)

    def _poll(self) -> list[Message]:
        """The tasks waiting, up to BATCH_SIZE, as soon as there is one.

        ``consume(BATCH_SIZE, timeout)`` would wait out the timeout for a full batch while a
        few tasks sit in hand (a daily update's tail, a trickle of tasks): wait for the first
        task only, then take what is already fetched. Under a backlog the fetched queue holds
        a full batch, so backfills keep their BATCH_SIZE transactions.
        """
        first = self.consumer.consume(num_messages=1, timeout=1.0)
        if not first:
            return first
        return first + self.consumer.consume(num_messages=BATCH_SIZE - 1, timeout=0)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.health.ready = True
        logger.info("assigned partitions=%s", [p.partition for p in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Nothing to commit: offsets ride in each batch's transaction.
        logger.info("revoked partitions=%s", [p.partition for p in partitions])

    def _process_batch(self, messages: list[Message]) -> None:
        pending = list(messages)
        while pending and not self.stop.is_set():
            done = self._transaction(pending)
            if done is None:  # aborted: the consumer was rewound, the rest comes again
                return
            pending = pending[done:]

    def _transaction(self, messages: list[Message]) -> int | None:
        """Handle a prefix of ``messages`` in one transaction; return its length (None if
        the transaction was aborted)."""
        started = time.perf_counter()
        self.producer.begin_transaction()
        try:
            offsets: dict[tuple[str, int], int] = {}
            handled = 0
            for msg in messages:
                handled += 1
                if msg.error() is not None:
                    self._on_consume_error(msg.error())
                    continue
                self._handle(msg)
                offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
                if time.perf_counter() - started > TRANSACTION_BUDGET_SECONDS:
                    break
            # librdkafka 2.16 can block here for good when the group coordinator's broker
            # died (librdkafka #5511): a watchdog exits the process for a restart; the open
            # transaction is then aborted by the broker, so nothing is lost.
            watchdog = threading.Timer(COMMIT_DEADLINE_SECONDS, _exit_stuck_commit)
            watchdog.daemon = True
            watchdog.start()
            try:
                self.producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    self.consumer.consumer_group_metadata(),
                )
                self.producer.commit_transaction()
            finally:
                watchdog.cancel()
            logger.debug(
                "transaction tasks=%d seconds=%.3f", handled, time.perf_counter() - started
            )
            return handled
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            ERRORS.labels(WORKER, error.name()).inc()
            if error.fatal():
                raise FatalError(f"fatal Kafka error: {error}") from exc
            logger.warning("transaction aborted error=%s; the batch will be fetched again", error)
            self._abort_and_rewind()
            return None

    def _on_consume_error(self, error: KafkaError) -> None:
        ERRORS.labels(WORKER, error.name()).inc()
        if error.fatal():
            raise FatalError(f"fatal Kafka error: {error}")
        logger.warning("consume error=%s", error)

    def _abort_and_rewind(self) -> None:
        """Abort the open transaction and go back to the last committed offsets."""
        try:
            self.producer.abort_transaction(30)
        except KafkaException as exc:
            if exc.args[0].fatal():
                raise FatalError(f"fatal Kafka error on abort: {exc.args[0]}") from exc
        assignment = self.consumer.assignment()
        if not assignment:
            return
        for tp in self.consumer.committed(assignment, timeout=30):
            if tp.offset >= 0:
                self.consumer.seek(tp)
            else:  # nothing committed yet: start of the partition
                self.consumer.seek(TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))

    # -- one task ---------------------------------------------------------------------------
    def _handle(self, msg: Message) -> None:
        try:
            task = contracts.decode_task(msg.value() or b"", self.settings.max_message_bytes)
        except ContractError as exc:
            self._dead_letter(msg, exc)
            return
        for out in self._results(task):
            payload = contracts.encode(out)
            self.producer.produce(self.settings.data_topic, key=task.symbol.encode(), value=payload)
            self.producer.poll(0)
            BARS.labels(WORKER).inc(len(out.dates))
        MESSAGES.labels(WORKER, "ok").inc()

    def _results(self, task: FetchTask) -> list[BarBatch]:
        for attempt in range(FETCH_ATTEMPTS):
            try:
                self._wait_for_budget()
                bars = self.source.fetch(task.symbol, task.start, task.end)
            except NoDataError as exc:
                return [result_message(task, "no_data", str(exc), self.source.name)]
            except RetriableError as exc:  # source unavailable, or the shared budget's DB
                ERRORS.labels(WORKER, type(exc).__name__).inc()
                delay = backoff_delay(attempt)
                logger.warning(
                    "symbol=%s attempt=%d source unavailable (%s); retry in %.1f s",
                    task.symbol,
                    attempt + 1,
                    exc,
                    delay,
                )
                self._wait_polling(delay)
                continue
            except Exception as exc:
                # SourceError, a task the source refuses (PoisonMessageError), or a bug in a
                # source: answer the task as failed rather than crash on it at every restart.
                ERRORS.labels(WORKER, type(exc).__name__).inc()
                logger.warning(
                    "symbol=%s fetch failed: %s: %s", task.symbol, type(exc).__name__, exc
                )
                known = isinstance(exc, (SourceError, PoisonMessageError))
                reason = str(exc) if known else f"{type(exc).__name__}: {exc}"
                return [result_message(task, "failed", reason, self.source.name)]
            if len(bars) == 0:
                reason = f"no bars for {task.symbol} between {task.start} and {task.end}"
                return [result_message(task, "no_data", reason, self.source.name)]
            try:
                return checked_messages(task, bars, self.settings.bars_per_message)
            except ContractError as exc:
                ERRORS.labels(WORKER, type(exc).__name__).inc()
                logger.warning("symbol=%s %s", task.symbol, exc)
                return [result_message(task, "failed", str(exc), self.source.name)]
        reason = f"source unavailable after {FETCH_ATTEMPTS} attempts"
        return [result_message(task, "failed", reason, self.source.name)]

    def _wait_for_budget(self) -> None:
        """Take one request from the shared budget, polling (partitions paused) meanwhile."""
        if self.rate_limiter is None:
            return
        while (wait := self.rate_limiter.try_acquire()) > 0 and not self.stop.is_set():
            self._wait_polling(wait)

    def _wait_polling(self, seconds: float) -> None:
        wait_polling(self.consumer, seconds, self.stop, self.health.beat)

    def _dead_letter(self, msg: Message, exc: Exception) -> None:
        logger.warning(
            "dead letter %s[%d]@%d error=%s", msg.topic(), msg.partition(), msg.offset(), exc
        )
        MESSAGES.labels(WORKER, "dead_letter").inc()
        # Through the transactional producer: it commits with the offsets it replaces.
        DeadLetterWriter(self.producer, self.settings.dlq_topic).send(
            (msg.topic(), msg.partition(), msg.offset()), msg.key(), msg.value(), exc
        )


def main() -> int:
    return run_worker(
        "agent",
        lambda settings, health: Agent(
            settings, make_source(settings), health=health, rate_limiter=make_rate_limiter(settings)
        ),
    )
