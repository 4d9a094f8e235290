"""Real daily prices (bokeh_sampledata stocks, 2000-2013) fed in several chunkings."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from bokeh_sampledata import stocks

from finpipe_core.indicators import INDICATOR_COLUMNS, Bars, compute_batch, compute_incremental

SYMBOLS = ("AAPL", "FB", "GOOG", "IBM", "MSFT")


def sample_bars(symbol: str) -> Bars:
    d = getattr(stocks, symbol)
    return Bars(
        *(np.asarray(d[k], dtype=np.float64) for k in ("open", "high", "low", "close", "volume"))
    )


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_sample_prices_any_chunking_equals_batch(symbol: str) -> None:
    bars = sample_bars(symbol)
    assert len(bars) > 150
    ref = compute_batch(bars)
    for size in (1, 7, 21, 250, len(bars)):
        state = None
        parts: dict[str, list[np.ndarray]] = {col: [] for col in INDICATOR_COLUMNS}
        for start in range(0, len(bars), size):
            out, state = compute_incremental(bars[start : start + size], state)
            state = msgspec.msgpack.decode(msgspec.msgpack.encode(state))
            for col in INDICATOR_COLUMNS:
                parts[col].append(out[col])
        for col in INDICATOR_COLUMNS:
            got = np.concatenate(parts[col])
            np.testing.assert_array_equal(np.isnan(got), np.isnan(ref[col]), err_msg=col)
            ok = ~np.isnan(ref[col])
            np.testing.assert_allclose(
                got[ok], ref[col][ok], rtol=1e-9, atol=1e-9, err_msg=f"{symbol} chunk={size} {col}"
            )


def test_sample_prices_sanity() -> None:
    """Plausible ranges on real data: RSI/STOCH/ADX within [0, 100], bands ordered."""
    out = compute_batch(sample_bars("IBM"))
    for col in ("rsi_14", "stoch_k", "stoch_d", "adx_14"):
        vals = out[col][~np.isnan(out[col])]
        assert vals.min() >= 0.0 and vals.max() <= 100.0, col
    ok = ~np.isnan(out["bb_middle"])
    assert np.all(out["bb_lower"][ok] <= out["bb_middle"][ok])
    assert np.all(out["bb_middle"][ok] <= out["bb_upper"][ok])
    assert np.all(out["atr_14"][~np.isnan(out["atr_14"])] > 0)
