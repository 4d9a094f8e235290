"""compute_batch against TA-Lib called directly, the public constants, and edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import talib
from talib import abstract

from finpipe_core.indicators import (
    INDICATOR_COLUMNS,
    LOOKBACK,
    Bars,
    compute_batch,
    compute_incremental,
)

EXPECTED_COLUMNS = (
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "sma_20",
    "sma_50",
    "sma_200",
    "ema_12",
    "ema_26",
    "ema_50",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "atr_14",
    "obv",
    "stoch_k",
    "stoch_d",
    "adx_14",
)


def random_bars(n: int, seed: int = 1, price: float = 100.0) -> Bars:
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
    open_ = close * np.exp(rng.normal(0.0, 0.01, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.01, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.01, n)))
    volume = rng.integers(1_000, 10_000_000, n).astype(np.float64)
    return Bars(open_, high, low, close, volume)


def assert_same(got: np.ndarray, ref: np.ndarray) -> None:
    """Same NaN positions; values within 1e-9 (relative above 1)."""
    assert got.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    ok = ~np.isnan(ref)
    np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-9, atol=1e-9)


def test_columns_are_the_schema_columns_in_order() -> None:
    assert INDICATOR_COLUMNS == EXPECTED_COLUMNS
    assert set(LOOKBACK) == set(EXPECTED_COLUMNS)


def test_lookback_is_talibs_own() -> None:
    def lb(name: str, **params: float) -> int:
        f = abstract.Function(name)
        f.set_parameters(params)
        return int(f.lookback)

    expected = {
        "rsi_14": lb("RSI", timeperiod=14),
        "macd": lb("MACD", fastperiod=12, slowperiod=26, signalperiod=9),
        "sma_20": lb("SMA", timeperiod=20),
        "sma_50": lb("SMA", timeperiod=50),
        "sma_200": lb("SMA", timeperiod=200),
        "ema_12": lb("EMA", timeperiod=12),
        "ema_26": lb("EMA", timeperiod=26),
        "ema_50": lb("EMA", timeperiod=50),
        "bb_middle": lb("BBANDS", timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=0),
        "atr_14": lb("ATR", timeperiod=14),
        "obv": lb("OBV"),
        "stoch_k": lb("STOCH", fastk_period=14, slowk_period=3, slowd_period=3),
        "adx_14": lb("ADX", timeperiod=14),
    }
    for col, value in expected.items():
        assert LOOKBACK[col] == value, col
    # The numbers the rest of the project relies on (the warm-up check and the README).
    assert LOOKBACK["macd"] == LOOKBACK["macd_signal"] == LOOKBACK["macd_hist"] == 33
    assert (LOOKBACK["rsi_14"], LOOKBACK["sma_200"], LOOKBACK["obv"]) == (14, 199, 0)
    assert (LOOKBACK["stoch_d"], LOOKBACK["adx_14"], LOOKBACK["bb_upper"]) == (17, 27, 19)


def test_lookback_is_first_non_nan_index() -> None:
    out = compute_batch(random_bars(400))
    for col in INDICATOR_COLUMNS:
        finite = np.flatnonzero(~np.isnan(out[col]))
        assert finite[0] == LOOKBACK[col], col
        assert np.all(np.diff(finite) == 1), f"{col} has NaN after its warm-up"


def test_batch_equals_direct_talib_calls() -> None:
    b = random_bars(600, seed=3)
    out = compute_batch(b)
    c, h, lo, v = b.close, b.high, b.low, b.volume
    macd, sig, hist = talib.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9)
    up, mid, dn = talib.BBANDS(c, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=0)
    k, d = talib.STOCH(
        h, lo, c, fastk_period=14, slowk_period=3, slowk_matype=0, slowd_period=3, slowd_matype=0
    )
    expected = {
        "rsi_14": talib.RSI(c, timeperiod=14),
        "macd": macd,
        "macd_signal": sig,
        "macd_hist": hist,
        "sma_20": talib.SMA(c, timeperiod=20),
        "sma_50": talib.SMA(c, timeperiod=50),
        "sma_200": talib.SMA(c, timeperiod=200),
        "ema_12": talib.EMA(c, timeperiod=12),
        "ema_26": talib.EMA(c, timeperiod=26),
        "ema_50": talib.EMA(c, timeperiod=50),
        "bb_upper": up,
        "bb_middle": mid,
        "bb_lower": dn,
        "atr_14": talib.ATR(h, lo, c, timeperiod=14),
        "obv": talib.OBV(c, v),
        "stoch_k": k,
        "stoch_d": d,
        "adx_14": talib.ADX(h, lo, c, timeperiod=14),
    }
    assert set(expected) == set(out)
    for col, ref in expected.items():
        assert_same(out[col], ref)


def test_rsi_and_macd_against_textbook_definitions() -> None:
    """Independent check of TA-Lib's conventions the engine relies on (seed, smoothing)."""
    b = random_bars(300, seed=5)
    c = b.close
    out = compute_batch(b)
    # RSI: Wilder smoothing seeded with the mean of the first 14 gains/losses.
    d = np.diff(c)
    g, lo = np.where(d > 0, d, 0.0), np.where(d < 0, -d, 0.0)
    ag, al = g[:14].mean(), lo[:14].mean()
    rsi = [100 * ag / (ag + al)]
    for i in range(14, len(d)):
        ag = (ag * 13 + g[i]) / 14
        al = (al * 13 + lo[i]) / 14
        rsi.append(100 * ag / (ag + al))
    np.testing.assert_allclose(out["rsi_14"][14:], rsi, rtol=1e-10)

    # MACD: both EMA seeds (SMA of their period) end on bar 25, first output at bar 33.
    def ema(x: np.ndarray, n: int) -> np.ndarray:
        k, e = 2 / (n + 1), x[:n].mean()
        res = [e]
        for v in x[n:]:
            e = e + k * (v - e)
            res.append(e)
        return np.array(res)

    fast = ema(c[14:], 12)  # index 0 <-> bar 25
    slow = ema(c, 26)  # index 0 <-> bar 25
    line = fast - slow
    signal = ema(line, 9)  # index 0 <-> bar 33
    np.testing.assert_allclose(out["macd"][33:], line[8:], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out["macd_signal"][33:], signal, rtol=1e-9, atol=1e-9)
    assert np.isnan(out["macd"][:33]).all()


def test_empty_input_gives_empty_outputs() -> None:
    out = compute_batch(Bars.empty())
    assert tuple(out) == INDICATOR_COLUMNS
    assert all(arr.shape == (0,) for arr in out.values())


def test_single_bar() -> None:
    b = Bars([10.0], [11.0], [9.0], [10.5], [1234.0])
    out = compute_batch(b)
    for col in INDICATOR_COLUMNS:
        if col == "obv":
            assert out[col].tolist() == [1234.0]
        else:
            assert np.isnan(out[col]).all(), col
    inc, state = compute_incremental(b, None)
    for col in INDICATOR_COLUMNS:
        assert_same(inc[col], out[col])
    assert state["bars"] == 1


@pytest.mark.parametrize("price", [1.0, 37.13, 1234.5678, 250_000.0])
def test_constant_prices_follow_talib(price: float) -> None:
    """Zero gains and losses: RSI is whatever TA-Lib returns (0 with the pinned build)."""
    n = 260
    flat = np.full(n, price)
    b = Bars(flat, flat, flat, flat, np.full(n, 100.0))
    out = compute_batch(b)
    assert_same(out["rsi_14"], talib.RSI(flat, timeperiod=14))
    assert np.all(out["rsi_14"][14:] == 0.0)
    assert_same(out["adx_14"], talib.ADX(flat, flat, flat, timeperiod=14))
    stoch = talib.STOCH(flat, flat, flat, fastk_period=14, slowk_period=3, slowd_period=3)
    assert_same(out["stoch_k"], stoch[0])
    np.testing.assert_array_equal(out["bb_upper"][19:], out["bb_middle"][19:])
    np.testing.assert_array_equal(out["atr_14"][14:], 0.0)
    np.testing.assert_array_equal(out["obv"], 100.0)  # unchanged closes add nothing
    inc, _ = compute_incremental(b[:100], None)
    for col in INDICATOR_COLUMNS:
        assert_same(inc[col], out[col][:100])


@pytest.mark.parametrize("price", [0.01, 100.0, 100_000.0])
def test_flat_after_moves_matches_talib(price: float) -> None:
    """Wilder averages decaying towards 0 on a long flat stretch (TA-Lib's zero tests)."""
    b = random_bars(60, seed=9, price=price)
    n_flat = 900
    tail = np.full(n_flat, b.close[-1])
    c = np.concatenate([b.close, tail])
    h = np.concatenate([b.high, tail])
    lo = np.concatenate([b.low, tail])
    o = np.concatenate([b.open, tail])
    v = np.concatenate([b.volume, np.full(n_flat, 10.0)])
    full = Bars(o, h, lo, c, v)
    out = compute_batch(full)
    assert_same(out["rsi_14"], talib.RSI(c, timeperiod=14))
    assert_same(out["adx_14"], talib.ADX(h, lo, c, timeperiod=14))
    state = None
    parts: dict[str, list[np.ndarray]] = {col: [] for col in INDICATOR_COLUMNS}
    for i in range(0, len(c), 97):
        res, state = compute_incremental(full[i : i + 97], state)
        for col in INDICATOR_COLUMNS:
            parts[col].append(res[col])
    for col in INDICATOR_COLUMNS:
        assert_same(np.concatenate(parts[col]), out[col])


def test_date_gap_is_just_the_next_bar() -> None:
    """The engine is index-based: a missing day is not filled, the next row is the next bar."""
    b = random_bars(300, seed=11)
    keep = np.ones(300, dtype=bool)
    keep[120:135] = False  # e.g. a trading halt: 15 bars absent from the source
    gapped = Bars(b.open[keep], b.high[keep], b.low[keep], b.close[keep], b.volume[keep])
    out = compute_batch(gapped)
    assert_same(out["rsi_14"], talib.RSI(b.close[keep], timeperiod=14))
    assert_same(out["sma_200"], talib.SMA(b.close[keep], timeperiod=200))
    # Bars before and after the gap arriving as two chunks give the same as one batch.
    first, state = compute_incremental(gapped[:120], None)
    second, state = compute_incremental(gapped[120:], state)
    for col in INDICATOR_COLUMNS:
        assert_same(np.concatenate([first[col], second[col]]), out[col])
    assert state["bars"] == keep.sum()


def test_large_obv_values_compare_relatively() -> None:
    b = random_bars(500, seed=13)
    big = Bars(b.open, b.high, b.low, b.close, b.volume * 1e6)
    out = compute_batch(big)
    inc, _ = compute_incremental(big, None)
    assert np.nanmax(np.abs(out["obv"])) > 1e12
    assert_same(inc["obv"], out["obv"])
