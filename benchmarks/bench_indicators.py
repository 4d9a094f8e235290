"""Indicator engine benchmark: TA-Lib direct vs compute_batch vs compute_incremental.

Synthetic daily bars (geometric random walk, 2,520 bars = 10 years per symbol), generated
per symbol so memory stays flat. Reports nanoseconds per bar for the whole indicator set:

- TA-Lib direct: the 13 talib calls behind the registry, nothing else (the floor);
- compute_batch: the public batch path (same calls plus dict building);
- compute_incremental: each symbol fed in ~monthly chunks of 21 bars, state passed on;
  and in 1-bar chunks (a daily update) on a subset of symbols;
- the costs around an incremental call that a processor also pays: building ``Bars``
  (validation) for a chunk, and a JSON round trip of the state.

Targets (docs/issue): batch within 2x TA-Lib; incremental under 5 µs per bar.

    .venv/bin/python benchmarks/bench_indicators.py                # 5,000 symbols
    .venv/bin/python benchmarks/bench_indicators.py --symbols 200  # quick run
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import talib

from workers.indicators import INDICATOR_COLUMNS, Bars, compute_batch, compute_incremental

BARS_PER_SYMBOL = 2520


def synthetic(rng: np.random.Generator, n: int) -> Bars:
    level = 10.0 ** rng.uniform(0.5, 3.0)
    vol = rng.uniform(0.005, 0.04)
    close = level * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = close * np.exp(rng.normal(0.0, vol / 3, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, vol / 2, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, vol / 2, n)))
    volume = rng.integers(10_000, 50_000_000, n).astype(np.float64)
    return Bars(open_, high, low, close, volume)


def talib_direct(b: Bars) -> None:
    c, h, lo, v = b.close, b.high, b.low, b.volume
    talib.RSI(c, timeperiod=14)
    talib.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9)
    talib.SMA(c, timeperiod=20)
    talib.SMA(c, timeperiod=50)
    talib.SMA(c, timeperiod=200)
    talib.EMA(c, timeperiod=12)
    talib.EMA(c, timeperiod=26)
    talib.EMA(c, timeperiod=50)
    talib.BBANDS(c, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=0)
    talib.ATR(h, lo, c, timeperiod=14)
    talib.OBV(c, v)
    talib.STOCH(
        h, lo, c, fastk_period=14, slowk_period=3, slowk_matype=0, slowd_period=3, slowd_matype=0
    )
    talib.ADX(h, lo, c, timeperiod=14)


def chunks(b: Bars, size: int) -> list[Bars]:
    return [b[i : i + size] for i in range(0, len(b), size)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=5000, help="symbols (default 5000)")
    ap.add_argument("--chunk", type=int, default=21, help="incremental chunk size (default 21)")
    ap.add_argument(
        "--one-bar-symbols",
        type=int,
        default=20,
        help="symbols fed 1 bar at a time and timed for the JSON round trip (default 20)",
    )
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    warm = synthetic(rng, 300)  # compile / load the numba kernels before timing
    compute_incremental(warm, None)
    compute_batch(warm)
    talib_direct(warm)

    t_talib = t_batch = t_incr = t_bars = t_json = t_one = 0.0
    n_bars = n_one = 0
    n_chunks = 0
    for s in range(args.symbols):
        b = synthetic(rng, BARS_PER_SYMBOL)
        n_bars += len(b)

        t0 = time.perf_counter()
        talib_direct(b)
        t1 = time.perf_counter()
        ref = compute_batch(b)
        t2 = time.perf_counter()
        t_talib += t1 - t0
        t_batch += t2 - t1

        t0 = time.perf_counter()
        parts = chunks(b, args.chunk)  # Bars(...) per chunk: conversion + validation
        t_bars += time.perf_counter() - t0
        n_chunks += len(parts)
        state = None
        outs = []
        t0 = time.perf_counter()
        for part in parts:
            out, state = compute_incremental(part, state)
            outs.append(out)
        t_incr += time.perf_counter() - t0

        assert state is not None
        if s < args.one_bar_symbols:  # JSON is slow: time it on the subset only
            t0 = time.perf_counter()
            for _ in parts:
                json.loads(json.dumps(state))
            t_json += time.perf_counter() - t0

        if s == 0:  # spot check: the incremental path reproduces the batch path
            for col in INDICATOR_COLUMNS:
                got = np.concatenate([o[col] for o in outs])
                np.testing.assert_allclose(got, ref[col], rtol=1e-9, atol=1e-9)

        if s < args.one_bar_symbols:
            singles = chunks(b, 1)
            state = None
            t0 = time.perf_counter()
            for part in singles:
                _, state = compute_incremental(part, state)
            t_one += time.perf_counter() - t0
            n_one += len(b)

    def ns(t: float, n: int) -> float:
        return t / n * 1e9 if n else float("nan")

    talib_ns = ns(t_talib, n_bars)
    rows = [
        ("TA-Lib direct (13 calls)", talib_ns, n_bars),
        ("compute_batch", ns(t_batch, n_bars), n_bars),
        (f"compute_incremental, {args.chunk}-bar chunks", ns(t_incr, n_bars), n_bars),
    ]
    if n_one:
        rows.append(("compute_incremental, 1-bar chunks", ns(t_one, n_one), n_one))
    print(
        f"{args.symbols} symbols x {BARS_PER_SYMBOL} bars, {len(INDICATOR_COLUMNS)} columns, "
        f"numpy {np.__version__}, TA-Lib {talib.__ta_version__.decode().split()[0]}"
    )
    print(f"{'path':42s} {'ns/bar':>10s} {'x TA-Lib':>9s} {'bars':>12s}")
    for name, value, count in rows:
        print(f"{name:42s} {value:10.1f} {value / talib_ns:9.2f} {count:12d}")
    print(f"{'  + Bars() per chunk (convert+validate)':42s} {ns(t_bars, n_bars):10.1f}")
    print(f"{'  + state JSON round trip per chunk':42s} {ns(t_json, n_one):10.1f}")
    print(
        f"chunks per symbol: {n_chunks / args.symbols:.0f}; state JSON size: "
        f"{len(json.dumps(state))} bytes"
    )
    batch_ratio = ns(t_batch, n_bars) / talib_ns
    incr_us = ns(t_incr, n_bars) / 1000
    print(
        f"target batch <= 2x TA-Lib: {batch_ratio:.2f}x -> "
        f"{'met' if batch_ratio <= 2 else 'NOT met'}"
    )
    print(
        f"target incremental < 5 us/bar ({args.chunk}-bar chunks): {incr_us:.2f} us -> "
        f"{'met' if incr_us < 5 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
