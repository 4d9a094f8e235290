"""One poll batch of bar messages -> one PostgreSQL transaction. No Kafka in here.

Per symbol, strictly in message order:

- *append*: every new bar is later than the symbol's last stored date and carries no split:
  continue the indicators from the stored state (``compute_incremental``);
- *skip*: bars already stored with equal values are dropped first (re-sent tasks, overlaps);
- *rewrite*: anything else (bars inside the stored history, revised values, a split) upserts
  the raw bars and recomputes the symbol from all its stored prices, so the tables always
  equal a fresh full computation.

A message that cannot be processed is returned as a dead letter and its symbol is parked;
later messages of a parked symbol wait in ``parked_bars`` until it is unparked.

**Fencing.** A partition can move to another processor while its old owner still holds a
batch (a retry across a rebalance, a batch slower than ``max.poll.interval.ms``, messages of a
partition revoked during the same ``consume()``), and a symbol can arrive through two
partitions once the partition count is raised. So every batch first locks the offset rows of
its partitions (``consumer_offsets``, in partition order) and applies only messages at or after
the stored ``next_offset``; then it takes one advisory lock per symbol (in symbol order) and
reads the symbols' state only after that. Writers of one partition or one symbol therefore
run one after the other, each seeing what the previous one committed, and a message is applied
at most once however many processors hold it: a stale writer's batch is dropped, not applied.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec
import numpy as np
import psycopg2.extras
from psycopg2.extensions import connection as Connection

from finpipe_core import contracts, tasks
from finpipe_core.contracts import BarBatch
from finpipe_core.db.bulk import BackgroundCopy, copy_rows, pack_rows, read_rows, upsert_rows
from finpipe_core.exceptions import ContractError
from finpipe_core.indicators import (
    INDICATOR_COLUMNS,
    Bars,
    can_resume,
    compute_incremental,
    is_split,
    split_adjust,
    split_events,
)
from workers.processor.revision_log import diff_stored, record_revisions

logger = logging.getLogger(__name__)

PRICE_COLUMNS = ("open", "high", "low", "close", "adj_close", "volume", "dividends", "splits")
# The indicators' inputs: a bar that differs on one of these rewrites the symbol's history.
_INDICATOR_INPUTS = ("open", "high", "low", "close", "volume", "splits")
# pg_advisory_xact_lock(class, hashtext(symbol)): the class keeps finpipe's per-symbol locks
# apart from any other advisory lock in the database ("fp" in ASCII).
SYMBOL_LOCK_CLASS = 0x6670
# New rows buffered beyond this go to PostgreSQL in the background while the batch goes on
# (about 9,000 indicator rows): big enough that a COPY's fixed cost is small, small enough
# that a 500-message backfill batch is written in ~20 overlapping parts.
BACKGROUND_COPY_BYTES = 2 * 1024 * 1024
# What one message may raise besides bad data: infrastructure errors retry the whole batch.
RETRIABLE_DB_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


@dataclass(frozen=True)
class InputMessage:
    """What the batch needs of a consumed Kafka message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass
class DeadLetter:
    message: InputMessage
    error: Exception


@dataclass
class SymbolState:
    last_date: dt.date | None = None
    bars_seen: int = 0
    state: dict[str, Any] | None = None
    parked: bool = False

    @property
    def stale(self) -> bool:
        """History without a usable state (none saved, or saved by another indicator set or
        version): only a full recompute can continue it."""
        if self.last_date is None:
            return False
        return not can_resume(self.state)


@dataclass
class BatchResult:
    dead_letters: list[DeadLetter] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    bars_stored: int = 0
    parked: int = 0
    # Messages dropped because another writer had already applied them (a stale batch).
    fenced: int = 0
    # Partitions whose stored next offset lies beyond this batch: seek the consumer there.
    seek_to: dict[tuple[str, int], int] = field(default_factory=dict)


class NewRows:
    """Packed rows of dates no stored row has, per table, waiting for their COPY.

    Appends, and a rewritten symbol's indicators after their DELETE: written with a plain
    COPY, no staging table and no ON CONFLICT. ``mark``/``rollback`` drop what a failed
    message added; ``nbytes`` is kept as rows come so checking it costs nothing.
    """

    def __init__(self) -> None:
        self.prices: list[bytes] = []
        self.indicators: list[bytes] = []
        self.nbytes = 0

    def add(self, prices: bytes | None, indicators: bytes) -> None:
        if prices is not None:
            self.prices.append(prices)
            self.nbytes += len(prices)
        self.indicators.append(indicators)
        self.nbytes += len(indicators)

    def mark(self) -> tuple[int, int, int]:
        return len(self.prices), len(self.indicators), self.nbytes

    def rollback(self, mark: tuple[int, int, int]) -> None:
        n_prices, n_indicators, self.nbytes = mark
        del self.prices[n_prices:], self.indicators[n_indicators:]

    def take(self) -> list[tuple[str, tuple[str, ...], list[bytes]]]:
        """The pending COPYs, as ``(table, columns, packed rows)``; the buffers start anew."""
        copies = [
            ("prices", ("symbol", "date", *PRICE_COLUMNS), self.prices),
            ("indicators", ("symbol", "date", *INDICATOR_COLUMNS), self.indicators),
        ]
        self.prices, self.indicators, self.nbytes = [], [], 0
        return [c for c in copies if c[2]]


class BatchWriter:
    """Applies one batch inside the caller's transaction (the caller commits)."""

    def __init__(
        self, conn: Connection, group_id: str, max_message_bytes: int, record_offsets: bool = True
    ) -> None:
        self.conn = conn
        self.cur = conn.cursor()
        self.group_id = group_id
        self.record_offsets = record_offsets  # False when replaying held messages
        self.max_message_bytes = max_message_bytes
        self.symbols: dict[str, SymbolState] = {}
        self._new_rows = NewRows()
        self._copy = BackgroundCopy(conn)
        self._dirty: set[str] = set()
        self._tasks: dict[str, tasks.TaskResult] = {}
        self._task_symbols: set[str] = set()
        self._progress: dict[str, dt.date | str] = {}  # last processed date, or failure reason

    # -- entry point ------------------------------------------------------------------------
    def apply(self, messages: list[InputMessage]) -> BatchResult:
        result = BatchResult()
        if self.record_offsets:
            messages = self._fence(messages, result)
        # Only valid symbols reach SQL; a message with any other key is a dead letter below.
        symbols = {s for m in messages if (s := _symbol_from_key(m.key))}
        lock_symbols(self.cur, symbols)
        self._load_symbols(symbols)
        decoded = [self._decode(m) for m in messages]
        by_key: dict[bytes | None, list[int]] = {}
        for i, m in enumerate(messages):
            by_key.setdefault(m.key, []).append(i)
        merged: set[int] = set()  # later messages already applied with an earlier one
        try:
            for i, msg in enumerate(messages):
                result.next_offsets[(msg.topic, msg.partition)] = msg.offset + 1
                if i in merged:
                    continue
                run = self._append_run(i, by_key[msg.key], decoded)
                if run and self._apply_run([decoded[j] for j in run], result):
                    merged.update(run)
                else:
                    self._apply_one(msg, decoded[i], result)
                if self._new_rows.nbytes >= BACKGROUND_COPY_BYTES:
                    self._flush_in_background()
            self._flush()
        finally:
            self._copy.close()
        self._save_states()
        self._save_tasks()
        if self.record_offsets:
            self._save_offsets(result.next_offsets)
        return result

    def dead_letter_only(self, msg: InputMessage, error: Exception) -> BatchResult:
        """Record ``msg`` as dead (symbol parked, offset advanced) without applying it."""
        result = BatchResult()
        if self.record_offsets and not self._fence([msg], result):
            return result  # another writer got there first
        result.next_offsets[(msg.topic, msg.partition)] = msg.offset + 1
        symbol = _symbol_from_key(msg.key)
        lock_symbols(self.cur, {symbol} if symbol else set())
        self._dead_letter(msg, error, result, symbol=symbol)
        if self.record_offsets:
            self._save_offsets(result.next_offsets)
        return result

    def _fence(self, messages: list[InputMessage], result: BatchResult) -> list[InputMessage]:
        """Lock the batch's offset rows and keep only the messages nobody has applied yet.

        The no-op upsert creates a missing row (0: nothing applied) and locks existing ones
        in one statement, in (topic, partition) order so two writers never deadlock; a second
        writer of the same partition waits here until the first commits, then sees its offset.
        """
        partitions = sorted({(m.topic, m.partition) for m in messages})
        if not partitions:
            return messages
        rows = psycopg2.extras.execute_values(
            self.cur,
            "INSERT INTO consumer_offsets AS o (group_id, topic, partition, next_offset) "
            "VALUES %s ON CONFLICT (group_id, topic, partition) DO UPDATE "
            "SET next_offset = o.next_offset RETURNING topic, partition, next_offset",
            [(self.group_id, t, p, 0) for t, p in partitions],
            fetch=True,
        )
        stored = {(t, p): o for t, p, o in rows}
        fresh = [m for m in messages if m.offset >= stored[(m.topic, m.partition)]]
        result.fenced = len(messages) - len(fresh)
        if result.fenced:
            last = {}
            for m in messages:
                last[(m.topic, m.partition)] = max(m.offset, last.get((m.topic, m.partition), -1))
            result.seek_to = {tp: o for tp, o in stored.items() if o > last[tp] + 1}
            logger.warning(
                "dropped %d messages another processor already applied (stored offsets %s)",
                result.fenced,
                {p: o for (_, p), o in stored.items()},
            )
        return fresh

    def _decode(self, msg: InputMessage) -> BarBatch | ContractError:
        try:
            batch = contracts.decode_bars(msg.value, self.max_message_bytes)
            if msg.key is not None and msg.key != batch.symbol.encode():
                raise ContractError(f"key {msg.key!r} is not the symbol {batch.symbol!r}")
        except ContractError as exc:
            return exc
        return batch

    def _append_run(
        self, start: int, same_key: list[int], decoded: list[BarBatch | ContractError]
    ) -> list[int]:
        """Positions of the messages of ``start``'s symbol (``same_key``: the positions of
        every message with its key), from ``start`` on, that are plain appends one after the
        other (at least two, or none).

        A backfill batch holds several consecutive tasks or chunks of one symbol; computed
        together they cost one engine call, and a split among them is adjusted before
        anything is written instead of rewriting rows this batch has just stored. Other
        symbols' messages in between do not matter: symbols are independent.
        """
        first = decoded[start]
        if (
            len(same_key) < 2
            or not isinstance(first, BarBatch)
            or first.status != "ok"
            or not first.dates
        ):
            return []
        state = self.symbols.get(first.symbol)
        if state is None or state.parked or (state.last_date is not None and state.stale):
            return []
        run: list[int] = []
        last = state.last_date
        for j in same_key[same_key.index(start) :]:
            batch = decoded[j]
            if (
                not isinstance(batch, BarBatch)
                or batch.status != "ok"
                or not batch.dates
                or (last is not None and batch.dates[0] <= last)
                # With stored history a split rewrites it: that message goes on its own.
                or (state.last_date is not None and any(is_split(x) for x in batch.splits))
            ):
                break
            run.append(j)
            last = batch.dates[-1]
        return run if len(run) > 1 else []

    def _apply_run(self, batches: list[BarBatch], result: BatchResult) -> bool:
        """Append the bars of several messages of one symbol with one engine call.

        Nothing is written if any of them fails: the caller then applies each message on
        its own, so the failing one is dead-lettered exactly as it would be alone.
        """
        symbol = batches[0].symbol
        state = self.symbols[symbol]
        dates = [d for b in batches for d in b.dates]
        raw = {
            c: np.concatenate([np.asarray(getattr(b, c), dtype=np.float64) for b in batches])
            for c in PRICE_COLUMNS
        }
        before = self._checkpoint(symbol)
        try:
            stored = self._append(symbol, dates, raw, state, _bars_of(raw))
        except RETRIABLE_DB_ERRORS:
            raise
        except Exception:
            self._restore(symbol, before)
            return False
        result.bars_stored += stored
        for batch in batches:
            self._record_task(batch)
        return True

    def _checkpoint(self, symbol: str) -> tuple[SymbolState, tuple[int, int, int], bool]:
        """What to restore if applying bars of ``symbol`` fails: its state, the new-row
        buffers' lengths and whether its state was already due to be saved."""
        return replace(self.symbols[symbol]), self._new_rows.mark(), symbol in self._dirty

    def _restore(
        self, symbol: str, checkpoint: tuple[SymbolState, tuple[int, int, int], bool]
    ) -> None:
        saved, mark, dirty = checkpoint
        self.symbols[symbol] = saved
        self._new_rows.rollback(mark)
        if not dirty:
            self._dirty.discard(symbol)

    def _apply_one(
        self, msg: InputMessage, batch: BarBatch | ContractError, result: BatchResult
    ) -> None:
        # The connection is this message's only once the background COPY is done; a COPY's
        # error is raised here, outside the message's own error handling (it is not this
        # message's fault: the batch fails and is retried message by message).
        self._copy.wait()
        if isinstance(batch, ContractError):
            self._dead_letter(msg, batch, result, symbol=_symbol_from_key(msg.key))
            return
        state = self.symbols.setdefault(batch.symbol, SymbolState())
        if state.parked:
            self._hold(msg, batch.symbol)
            result.parked += 1
            return
        touches_history = (
            state.last_date is not None
            and bool(batch.dates)
            and (
                batch.dates[0] <= state.last_date
                or state.stale
                or any(is_split(x) for x in batch.splits)
            )
        )
        if touches_history:
            # This message reads or rewrites stored rows: write the buffered rows first and
            # guard it with a savepoint, so rolling it back takes no other message's rows.
            self._flush()
            self.cur.execute("SAVEPOINT bar_message")
        before = self._checkpoint(batch.symbol)
        try:
            result.bars_stored += self._apply_bars(batch, state)
        except RETRIABLE_DB_ERRORS:
            raise  # the database, not the message: the whole batch is retried
        except Exception as exc:
            # Anything else this message raises (bad values, an engine state error, an
            # overflow, a row the database refuses) is the message's: dead-letter it, park
            # its symbol and go on with the rest of the batch.
            if touches_history:
                self.cur.execute("ROLLBACK TO SAVEPOINT bar_message")
            self._restore(batch.symbol, before)
            self._dead_letter(msg, exc, result, symbol=batch.symbol)
            return
        if touches_history:
            self.cur.execute("RELEASE SAVEPOINT bar_message")
        self._record_task(batch)

    # -- bars -------------------------------------------------------------------------------
    def _apply_bars(self, batch: BarBatch, state: SymbolState) -> int:
        if batch.status != "ok":
            return 0
        dates = batch.dates
        raw = {c: np.asarray(getattr(batch, c), dtype=np.float64) for c in PRICE_COLUMNS}
        bars: Bars | None = _bars_of(raw)
        has_split = bool(np.any((raw["splits"] > 0) & (raw["splits"] != 1.0)))

        revised = 0
        if state.last_date is not None and dates[0] <= state.last_date:
            compared = self._compare_stored(batch, dates, raw, state.last_date)
            if compared is None:  # an indicator input differs, or a new bar inside history
                return self._rewrite(batch.symbol, dates, raw, state)
            keep, changed = compared
            if changed:  # only adj_close or dividends were revised: no indicator changes
                upsert_rows(
                    self.cur,
                    "prices",
                    ("symbol", "date", *PRICE_COLUMNS),
                    ("symbol", "date"),
                    [
                        pack_rows(
                            batch.symbol,
                            [dates[i] for i in changed],
                            [raw[c][changed] for c in PRICE_COLUMNS],
                        )
                    ],
                )
                revised = len(changed)
            dates = [dates[i] for i in keep]
            raw = {c: v[keep] for c, v in raw.items()}
            bars = None  # validated above; the kept bars are built again by _append
            has_split = bool(np.any((raw["splits"] > 0) & (raw["splits"] != 1.0)))
            if not dates:
                return revised
        if state.last_date is not None and (has_split or state.stale):
            return revised + self._rewrite(batch.symbol, dates, raw, state)
        return revised + self._append(batch.symbol, dates, raw, state, bars)

    def _append(
        self,
        symbol: str,
        dates: list[dt.date],
        raw: dict[str, np.ndarray],
        state: SymbolState,
        bars: Bars | None = None,
    ) -> int:
        splits = split_events(dates, raw["splits"])
        if bars is None:
            bars = _bars_of(raw)
        if splits:  # only for a symbol's first bars: later splits take the rewrite path
            bars = split_adjust(bars, dates, splits)
        outputs, state.state = compute_incremental(bars, state.state)
        state.last_date = dates[-1]
        state.bars_seen += len(dates)
        self._dirty.add(symbol)
        self._new_rows.add(
            pack_rows(symbol, dates, [raw[c] for c in PRICE_COLUMNS]),
            pack_rows(symbol, dates, [outputs[c] for c in INDICATOR_COLUMNS], nan_as_null=True),
        )
        return len(dates)

    def _compare_stored(
        self, batch: BarBatch, dates: list[dt.date], raw: dict[str, np.ndarray], last_date: dt.date
    ) -> tuple[list[int], list[int]] | None:
        """Compare the message's bars with the stored ones, and log every difference in
        ``revisions`` (same transaction).

        :return: positions of bars to append (after ``last_date``) and positions whose stored
            row differs only in columns the indicators do not read (``adj_close``,
            ``dividends``: updated in place); None when an indicator input differs or a new
            bar lies inside the stored history (the history must be rewritten).
        """
        self._flush()
        self.cur.execute(
            f"SELECT date, {', '.join(PRICE_COLUMNS)} FROM prices "
            "WHERE symbol = %s AND date = ANY(%s::date[])",
            (batch.symbol, [d for d in dates if d <= last_date]),
        )
        stored = {
            row[0]: dict(zip(PRICE_COLUMNS, row[1:], strict=True)) for row in self.cur.fetchall()
        }
        revisions = diff_stored(stored, dates, raw, last_date, PRICE_COLUMNS)
        rewrite = any(r.touches(_INDICATOR_INPUTS) for r in revisions)
        record_revisions(self.cur, batch.symbol, batch.task_id, revisions, rewrite)
        if rewrite:
            return None
        keep = [i for i, day in enumerate(dates) if day > last_date]
        return keep, [r.position for r in revisions]

    def _rewrite(
        self, symbol: str, dates: list[dt.date], raw: dict[str, np.ndarray], state: SymbolState
    ) -> int:
        """Upsert the raw bars, then recompute the symbol from every stored price."""
        self._flush()
        cur = self.cur
        upsert_rows(
            cur,
            "prices",
            ("symbol", "date", *PRICE_COLUMNS),
            ("symbol", "date"),
            [pack_rows(symbol, dates, [raw[c] for c in PRICE_COLUMNS])],
        )
        all_dates, cols = read_rows(
            cur,
            "SELECT date, open, high, low, close, volume, splits FROM prices "
            "WHERE symbol = %s ORDER BY date",
            (symbol,),
            n_columns=6,
        )
        splits = split_events(all_dates, cols[5])
        bars = split_adjust(Bars(*cols[:5]), all_dates, splits)
        outputs, state.state = compute_incremental(bars, None)
        state.last_date, state.bars_seen = all_dates[-1], len(all_dates)
        self._dirty.add(symbol)
        cur.execute("DELETE FROM indicators WHERE symbol = %s", (symbol,))
        self._new_rows.add(
            None,
            pack_rows(symbol, all_dates, [outputs[c] for c in INDICATOR_COLUMNS], nan_as_null=True),
        )
        self._flush()
        logger.info(
            "symbol=%s history rewritten bars=%d splits=%d", symbol, len(all_dates), len(splits)
        )
        return len(dates)

    def _flush(self) -> None:
        """COPY the buffered new rows. Their dates lie after the symbol's stored history (or
        its indicators were just deleted), all under the symbol's lock, so no key can exist:
        a plain COPY, which costs PostgreSQL about half of a staging table and an upsert. A
        key that exists anyway (rows written behind the processor's back) fails the batch;
        the message is then dead-lettered on its own, never silently overwritten."""
        self._copy.wait()
        for table, columns, packed in self._new_rows.take():
            copy_rows(self.cur, table, columns, packed)

    def _flush_in_background(self) -> None:
        """Start COPYing the buffered new rows; the next message waits for it first."""
        self._copy.start(self._new_rows.take())

    # -- bookkeeping --------------------------------------------------------------------------
    def _load_symbols(self, symbols: set[str]) -> None:
        """Read the symbols' state; called after ``lock_symbols``, so nobody changes it."""
        wanted = sorted(s for s in symbols if s not in self.symbols)
        if not wanted:
            return
        # FOR SHARE: an unpark (FOR UPDATE) waits for this batch, or this batch for it, so a
        # message is never held for a symbol that was just unparked.
        self.cur.execute(
            "SELECT symbol FROM symbol_state WHERE symbol = ANY(%s) AND status = 'parked' "
            "ORDER BY symbol FOR SHARE",
            (wanted,),
        )
        parked = {row[0] for row in self.cur.fetchall()}
        self.cur.execute(
            "SELECT symbol, last_date, bars_seen, state FROM indicator_state "
            "WHERE symbol = ANY(%s)",
            (wanted,),
        )
        stored = {row[0]: row[1:] for row in self.cur.fetchall()}
        for symbol in wanted:
            last_date, bars_seen, blob = stored.get(symbol, (None, 0, None))
            state = msgspec.msgpack.decode(blob) if blob is not None else None
            self.symbols[symbol] = SymbolState(last_date, bars_seen, state, symbol in parked)

    def _save_states(self) -> None:
        rows = [
            (s, st.last_date, st.bars_seen, msgspec.msgpack.encode(st.state))
            for s, st in self.symbols.items()
            if s in self._dirty
        ]
        if rows:
            psycopg2.extras.execute_values(
                self.cur,
                "INSERT INTO indicator_state (symbol, last_date, bars_seen, state) VALUES %s "
                "ON CONFLICT (symbol) DO UPDATE SET last_date = EXCLUDED.last_date, "
                "bars_seen = EXCLUDED.bars_seen, state = EXCLUDED.state, updated_at = now()",
                rows,
                page_size=len(rows),  # one statement, not one per 100 rows
            )
        self._dirty.clear()

    def _ensure_symbol(self, symbol: str) -> None:
        # A symbol outside the universe still gets a state row; it is not made active.
        self.cur.execute(
            "INSERT INTO symbols (symbol, active) VALUES (%s, false) ON CONFLICT DO NOTHING; "
            "INSERT INTO symbol_state (symbol) VALUES (%s) ON CONFLICT DO NOTHING",
            (symbol, symbol),
        )

    def _record_task(self, batch: BarBatch) -> None:
        """Buffer the task's status and the symbol's progress (written by ``_save_tasks``)."""
        last_chunk = batch.chunk == batch.chunks - 1
        status = tasks.result_status(batch.status, last_chunk)
        task = self._tasks.get(batch.task_id)
        if task is None or batch.chunk == 0:  # chunk 0: a (re)delivery starts the count anew
            task = self._tasks[batch.task_id] = tasks.TaskResult(
                batch.task_id, reset=batch.chunk == 0
            )
        self._task_symbols.add(batch.symbol)
        task.bars += len(batch.dates)
        task.status, task.error, task.final = status, batch.reason, last_chunk
        if status in tasks.FINISHED:
            previous = self._progress.get(batch.symbol)
            done = max(batch.end, previous) if isinstance(previous, dt.date) else batch.end
            self._progress[batch.symbol] = done
        elif status is tasks.TaskStatus.FAILED:
            self._progress[batch.symbol] = batch.reason or "failed"

    def _save_tasks(self) -> None:
        """Tasks, symbols and symbol progress of the whole batch, in a few statements."""
        if not self._tasks:
            return
        cur = self.cur
        symbols = sorted(self._task_symbols)
        cur.execute(
            "INSERT INTO symbols (symbol, active) SELECT unnest(%s::text[]), false "
            "ON CONFLICT DO NOTHING; "
            "INSERT INTO symbol_state (symbol) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
            (symbols, symbols),
        )
        known = tasks.record_results(cur, list(self._tasks.values()))
        if known < len(self._tasks):
            logger.warning(
                "results of %d tasks the manager never created: bars stored, "
                "no task status recorded",
                len(self._tasks) - known,
            )
        done = [(sym, p) for sym, p in self._progress.items() if isinstance(p, dt.date)]
        failed = [(sym, p) for sym, p in self._progress.items() if isinstance(p, str)]
        if done:
            psycopg2.extras.execute_values(
                cur,
                "UPDATE symbol_state st SET last_processed_date = "
                "  GREATEST(st.last_processed_date, v.d::date), status = 'ok', error = NULL, "
                "  updated_at = now() FROM (VALUES %s) AS v (symbol, d) "
                "WHERE st.symbol = v.symbol AND st.status <> 'parked'",
                done,
                page_size=len(done),  # one statement, not one per 100 rows
            )
        if failed:
            psycopg2.extras.execute_values(
                cur,
                "UPDATE symbol_state st SET status = 'failed', error = v.reason, "
                "  updated_at = now() FROM (VALUES %s) AS v (symbol, reason) "
                "WHERE st.symbol = v.symbol AND st.status <> 'parked'",
                failed,
                page_size=len(failed),  # one statement, not one per 100 rows
            )
        self._progress.clear()
        self._tasks.clear()
        self._task_symbols.clear()

    def _dead_letter(
        self, msg: InputMessage, exc: Exception, result: BatchResult, symbol: str | None
    ) -> None:
        logger.warning(
            "dead letter %s[%d]@%d symbol=%s error=%s",
            msg.topic,
            msg.partition,
            msg.offset,
            symbol,
            exc,
        )
        result.dead_letters.append(DeadLetter(msg, exc))
        reason = contracts.clean_reason(f"{type(exc).__name__}: {exc}")
        self.cur.execute(
            "INSERT INTO dead_letters (source_topic, source_partition, source_offset, symbol, "
            "error) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (msg.topic, msg.partition, msg.offset, symbol, reason),
        )
        if symbol is None:
            return
        self._ensure_symbol(symbol)
        self.cur.execute(
            "UPDATE symbol_state SET status = 'parked', error = %s, updated_at = now() "
            "WHERE symbol = %s",
            (reason, symbol),
        )
        self.symbols.setdefault(symbol, SymbolState()).parked = True

    def _hold(self, msg: InputMessage, symbol: str) -> None:
        self.cur.execute(
            'INSERT INTO parked_bars (symbol, topic, partition, "offset", value) '
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (symbol, msg.topic, msg.partition, msg.offset, psycopg2.Binary(msg.value)),
        )

    def _save_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        if offsets:
            psycopg2.extras.execute_values(
                self.cur,
                "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) "
                "VALUES %s ON CONFLICT (group_id, topic, partition) DO UPDATE SET "
                "next_offset = GREATEST(consumer_offsets.next_offset, EXCLUDED.next_offset), "
                "updated_at = now()",
                [(self.group_id, t, p, o) for (t, p), o in offsets.items()],
            )


def lock_symbols(cur: psycopg2.extensions.cursor, symbols: set[str]) -> None:
    """Take the per-symbol transaction locks of ``symbols``, in symbol order (no deadlock).

    Every writer of a symbol's rows and state takes them first (processor batches, unpark),
    so two writers of one symbol, e.g. through two partitions after the partition count was
    raised, run one after the other and the second reads what the first committed.
    """
    if symbols:
        cur.execute(
            "SELECT count(pg_advisory_xact_lock(%s, hashtext(s))) "
            "FROM (SELECT s FROM unnest(%s::text[]) AS s ORDER BY s OFFSET 0) AS ordered",
            (SYMBOL_LOCK_CLASS, sorted(symbols)),
        )


def _bars_of(raw: dict[str, np.ndarray]) -> Bars:
    """The engine's input from a message's price columns (validates them)."""
    return Bars(raw["open"], raw["high"], raw["low"], raw["close"], raw["volume"])


def _symbol_from_key(key: bytes | None) -> str | None:
    """The key's symbol if it is a valid one (a garbage key parks nothing)."""
    try:
        return contracts.validate_symbol(key.decode()) if key else None
    except (UnicodeDecodeError, ContractError):
        return None


def stored_offsets(
    conn: Connection, group_id: str, topic: str, partitions: list[int]
) -> dict[int, int]:
    """Next offsets recorded in PostgreSQL for ``partitions`` (absent: nothing processed)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT partition, next_offset FROM consumer_offsets "
            "WHERE group_id = %s AND topic = %s AND partition = ANY(%s)",
            (group_id, topic, partitions),
        )
        return dict(cur.fetchall())
