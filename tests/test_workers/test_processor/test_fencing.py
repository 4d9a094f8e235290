"""Two or more processors writing one partition or one symbol: any interleaving of their
transactions stores exactly what one writer applying each message once would store.

Each test plays one interleaving deterministically on the real database: writers are
``BatchWriter`` transactions on their own connections, paused between applying a batch and
committing it, as a processor that lost its partition (a retry across a rebalance, a slow
batch) would be. The result is checked against a fresh computation: prices equal the source,
every indicator equals TA-Lib over the stored prices, the indicator state equals the state of
one incremental pass over the whole history, and the stored offsets equal the last message's.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator

import msgspec
import numpy as np
import psycopg2.extensions
import pytest

from finpipe_core import contracts
from finpipe_core.db import connect
from finpipe_core.indicators import Bars, compute_incremental, split_adjust, split_events
from finpipe_core.settings import Settings
from tests.fixtures.pipeline import assert_indicators_exact
from workers.agent.main import chunk_messages
from workers.processor.batch import PRICE_COLUMNS, BatchResult, BatchWriter, InputMessage
from workers.sources.synthetic import SyntheticSource

pytestmark = pytest.mark.integration

TOPIC = "data"
GROUP = "fencing-test"
# Long enough for a writer that is not blocked to finish its batch on a busy machine.
BLOCKED_SECONDS = 1.5


def bar_messages(
    symbol: str,
    partition: int,
    start: dt.date,
    end: dt.date,
    first_offset: int = 0,
    per_message: int = 10,
) -> list[InputMessage]:
    """The source's bars of ``symbol`` as consecutive messages of one partition."""
    bars = SyntheticSource().fetch(symbol, start, end)
    task = contracts.FetchTask(
        schema_version=contracts.SCHEMA_VERSION,
        symbol=symbol,
        task_id=contracts.make_task_id(symbol, start, end),
        start=start,
        end=end,
    )
    return [
        InputMessage(TOPIC, partition, first_offset + i, symbol.encode(), contracts.encode(m))
        for i, m in enumerate(chunk_messages(task, bars, per_message))
    ]


class Writer:
    """One processor's transaction: apply a batch, then (maybe much later) commit it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conn = connect(settings)
        self.conn.autocommit = False
        self.result: BatchResult | None = None

    def apply(self, batch: list[InputMessage]) -> BatchResult:
        self.result = BatchWriter(self.conn, GROUP, self.settings.max_message_bytes).apply(batch)
        return self.result

    def commit(self) -> None:
        self.conn.commit()

    def run(self, batch: list[InputMessage]) -> BatchResult:
        result = self.apply(batch)
        self.commit()
        return result

    def run_in_thread(self, batch: list[InputMessage]) -> threading.Thread:
        errors: list[BaseException] = []

        def target() -> None:
            try:
                self.run(batch)
            except BaseException as exc:  # surfaced by join_ok
                errors.append(exc)

        thread = threading.Thread(target=target, daemon=True)
        thread.errors = errors  # type: ignore[attr-defined]
        thread.start()
        return thread


def join_ok(thread: threading.Thread) -> None:
    thread.join(60)
    assert not thread.is_alive(), "writer did not finish"
    assert not thread.errors, thread.errors  # type: ignore[attr-defined]


@pytest.fixture
def writers(pipeline_factory) -> Iterator[tuple[Settings, list[Writer]]]:
    settings = pipeline_factory(source="synthetic").settings
    made = [Writer(settings) for _ in range(3)]
    yield settings, made
    for w in made:
        w.conn.close()


def assert_fresh(
    conn: psycopg2.extensions.connection, symbol: str, messages: list[InputMessage]
) -> None:
    """Stored = one writer applying every message once, checked against fresh computations."""
    batches = [contracts.decode_bars(m.value) for m in messages]
    expected = {
        d: [getattr(b, c)[i] for c in PRICE_COLUMNS] for b in batches for i, d in enumerate(b.dates)
    }
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT date, {', '.join(PRICE_COLUMNS)} FROM prices WHERE symbol = %s ORDER BY date",
            (symbol,),
        )
        stored = {r[0]: list(r[1:]) for r in cur.fetchall()}
        assert stored == dict(sorted(expected.items())), "stored prices differ from the source"
        assert assert_indicators_exact(conn, symbol) == len(expected)
        cur.execute(
            "SELECT last_date, bars_seen, state FROM indicator_state WHERE symbol = %s", (symbol,)
        )
        last_date, bars_seen, blob = cur.fetchone()
        dates = sorted(expected)
        cols = np.array([expected[d] for d in dates], dtype=np.float64).T
        columns = dict(zip(PRICE_COLUMNS, cols, strict=True))
        splits = split_events(dates, columns["splits"])
        bars = split_adjust(
            Bars(
                columns["open"],
                columns["high"],
                columns["low"],
                columns["close"],
                columns["volume"],
            ),
            dates,
            splits,
        )
        _, fresh_state = compute_incremental(bars, None)
        assert (last_date, bars_seen) == (dates[-1], len(dates))
        assert bytes(blob) == msgspec.msgpack.encode(fresh_state), "indicator state differs"
        cur.execute(
            "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = %s", (GROUP,)
        )
        offsets = dict(cur.fetchall())
    last = {}
    for m in messages:
        last[m.partition] = max(last.get(m.partition, -1), m.offset)
    assert offsets == {p: o + 1 for p, o in last.items()}
    conn.commit()


D = dt.date


def test_stale_writer_commits_last(writers):
    """The new owner C applies 0..9; the old owner A commits 0..4 afterwards: A is fenced."""
    _settings, (a, c, _) = writers
    msgs = bar_messages("FENCE", 0, D(2020, 1, 1), D(2020, 6, 30))  # 12 messages
    assert c.run(msgs[:10]).fenced == 0
    stale = a.run(msgs[:5])
    assert stale.fenced == 5 and stale.bars_stored == 0
    assert stale.seek_to == {(TOPIC, 0): 10}  # the consumer is told to skip ahead
    c.run(msgs[10:])
    assert_fresh(a.conn, "FENCE", msgs)


def test_stale_writer_commits_first(writers):
    """A holds 0..4 uncommitted while C tries 0..9: C waits, then applies only 5..9."""
    _settings, (a, c, _) = writers
    msgs = bar_messages("FENCE", 0, D(2020, 1, 1), D(2020, 6, 30))
    a.apply(msgs[:5])
    thread = c.run_in_thread(msgs[:10])
    thread.join(BLOCKED_SECONDS)
    assert thread.is_alive(), "the second writer did not wait for the first one's commit"
    a.commit()
    join_ok(thread)
    assert c.result.fenced == 5
    c.run(msgs[10:])
    assert_fresh(a.conn, "FENCE", msgs)


def test_concurrent_writers_with_overlapping_batches(writers):
    """Three writers start overlapping windows of one partition at once, round after round.

    Every window of a round starts at or before the offset the previous round stored, in
    whichever order its writers commit (25 after round one), as Kafka redelivers: from the
    committed offset on, never past a gap.
    """
    _settings, ws = writers
    msgs = bar_messages("FENCE", 0, D(2019, 1, 1), D(2020, 12, 31))  # ~50 messages
    windows = [(0, 12), (0, 20), (0, 25), (18, 40), (25, len(msgs)), (20, len(msgs))]
    for i in range(0, len(windows), 3):
        threads = [
            w.run_in_thread(msgs[lo:hi])
            for w, (lo, hi) in zip(ws, windows[i : i + 3], strict=False)
        ]
        for t in threads:
            join_ok(t)
    fenced = sum(w.result.fenced for w in ws)
    assert fenced > 0  # the windows overlap: some writer met messages already applied
    assert_fresh(ws[0].conn, "FENCE", msgs)


@pytest.mark.parametrize("older_first", [True, False], ids=["older-first", "newer-first"])
def test_symbol_through_two_partitions(writers, older_first):
    """After a partition-count increase one symbol's messages come through two partitions,
    held by two processors at once: the second waits for the first's symbol lock."""
    _settings, (a, b, _) = writers
    older = bar_messages("MOVED", 3, D(2020, 1, 1), D(2020, 6, 30))
    newer = bar_messages("MOVED", 7, D(2020, 7, 1), D(2020, 12, 31), first_offset=100)
    first, second = (older, newer) if older_first else (newer, older)
    a.apply(first)
    thread = b.run_in_thread(second)
    thread.join(BLOCKED_SECONDS)
    assert thread.is_alive(), "the second partition's writer did not wait for the symbol"
    a.commit()
    join_ok(thread)
    assert_fresh(a.conn, "MOVED", older + newer)


def test_dead_letter_of_a_stale_writer_parks_nothing(writers):
    """A stale writer isolating a message the new owner already applied must not park."""
    settings, (a, c, _) = writers
    msgs = bar_messages("FENCE", 0, D(2020, 1, 1), D(2020, 3, 31))
    c.run(msgs)
    writer = BatchWriter(a.conn, GROUP, settings.max_message_bytes)
    result = writer.dead_letter_only(msgs[1], ValueError("refused"))
    a.commit()
    assert result.dead_letters == [] and result.fenced == 1
    with a.conn.cursor() as cur:
        cur.execute("SELECT status FROM symbol_state WHERE symbol = 'FENCE'")
        assert cur.fetchone()[0] == "ok"
    assert_fresh(a.conn, "FENCE", msgs)
