"""Suspicious bars: flagged, never silently computed over, never changed. Dagster-free.

The bars are stored as the source gave them; these checks read ``prices`` and say which dates
of which symbol look wrong, so a user can tell a real move from a data error before trusting
the indicators computed over it (the Dagster asset checks in
``finpipe_dagster/quality_checks.py`` and ``finpipe status`` report them):

- ``split_jump``: a close-to-close move matching a split ratio (2:1, 3:1, 1:10, ...) with no
  split recorded that day: a split the source missed (the raw prices jump, the indicators see
  a crash that never happened);
- ``unit_jump``: a move of about 100x that reverts within a few bars (cents for dollars);
- ``nan_price``: a price that is NaN on a bar that has volume;
- ``zero_volume``: a run of consecutive bars without volume (a halted or dead listing, or a
  source that lost the volume);
- ``missing_sessions``: NYSE sessions missing inside a symbol's stored range (a source that
  dropped rows, e.g. yfinance rows without prices, which the agent does not publish).
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import psycopg2.extensions

from finpipe_core.calendar import trading_days

SPLIT_JUMP: Final = "split_jump"
UNIT_JUMP: Final = "unit_jump"
NAN_PRICE: Final = "nan_price"
ZERO_VOLUME: Final = "zero_volume"
MISSING_SESSIONS: Final = "missing_sessions"
CHECKS: Final = (SPLIT_JUMP, UNIT_JUMP, NAN_PRICE, ZERO_VOLUME, MISSING_SESSIONS)

# Common split ratios (forward and reverse); a close-to-close ratio within SPLIT_TOLERANCE of
# one of them on a day without a recorded split is flagged. Real one-day moves of 33% or more
# exist (crashes, buy-outs): the flag means "look", not "wrong".
SPLIT_RATIOS: Final = (1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 8.0, 10.0, 15.0, 20.0)
SPLIT_TOLERANCE: Final = 0.03
# A unit error: a move between these factors that the price reverses within UNIT_REVERT_BARS.
UNIT_FACTOR_RANGE: Final = (50.0, 200.0)
UNIT_REVERT_BARS: Final = 10
# Consecutive zero-volume bars that make a stretch worth flagging.
ZERO_VOLUME_RUN: Final = 5


@dataclass(frozen=True, slots=True)
class SymbolBars:
    """A symbol's stored bars (raw, as the source gave them), in date order."""

    symbol: str
    dates: list[dt.date]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    adj_close: np.ndarray
    volume: np.ndarray
    splits: np.ndarray


@dataclass
class QualityReport:
    """Per check, the offending dates of each symbol (symbols without any are absent)."""

    symbols: int = 0
    bars: int = 0
    findings: dict[str, dict[str, list[dt.date]]] = field(
        default_factory=lambda: {c: {} for c in CHECKS}
    )

    def flags(self, symbol: str) -> list[str]:
        """The checks ``symbol`` fails, in ``CHECKS`` order."""
        return [c for c in CHECKS if symbol in self.findings[c]]


def split_jumps(bars: SymbolBars) -> list[dt.date]:
    """Dates whose close-to-close ratio (either way) matches a split ratio, without a split."""
    if len(bars.dates) < 2:
        return []
    prev, cur = bars.close[:-1], bars.close[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(prev / cur, cur / prev)
    hit = np.zeros(len(ratio), dtype=bool)
    for r in SPLIT_RATIOS:
        hit |= np.abs(ratio / r - 1.0) <= SPLIT_TOLERANCE
    no_split = ~((bars.splits[1:] > 0) & (bars.splits[1:] != 1.0))
    return [bars.dates[i + 1] for i in np.flatnonzero(hit & no_split)]


def unit_jumps(bars: SymbolBars) -> list[dt.date]:
    """Dates of a ~100x level that the close leaves again within ``UNIT_REVERT_BARS`` bars:
    every bar from the jump to the bar before the reversal."""
    close = bars.close
    lo, hi = UNIT_FACTOR_RANGE
    flagged: list[dt.date] = []
    i = 1
    while i < len(close):
        ratio = close[i] / close[i - 1] if close[i - 1] > 0 else math.nan
        up = lo <= ratio <= hi
        down = lo <= 1 / ratio <= hi if ratio > 0 else False
        if up or down:
            base = close[i - 1]
            for j in range(i + 1, min(i + 1 + UNIT_REVERT_BARS, len(close))):
                back = close[j] / base
                if 1 / 1.5 <= back <= 1.5:  # back near the level before the jump
                    flagged += bars.dates[i:j]
                    i = j
                    break
        i += 1
    return flagged


def nan_prices(bars: SymbolBars) -> list[dt.date]:
    """Dates with a NaN price (open, high, low, close or adj_close) and volume above 0."""
    prices = np.vstack([bars.open, bars.high, bars.low, bars.close, bars.adj_close])
    bad = np.isnan(prices).any(axis=0) & (bars.volume > 0)
    return [bars.dates[i] for i in np.flatnonzero(bad)]


def zero_volume_stretches(bars: SymbolBars, run: int = ZERO_VOLUME_RUN) -> list[dt.date]:
    """Dates inside runs of at least ``run`` consecutive bars with zero volume."""
    flagged: list[dt.date] = []
    start = None
    zero = [*(bars.volume == 0).tolist(), False]
    for i, z in enumerate(zero):
        if z and start is None:
            start = i
        elif not z and start is not None:
            if i - start >= run:
                flagged += bars.dates[start:i]
            start = None
    return flagged


def missing_sessions(bars: SymbolBars, sessions: Sequence[dt.date]) -> list[dt.date]:
    """NYSE sessions between the symbol's first and last stored date that it has no bar for.

    :param sessions: sorted trading days covering the symbol's range.
    """
    if not bars.dates:
        return []
    lo = bisect.bisect_left(sessions, bars.dates[0])
    hi = bisect.bisect_right(sessions, bars.dates[-1])
    have = set(bars.dates)
    return [d for d in sessions[lo:hi] if d not in have]


def iter_symbol_bars(
    conn: psycopg2.extensions.connection, symbols: Sequence[str] | None = None
) -> Iterator[SymbolBars]:
    """Every stored symbol's bars (or those of ``symbols``), one symbol at a time (one
    primary-key range read each), so memory holds one symbol's history."""
    with conn.cursor() as cur:
        if symbols is None:
            # The processors register every symbol they store bars for.
            cur.execute("SELECT symbol FROM symbols ORDER BY symbol")
            symbols = [row[0] for row in cur.fetchall()]
        for symbol in symbols:
            cur.execute(
                "SELECT date, open, high, low, close, adj_close, volume, splits FROM prices "
                "WHERE symbol = %s ORDER BY date",
                (symbol,),
            )
            rows = cur.fetchall()
            if rows:
                yield _symbol_bars(symbol, rows)
    if not conn.autocommit:
        conn.rollback()


def _symbol_bars(symbol: str, rows: list[tuple]) -> SymbolBars:
    cols = np.array([r[1:] for r in rows], dtype=np.float64).T
    return SymbolBars(symbol, [r[0] for r in rows], *cols)


def check_symbol(bars: SymbolBars, sessions: Sequence[dt.date]) -> dict[str, list[dt.date]]:
    """Every check on one symbol: offending dates per check name (empty lists included)."""
    return {
        SPLIT_JUMP: split_jumps(bars),
        UNIT_JUMP: unit_jumps(bars),
        NAN_PRICE: nan_prices(bars),
        ZERO_VOLUME: zero_volume_stretches(bars),
        MISSING_SESSIONS: missing_sessions(bars, sessions),
    }


def scan(
    conn: psycopg2.extensions.connection, symbols: Sequence[str] | None = None
) -> QualityReport:
    """Run every check over the stored bars (of ``symbols``, or all)."""
    report = QualityReport()
    sessions: list[dt.date] = []
    for bars in iter_symbol_bars(conn, symbols):
        if not sessions or bars.dates[0] < sessions[0] or bars.dates[-1] > sessions[-1]:
            lo = min(bars.dates[0], sessions[0]) if sessions else bars.dates[0]
            hi = max(bars.dates[-1], sessions[-1]) if sessions else bars.dates[-1]
            sessions = trading_days(lo, hi)
        report.symbols += 1
        report.bars += len(bars.dates)
        for check, dates in check_symbol(bars, sessions).items():
            if dates:
                report.findings[check][bars.symbol] = dates
    return report
