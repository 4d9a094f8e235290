"""Deterministic synthetic bars for any symbol: for scale tests and benchmarks.

Each symbol gets its own seeded random walk over the trading calendar from ``ORIGIN``; every
value is a function of the symbol and the session alone, so the bars of a date never depend
on the range asked for. Occasional splits (the raw price drops by the ratio on the ex-date)
and quarterly dividends make the data as awkward as real data.

A fetch costs what its range costs, as a real source's does: the calendar is cut into blocks
of ``BLOCK`` sessions, and a short per-symbol "spine" (one draw per block, whole calendar)
holds each block's total log return and its split, so the walk's level at any block start is
a prefix sum over ~140 numbers. A block's own sessions come from the symbol's counter-based
stream for that block: its returns are normals conditioned on summing to the block's total (a
Brownian bridge, so marginally the same iid walk), plus the open/high/low/volume noise. A
one-day fetch generates the spine and one block, not the history since 1995.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from bisect import bisect_left, bisect_right
from functools import lru_cache

import numpy as np

from finpipe_core.calendar import trading_days
from workers.sources.base import NoDataError, RawBars

ORIGIN = dt.date(1995, 1, 3)
HORIZON = dt.date(2030, 12, 31)
# About one split per symbol every 20 years of sessions, as for large US stocks.
SPLIT_PROBABILITY = 1 / 5000
# Sessions per generated block: what a one-day fetch generates at least.
BLOCK = 64
# Daily log return: mean and standard deviation.
DRIFT, VOLATILITY = 0.0003, 0.018


@lru_cache(maxsize=1)
def _sessions() -> list[dt.date]:
    return trading_days(ORIGIN, HORIZON)


def _seed(symbol: str) -> int:
    return int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:8], "little")


_LOCAL = threading.local()
_RATIOS = np.array([2.0, 3.0, 1.5])


class _Streams:
    """Counter-based random streams of one symbol: stream ``i`` starts at Philox counter
    (0, i, 0, 0) under the symbol's key, so any block's draws are reached without drawing the
    blocks before it. One generator per thread is re-keyed per stream: building a generator
    costs more than a block's draws."""

    def __init__(self, symbol: str) -> None:
        self.key = np.array([_seed(symbol), 0], dtype=np.uint64)
        if not hasattr(_LOCAL, "generator"):
            _LOCAL.generator = np.random.Generator(np.random.Philox(0))
        self.generator: np.random.Generator = _LOCAL.generator

    def at(self, stream: int) -> np.random.Generator:
        self.generator.bit_generator.state = {
            "bit_generator": "Philox",
            "state": {"counter": np.array([0, stream, 0, 0], dtype=np.uint64), "key": self.key},
            "buffer": np.zeros(4, dtype=np.uint64),
            "buffer_pos": 4,
            "has_uint32": 0,
            "uinteger": 0,
        }
        return self.generator


def _spine(streams: _Streams) -> tuple[np.ndarray, ...]:
    """Per block: log level and shares outstanding at its start, total log return, split
    position and ratio (0 = none). Small: one draw per block of the whole calendar."""
    blocks = -(-len(_sessions()) // BLOCK)
    rng = streams.at(0)
    u = rng.random((4, blocks))
    totals = BLOCK * DRIFT + VOLATILITY * np.sqrt(BLOCK) * rng.standard_normal(blocks)
    split_at = (u[0] * BLOCK).astype(np.int64)
    split_at[0] = max(split_at[0], 1)  # never on the first session
    ratio = np.where(u[1] < BLOCK * SPLIT_PROBABILITY, _RATIOS[(u[2] * 3).astype(np.int64)], 0.0)
    # Exclusive prefix sum and product: the level and shares where each block starts.
    level = np.log(20 + 280 * u[3, 0]) + np.cumsum(totals) - totals
    factor = np.where(ratio > 0, ratio, 1.0)
    shares = np.cumprod(factor) / factor
    return level, shares, totals, split_at, ratio


def _bars(symbol: str, lo: int, hi: int) -> RawBars:
    """Sessions ``lo`` .. ``hi - 1`` of ``symbol``: the blocks holding them, cut to size."""
    days = _sessions()[lo:hi]
    if hi <= lo:
        empty = np.empty(0)
        return RawBars(symbol, days, *([empty] * 8), source="synthetic")
    streams = _Streams(symbol)
    level, shares_at, totals, split_at, ratio = _spine(streams)
    blocks = np.arange(lo // BLOCK, (hi - 1) // BLOCK + 1)
    # Per block (rows): return, open, high, low and volume noise, from the block's own stream.
    z = np.stack([streams.at(k + 1).standard_normal((5, BLOCK)) for k in blocks], axis=1)
    # Normals conditioned on their sum: each block ends where the spine says it does.
    returns = (
        VOLATILITY * (z[0] - z[0].mean(axis=1, keepdims=True)) + (totals[blocks] / BLOCK)[:, None]
    )
    adjusted = np.exp(level[blocks][:, None] + np.cumsum(returns, axis=1))
    splits = np.zeros((len(blocks), BLOCK))
    if ratio[blocks].any():
        splits[np.arange(len(blocks)), split_at[blocks]] = ratio[blocks]
        shares = shares_at[blocks][:, None] * np.cumprod(np.where(splits > 0, splits, 1.0), axis=1)
    else:
        shares = shares_at[blocks][:, None]
    close = np.round(adjusted / shares, 4)
    open_ = np.round(close * (1 + 0.005 * z[1]), 4)
    high = np.round(np.maximum(open_, close) * (1 + np.abs(0.01 * z[2])), 4)
    low = np.round(np.minimum(open_, close) * (1 - np.abs(0.01 * z[3])), 4)
    volume = np.round(np.exp(13 + 0.5 * z[4]) * shares)
    cut = slice(lo - blocks[0] * BLOCK, hi - blocks[0] * BLOCK)
    open_, high, low, close, adjusted, volume, splits = (
        a.ravel()[cut] for a in (open_, high, low, close, np.round(adjusted, 4), volume, splits)
    )
    index = np.arange(lo, hi)
    dividends = np.where((index > 0) & (index % 63 == 0), np.round(close * 0.004, 4), 0.0)
    return RawBars(
        symbol,
        days,
        open_,
        high,
        low,
        close,
        adjusted,
        volume,
        dividends,
        splits,
        source="synthetic",
    )


class SyntheticSource:
    """Any symbol, any range on the trading calendar between ORIGIN and HORIZON."""

    name = "synthetic"

    def fetch(self, symbol: str, start: dt.date, end: dt.date) -> RawBars:
        if end < ORIGIN or start > HORIZON:
            raise NoDataError(f"synthetic data covers {ORIGIN}..{HORIZON}, not {start}..{end}")
        sessions = _sessions()
        return _bars(symbol, bisect_left(sessions, start), bisect_right(sessions, end))
