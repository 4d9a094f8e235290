"""The warm-up marker against TA-Lib's own convergence, on long real histories.

For each indicator, TA-Lib over a symbol's whole history is compared with TA-Lib over the same
history started ``k`` bars later. From the bar that ``CONVERGENCE_BARS`` marks as warm (counted
from the later start), the two must agree within ``WARM_TOLERANCE_*``; before it they are free
to differ, and for the recursive indicators they do (so the marker is not trivially large).
"""

from __future__ import annotations

import numpy as np
import pytest

from finpipe_core.indicators import INDICATORS, Bars, split_adjust
from finpipe_core.indicators.registry import (
    CONVERGENCE_BARS,
    WARM_TOLERANCE_POINTS,
    WARM_TOLERANCE_PRICE,
    convergence_bars,
)
from workers.sources.sample import SampleSource

# Sample symbols with long histories (AAPL, IBM, MSFT: 3,270 bars; GOOG: 2,000+).
LONG = ("AAPL", "IBM", "MSFT", "GOOG")
# Later starts tried: just after, around and well past every convergence length.
OFFSETS = (1, 3, 10, 37, 100, 250, 600, 1500)
OSCILLATORS = {"rsi_14", "stoch", "adx_14"}


def adjusted(symbol: str) -> Bars:
    raw = SampleSource().fetch(symbol, *_span())
    bars = Bars(raw.open, raw.high, raw.low, raw.close, raw.volume)
    splits = [(d, s) for d, s in zip(raw.dates, raw.splits, strict=True) if s > 0]
    return split_adjust(bars, raw.dates, splits)


def _span():
    import datetime as dt

    return dt.date(1990, 1, 1), dt.date(2014, 1, 1)


def _slice(b: Bars, k: int) -> Bars:
    return Bars(b.open[k:], b.high[k:], b.low[k:], b.close[k:], b.volume[k:])


def _deviation(indicator, full: tuple, late: tuple, close: np.ndarray) -> np.ndarray:
    """Per bar of the later start: the largest deviation over the indicator's outputs, in
    units of its tolerance (<= 1 means within it)."""
    worst = np.zeros(len(close))
    for a, b in zip(full, late, strict=True):
        with np.errstate(invalid="ignore"):
            diff = np.abs(a - b)
        scale = (
            WARM_TOLERANCE_POINTS
            if indicator.key in OSCILLATORS
            else (WARM_TOLERANCE_PRICE * close)
        )
        worst = np.fmax(worst, diff / scale)
    return worst


def test_every_indicator_states_a_convergence_length():
    assert set(CONVERGENCE_BARS) == {i.key for i in INDICATORS}
    for indicator in INDICATORS:
        n = convergence_bars(indicator)
        # Never before TA-Lib's first value.
        assert n is None or n >= indicator.lookback + 1, indicator.key


@pytest.mark.parametrize("symbol", LONG)
def test_values_after_the_marker_do_not_depend_on_the_start(symbol):
    bars = adjusted(symbol)
    assert len(bars.close) > 1900
    differs_before: dict[str, float] = {}
    for indicator in INDICATORS:
        warm = convergence_bars(indicator)
        full = indicator.batch(bars)
        for k in OFFSETS:
            late = indicator.batch(_slice(bars, k))
            dev = _deviation(indicator, tuple(f[k:] for f in full), late, bars.close[k:])
            if warm is None:
                # OBV: a running sum shifted by the volume before the start, forever.
                assert np.nanmin(dev[1:]) > 1, f"{symbol} {indicator.key}: converged"
                continue
            after = dev[warm - 1 :]
            assert np.nanmax(after) <= 1.0, (
                f"{symbol} {indicator.key} start+{k}: bar {warm + int(np.nanargmax(after))} "
                f"deviates {np.nanmax(after):.2f}x the tolerance after the marker ({warm})"
            )
            before = dev[: warm - 1]
            differs_before[indicator.key] = max(
                differs_before.get(indicator.key, 0.0), float(np.nanmax(before, initial=0.0))
            )
    # The recursive indicators do depend on the start before their marker: the marker is
    # needed, not just safe.
    for key in ("rsi_14", "macd", "ema_12", "ema_26", "ema_50", "atr_14", "adx_14"):
        assert differs_before[key] > 1.0, f"{symbol} {key}: no warm-up effect seen"


def test_view_thresholds_match_the_registry():
    """The indicators_warm view in migration 0006 states the registry's numbers."""
    import re
    from pathlib import Path

    sql = (
        Path(__file__).resolve().parents[3]
        / "finpipe_core"
        / "db"
        / "migrations"
        / "0006_revisions.sql"
    ).read_text()
    stated = {m[1]: int(m[0]) for m in re.findall(r"bar_number >= (\d+) AS (\w+)_warm", sql)}
    never = set(re.findall(r"false AS (\w+)_warm", sql))
    assert stated == {k: n for k, n in CONVERGENCE_BARS.items() if n is not None}
    assert never == {k for k, n in CONVERGENCE_BARS.items() if n is None}
