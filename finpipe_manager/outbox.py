"""The manager's transactional outbox: plan fetch tasks, store them, publish them to Kafka.

Dagster-free, so the manager asset, the sensors and any worker tool share one implementation.

1. ``enqueue_tasks`` plans, for each symbol, the trading days of the requested range that no
   earlier task covers (a symbol's coverage is the union of its tasks' ranges whose status is
   not ``failed``), splits them into tasks of at most ``max_sessions`` sessions, and inserts
   them into ``tasks`` together with the ``symbol_state`` update, in ONE transaction. The
   transaction holds an advisory lock, so two overlapping runs never emit the same range: the
   second one waits and then sees the first one's tasks as covered.
2. ``publish_pending`` claims pending rows (``FOR UPDATE SKIP LOCKED``, so two publishers never
   send the same row), produces them with an idempotent producer keyed by symbol, and marks the
   delivered ones ``published`` after their delivery reports. A crash between steps 1 and 2
   leaves ``pending`` rows, which the next call publishes.
3. ``republish_stale`` sends again the tasks left ``pending``/``published`` past a timeout
   (``attempts`` counts publishes).
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from confluent_kafka import Producer as KafkaProducer
from psycopg2.extras import execute_values

from finpipe_core import tasks
from finpipe_core.calendar import trading_days
from finpipe_core.contracts import SCHEMA_VERSION, FetchTask, encode, make_task_id, validate_symbol
from finpipe_core.exceptions import RetriableError
from finpipe_core.kafka import producer_config
from finpipe_core.settings import Settings

logger = logging.getLogger(__name__)

DateRange = tuple[dt.date, dt.date]

# pg_advisory_xact_lock key of the outbox ("finpipe" in ASCII): one manager transaction at a time.
OUTBOX_LOCK_KEY: Final = 0x66696E70697065
# A run waiting longer than this for another run's outbox transaction gives up (and retries).
LOCK_TIMEOUT_MS: Final = 120_000
# Deadlocks with processors updating symbol_state are resolved by PostgreSQL aborting one
# side; the manager retries its transaction this many times.
TRANSACTION_ATTEMPTS: Final = 3
# Longest wait for delivery reports of one publish batch: acks=all on a healthy cluster takes
# milliseconds; this covers a leader election.
FLUSH_TIMEOUT_S: Final = 30.0
# Rows claimed per publish batch: bounds the time their row locks are held.
PUBLISH_BATCH: Final = 5_000
# About one trading year per task by default (settings.max_sessions_per_task overrides it).
DEFAULT_MAX_SESSIONS: Final = 252


class Producer(Protocol):
    """The part of ``confluent_kafka.Producer`` the outbox uses."""

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None: ...

    def poll(self, timeout: float) -> int: ...

    def flush(self, timeout: float) -> int: ...


# Called with the committed tasks before they are published (tests inject crashes here).
BeforePublish = Callable[[Sequence[FetchTask]], None]


@dataclass(frozen=True, slots=True)
class PublishReport:
    """Outcome of one publish pass."""

    published: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # task_id -> delivery error

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True, slots=True)
class EmitReport:
    """Outcome of ``emit_tasks``: what was stored, and what was sent."""

    tasks: list[FetchTask]
    publish: PublishReport

    @property
    def symbols(self) -> list[str]:
        return sorted({t.symbol for t in self.tasks})


# --- Planning (pure) -----------------------------------------------------------------------


def merge_ranges(ranges: Iterable[DateRange]) -> list[DateRange]:
    """Sorted, disjoint ranges covering the same days (touching ranges are joined)."""
    merged: list[DateRange] = []
    for start, end in sorted(ranges):
        if start > end:
            raise ValueError(f"range {start}..{end} is reversed")
        if merged and start <= merged[-1][1] + dt.timedelta(days=1):
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def uncovered_ranges(start: dt.date, end: dt.date, covered: Iterable[DateRange]) -> list[DateRange]:
    """Calendar-day sub-ranges of ``start..end`` (inclusive) outside every ``covered`` range."""
    gaps: list[DateRange] = []
    cursor = start
    for lo, hi in merge_ranges(covered):
        if hi < cursor:
            continue
        if lo > end:
            break
        if lo > cursor:
            gaps.append((cursor, lo - dt.timedelta(days=1)))
        cursor = max(cursor, hi + dt.timedelta(days=1))
        if cursor > end:
            return gaps
    if cursor <= end:
        gaps.append((cursor, end))
    return gaps


def session_chunks(
    sessions: Sequence[dt.date], gaps: Iterable[DateRange], max_sessions: int
) -> list[DateRange]:
    """Snap each gap to the ``sessions`` it contains and split it into ranges of at most
    ``max_sessions`` sessions; gaps without a session disappear.

    :param sessions: sorted trading days (a superset of the gaps' sessions).
    """
    if max_sessions < 1:
        raise ValueError("max_sessions must be at least 1")
    chunks: list[DateRange] = []
    for lo, hi in gaps:
        first = bisect.bisect_left(sessions, lo)
        stop = bisect.bisect_right(sessions, hi)
        for i in range(first, stop, max_sessions):
            j = min(i + max_sessions, stop) - 1
            chunks.append((sessions[i], sessions[j]))
    return chunks


def plan_symbol_ranges(
    sessions: Sequence[dt.date],
    start: dt.date,
    end: dt.date,
    covered: Iterable[DateRange],
    *,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
    force: bool = False,
) -> list[DateRange]:
    """Task ranges for one symbol: the sessions of ``start..end`` not yet covered (all of them
    when ``force``), split into chunks of at most ``max_sessions`` sessions."""
    gaps = [(start, end)] if force else uncovered_ranges(start, end, covered)
    return session_chunks(sessions, gaps, max_sessions)


def build_task(
    symbol: str, start: dt.date, end: dt.date, *, requested_by: str, force: bool = False
) -> FetchTask:
    """The task for ``symbol`` over ``start..end``; a forced task's id carries ``requested_by``
    so it differs from the original request of the same range."""
    variant = requested_by if force else ""
    return FetchTask(
        schema_version=SCHEMA_VERSION,
        task_id=make_task_id(symbol, start, end, variant=variant),
        symbol=symbol,
        start=start,
        end=end,
        requested_by=requested_by,
        force=force,
    )


# --- Storing (one transaction) -------------------------------------------------------------


def _in_transaction(conn: psycopg2.extensions.connection, work: Callable[[Any], Any]) -> Any:
    """Run ``work(cursor)`` in one transaction, retrying on deadlock or lock timeout."""
    for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
        try:
            with conn, conn.cursor() as cur:
                return work(cur)
        except (
            psycopg2.errors.DeadlockDetected,
            psycopg2.errors.LockNotAvailable,
            psycopg2.errors.SerializationFailure,
        ) as exc:
            if attempt == TRANSACTION_ATTEMPTS:
                raise RetriableError(f"outbox transaction failed {attempt} times: {exc}") from exc
            logger.warning("outbox transaction retry attempt=%d error=%s", attempt, exc)
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def uncovered_tasks(
    conn: psycopg2.extensions.connection,
    symbols: Sequence[str],
    start: dt.date,
    end: dt.date,
    *,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
) -> list[tuple[str, dt.date, dt.date]]:
    """The (symbol, start, end) tasks a run for ``start..end`` would emit now (read only)."""
    sessions = trading_days(start, end)
    if not sessions or not symbols:
        return []
    with conn.cursor() as cur:
        covered = tasks.covered_ranges(cur, sorted(set(symbols)), start, end)
    conn.rollback()
    return [
        (symbol, lo, hi)
        for symbol in sorted(covered)
        for lo, hi in plan_symbol_ranges(
            sessions, start, end, covered[symbol], max_sessions=max_sessions
        )
    ]


def enqueue_tasks(
    conn: psycopg2.extensions.connection,
    symbols: Sequence[str],
    start: dt.date,
    end: dt.date,
    *,
    requested_by: str,
    force: bool = False,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
) -> list[FetchTask]:
    """Insert the tasks for ``symbols`` over ``start..end`` into the outbox, with the
    ``symbol_state`` update, in one transaction; return the tasks inserted.

    Only days no earlier task covers are planned (all days when ``force``), so calling this
    again for the same range inserts nothing. Symbols must exist in ``symbols``.

    :param requested_by: the run id, recorded on each task (and the variant of forced ids).
    :param force: re-fetch the whole range (corrections), with new task ids.
    :param max_sessions: most trading days per task.
    """
    for symbol in symbols:
        validate_symbol(symbol)
    if start > end or not symbols:
        return []
    sessions = trading_days(start, end)
    if not sessions:
        return []
    wanted = sorted(set(symbols))

    def work(cur: Any) -> list[FetchTask]:
        cur.execute("SET LOCAL lock_timeout = %s", (f"{LOCK_TIMEOUT_MS}ms",))
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (OUTBOX_LOCK_KEY,))
        cur.execute(
            "INSERT INTO symbol_state (symbol) SELECT symbol FROM symbols WHERE symbol = ANY(%s) "
            "ON CONFLICT (symbol) DO NOTHING",
            (wanted,),
        )
        cur.execute("SELECT symbol FROM symbols WHERE symbol = ANY(%s)", (wanted,))
        missing = set(wanted) - {row[0] for row in cur.fetchall()}
        if missing:
            raise ValueError(f"symbols not in the universe table: {sorted(missing)[:10]}")
        covered = (
            {s: [] for s in wanted} if force else tasks.covered_ranges(cur, wanted, start, end)
        )
        planned = [
            build_task(symbol, lo, hi, requested_by=requested_by, force=force)
            for symbol in wanted
            for lo, hi in plan_symbol_ranges(
                sessions, start, end, covered[symbol], max_sessions=max_sessions, force=force
            )
        ]
        if not planned:
            return []
        # A planned id can only exist already as a failed task (coverage skips the others):
        # asking for its range again revives it.
        stored = tasks.insert_pending(
            cur, [(t.task_id, t.symbol, t.start, t.end, t.force, t.requested_by) for t in planned]
        )
        new_tasks = [t for t in planned if t.task_id in stored]
        bounds: dict[str, DateRange] = {}
        for t in new_tasks:
            lo, hi = bounds.get(t.symbol, (t.start, t.end))
            bounds[t.symbol] = (min(lo, t.start), max(hi, t.end))
        if bounds:
            execute_values(
                cur,
                "UPDATE symbol_state AS s SET "
                "first_requested_date = LEAST(s.first_requested_date, v.lo), "
                "last_requested_date = GREATEST(s.last_requested_date, v.hi), updated_at = now() "
                "FROM (VALUES %s) AS v (symbol, lo, hi) WHERE s.symbol = v.symbol",
                [(s, lo, hi) for s, (lo, hi) in sorted(bounds.items())],
                template="(%s, %s::date, %s::date)",
            )
        return new_tasks

    enqueued: list[FetchTask] = _in_transaction(conn, work)
    logger.info(
        "outbox enqueued tasks=%d symbols=%d start=%s end=%s force=%s requested_by=%s",
        len(enqueued),
        len({t.symbol for t in enqueued}),
        start,
        end,
        force,
        requested_by,
    )
    return enqueued


# --- Publishing ----------------------------------------------------------------------------


def _publish_claimed(
    conn: psycopg2.extensions.connection,
    producer: Producer,
    topic: str,
    claim: Callable[[Any], list[tuple]],
    flush_timeout: float,
) -> PublishReport:
    """Claim rows with ``claim`` (a ``tasks.claim_*`` query), produce them, and mark the
    delivered ones published, all in one transaction so no other publisher sends them too."""
    delivered: list[str] = []
    failed: dict[str, str] = {}

    def work(cur: Any) -> None:
        rows = claim(cur)
        if not rows:
            return
        for task_id, symbol, start, end, force, requested_by in rows:
            task = FetchTask(
                schema_version=SCHEMA_VERSION,
                task_id=task_id,
                symbol=validate_symbol(symbol),
                start=start,
                end=end,
                requested_by=requested_by or "",
                force=force,
            )

            def on_delivery(err: Any, _msg: Any, task_id: str = task_id) -> None:
                if err is None:
                    delivered.append(task_id)
                else:
                    failed[task_id] = str(err)

            _produce(producer, topic, task, on_delivery)
        remaining = producer.flush(flush_timeout)
        if remaining:
            logger.warning("publish flush timed out undelivered=%d topic=%s", remaining, topic)
        for task_id, *_ in rows:
            if task_id not in delivered and task_id not in failed:
                failed[task_id] = f"no delivery report within {flush_timeout}s"
        if delivered:
            tasks.mark_published(cur, delivered)

    # No retry here: a retried claim would produce the same messages a second time. A failed
    # transaction leaves the rows pending for the next pass.
    with conn, conn.cursor() as cur:
        work(cur)
    for task_id, error in failed.items():
        logger.error("task not delivered task_id=%s topic=%s error=%s", task_id, topic, error)
    return PublishReport(published=delivered, failed=failed)


def _produce(producer: Producer, topic: str, task: FetchTask, on_delivery: Any) -> None:
    while True:
        try:
            producer.produce(
                topic, value=encode(task), key=task.symbol.encode(), on_delivery=on_delivery
            )
        except BufferError:
            # The local queue is full: serve delivery reports to make room, then retry.
            producer.poll(0.5)
            continue
        producer.poll(0)
        return


def publish_pending(
    conn: psycopg2.extensions.connection,
    producer: Producer,
    topic: str,
    *,
    task_ids: Sequence[str] | None = None,
    batch_size: int = PUBLISH_BATCH,
    flush_timeout: float = FLUSH_TIMEOUT_S,
) -> PublishReport:
    """Publish every ``pending`` task (or those of ``task_ids``) and mark it ``published``.

    Rows another publisher holds are skipped (it is sending them). Undelivered tasks stay
    pending and are listed in ``PublishReport.failed``.
    """
    published: list[str] = []
    failed: dict[str, str] = {}
    while True:
        report = _publish_claimed(
            conn,
            producer,
            topic,
            lambda cur: tasks.claim_pending(
                cur, task_ids=task_ids, skip=list(failed), limit=batch_size
            ),
            flush_timeout,
        )
        published += report.published
        failed.update(report.failed)
        if len(report.published) + len(report.failed) < batch_size:
            break
    if published:
        logger.info("published tasks=%d topic=%s", len(published), topic)
    return PublishReport(published=published, failed=failed)


def republish_stale(
    conn: psycopg2.extensions.connection,
    producer: Producer,
    topic: str,
    *,
    older_than: dt.timedelta,
    max_attempts: int | None = None,
    limit: int = PUBLISH_BATCH,
    flush_timeout: float = FLUSH_TIMEOUT_S,
) -> PublishReport:
    """Publish again tasks still ``pending``/``published`` whose last publish (or creation)
    is older than ``older_than``; ``attempts`` is incremented for each one delivered.

    :param max_attempts: leave tasks published this many times alone (report them instead).
    :param limit: most tasks per call, to bound the work of one sensor tick.
    """
    report = _publish_claimed(
        conn,
        producer,
        topic,
        lambda cur: tasks.claim_stale(
            cur, older_than=older_than, max_attempts=max_attempts, limit=limit
        ),
        flush_timeout,
    )
    if report.published:
        logger.warning("republished stale tasks=%d topic=%s", len(report.published), topic)
    return report


def emit_tasks(
    conn: psycopg2.extensions.connection,
    producer: Producer,
    topic: str,
    symbols: Sequence[str],
    start: dt.date,
    end: dt.date,
    *,
    requested_by: str,
    force: bool = False,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
    before_publish: BeforePublish | None = None,
    flush_timeout: float = FLUSH_TIMEOUT_S,
) -> EmitReport:
    """``enqueue_tasks`` then ``publish_pending``: store the new tasks, then publish every
    pending task (this run's, and any an earlier crashed run left behind).

    :param before_publish: called with the committed tasks before publishing; an exception
        from it leaves them pending (the crash window the outbox exists for).
    """
    enqueued = enqueue_tasks(
        conn,
        symbols,
        start,
        end,
        requested_by=requested_by,
        force=force,
        max_sessions=max_sessions,
    )
    if before_publish is not None:
        before_publish(enqueued)
    report = publish_pending(conn, producer, topic, flush_timeout=flush_timeout)
    return EmitReport(tasks=enqueued, publish=report)


def make_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    """An idempotent ``confluent_kafka.Producer`` from ``finpipe_core.kafka.producer_config``."""
    return KafkaProducer(producer_config(settings, **overrides))
