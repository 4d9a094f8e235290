"""Incremental indicators as the processor uses them, against TA-Lib computing the same bars fresh.

A processor holds a state per symbol and receives new bars: one bar a day, or a year of bars
per message during a backfill. Without a state, the only way to get exact values for those
bars (EMA, RSI, ADX, MACD depend on the whole history) is TA-Lib over the symbol's history up
to them. So each measurement below puts the engine next to TA-Lib producing the same values
from scratch, interleaved symbol by symbol so a busy machine slows both alike:

- one-bar update (the daily case): ``compute_incremental(1 bar, state)`` after YEARS of
  history, per call; the processor's extras around it (``Bars`` of the bar, msgpack decode +
  encode of the state) printed separately; vs the 13 TA-Lib calls over the history + 1 bar;
- yearly chunks (the backfill case): 252 bars per call, ns per bar; vs TA-Lib over the history
  up to the end of each chunk;
- for scale: TA-Lib over a whole history once (what a backfill without Kafka costs per bar).

Every engine output compared is checked bit for bit against the TA-Lib values it is timed
against.

    .venv/bin/python benchmarks/bench_indicators.py                 # 500 symbols x 10 years
    .venv/bin/python benchmarks/bench_indicators.py --symbols 50    # quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time

import msgspec
import numpy as np
import talib

from finpipe_core.indicators import INDICATOR_COLUMNS, Bars, compute_batch, compute_incremental

YEAR = 252


def synthetic(rng: np.random.Generator, n: int) -> Bars:
    level = 10.0 ** rng.uniform(0.5, 3.0)
    vol = rng.uniform(0.005, 0.04)
    close = level * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = close * np.exp(rng.normal(0.0, vol / 3, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, vol / 2, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, vol / 2, n)))
    volume = rng.integers(10_000, 50_000_000, n).astype(np.float64)
    return Bars(open_, high, low, close, volume)


def talib_fresh(b: Bars) -> list[np.ndarray]:
    """The 13 TA-Lib calls behind the registry, outputs in INDICATOR_COLUMNS order."""
    c, h, lo, v = b.close, b.high, b.low, b.volume
    return [
        talib.RSI(c, timeperiod=14),
        *talib.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9),
        talib.SMA(c, timeperiod=20),
        talib.SMA(c, timeperiod=50),
        talib.SMA(c, timeperiod=200),
        talib.EMA(c, timeperiod=12),
        talib.EMA(c, timeperiod=26),
        talib.EMA(c, timeperiod=50),
        *talib.BBANDS(c, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=0),
        talib.ATR(h, lo, c, timeperiod=14),
        talib.OBV(c, v),
        *talib.STOCH(
            h,
            lo,
            c,
            fastk_period=14,
            slowk_period=3,
            slowk_matype=0,
            slowd_period=3,
            slowd_matype=0,
        ),
        talib.ADX(h, lo, c, timeperiod=14),
    ]


def same(out: dict[str, np.ndarray], ref: list[np.ndarray], n: int) -> None:
    """The engine's values equal TA-Lib's last ``n`` values, bit for bit (NaN included)."""
    for col, r in zip(INDICATOR_COLUMNS, ref, strict=True):
        np.testing.assert_array_equal(out[col], r[-n:], err_msg=col)


def timed(fn, *args):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--years", type=int, default=10, help="history before the one-bar update")
    ap.add_argument("--repeats", type=int, default=20, help="one-bar calls timed per symbol")
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    warm = synthetic(rng, 300)  # compile / load the numba kernels before timing
    compute_incremental(warm, None)
    compute_batch(warm)
    n_hist = args.years * YEAR

    one_engine: list[float] = []  # per call, seconds
    one_talib: list[float] = []
    bars_1: list[float] = []
    msgpack_rt: list[float] = []
    year_engine: list[float] = []  # per symbol, seconds per bar
    year_talib: list[float] = []
    whole: list[float] = []
    n_year_bars = 0
    for _ in range(args.symbols):
        b = synthetic(rng, n_hist + 1)
        # Backfill in yearly chunks: engine per chunk vs TA-Lib fresh up to the chunk's end.
        state = None
        t_engine = t_talib = 0.0
        for start in range(0, n_hist, YEAR):
            chunk = b[start : start + YEAR]
            t, (out, state) = timed(compute_incremental, chunk, state)
            t_engine += t
            t, ref = timed(talib_fresh, b[: start + len(chunk)])
            t_talib += t
            n_year_bars += len(chunk)
            same(out, ref, len(chunk))
        year_engine.append(t_engine / n_hist)
        year_talib.append(t_talib / n_hist)
        t, _ = timed(talib_fresh, b[:n_hist])
        whole.append(t / n_hist)
        # The daily update: one bar after the history, state as stored (msgpack).
        stored = msgspec.msgpack.encode(state)
        last = b[n_hist:]
        for _ in range(args.repeats):
            t, (out, _) = timed(compute_incremental, last, state)
            one_engine.append(t)
            t, ref = timed(talib_fresh, b)
            one_talib.append(t)
            t0 = time.perf_counter()
            Bars(last.open, last.high, last.low, last.close, last.volume)
            t1 = time.perf_counter()
            msgspec.msgpack.encode(compute_incremental(last, msgspec.msgpack.decode(stored))[1])
            t2 = time.perf_counter()
            bars_1.append(t1 - t0)
            msgpack_rt.append(t2 - t1 - one_engine[-1])
        same(out, ref, 1)

    def us(values: list[float], q: float) -> float:
        return float(np.quantile(values, q)) * 1e6

    med_e, med_t = us(one_engine, 0.5), us(one_talib, 0.5)
    print(
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}; {args.symbols} symbols, {len(INDICATOR_COLUMNS)} columns, "
        f"numpy {np.__version__}, TA-Lib {talib.__ta_version__.decode().split()[0]}"
    )
    print(f"one-bar update after {n_hist:,} bars ({len(one_engine):,} calls):")
    print(
        f"  compute_incremental: median {med_e:.1f} us, p10 {us(one_engine, 0.1):.1f} us, "
        f"p90 {us(one_engine, 0.9):.1f} us per call (target < 20 us)"
    )
    print(
        f"  TA-Lib fresh over {n_hist + 1:,} bars: median {med_t:.1f} us "
        f"(engine = {med_e / med_t:.3f}x, {med_t / med_e:.0f}x faster)"
    )
    print(
        f"  processor extras per call: Bars(1 bar) median {us(bars_1, 0.5):.1f} us, state "
        f"msgpack decode + encode median {us(msgpack_rt, 0.5):.1f} us "
        f"({len(stored)} bytes)"
    )
    e_ns = float(np.median(year_engine)) * 1e9
    t_ns = float(np.median(year_talib)) * 1e9
    w_ns = float(np.median(whole)) * 1e9
    print(f"yearly chunks ({YEAR} bars per call, {n_year_bars:,} bars; medians over symbols):")
    print(f"  compute_incremental: {e_ns:,.0f} ns/bar")
    print(
        f"  TA-Lib fresh up to each chunk's end: {t_ns:,.0f} ns/new bar "
        f"(engine = {e_ns / t_ns:.3f}x)"
    )
    print(
        f"  TA-Lib once over {n_hist:,} bars (no increments): {w_ns:,.0f} ns/bar "
        f"(engine = {e_ns / w_ns:.2f}x)"
    )
    print("every engine output checked bit for bit against the TA-Lib values it was timed with")


if __name__ == "__main__":
    main()
