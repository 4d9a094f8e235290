"""Suspicious-data checks on real shapes: the offline sample's real histories, clean and with
the errors sources make planted in them (a missed split, a 100x unit error that reverts, NaN
prices with volume, a zero-volume stretch, dropped sessions)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from finpipe_core.calendar import trading_days
from finpipe_manager import quality
from finpipe_manager.quality import SymbolBars
from workers.sources.sample import SampleSource

D = dt.date


def sample(symbol: str) -> SymbolBars:
    b = SampleSource().fetch(symbol, D(1990, 1, 1), D(2014, 1, 1))
    return SymbolBars(
        symbol,
        list(b.dates),
        *(
            getattr(b, c).copy()
            for c in ("open", "high", "low", "close", "adj_close", "volume", "splits")
        ),
    )


def sessions_of(bars: SymbolBars) -> list[dt.date]:
    return trading_days(bars.dates[0], bars.dates[-1])


@pytest.mark.parametrize("symbol", ["AAPL", "IBM", "MSFT", "GOOG", "FB"])
def test_real_histories_are_clean(symbol):
    """No false alarm on 13 years of real bars (AAPL's and MSFT's recorded splits included)."""
    bars = sample(symbol)
    found = quality.check_symbol(bars, sessions_of(bars))
    assert found == {c: [] for c in quality.CHECKS}


def test_missed_split_is_flagged_on_its_ex_date():
    bars = sample("AAPL")
    ex = D(2005, 2, 28)
    k = bars.dates.index(ex)
    assert bars.splits[k] == 2.0
    bars.splits[k] = 0.0  # the source lost the split event; the raw prices still halve
    assert quality.split_jumps(bars) == [ex]


def test_unit_error_that_reverts_is_flagged():
    bars = sample("IBM")
    k = 1000
    bars.close[k : k + 3] *= 100  # three closes in cents
    assert quality.unit_jumps(bars) == bars.dates[k : k + 3]
    # A level change that does not revert is not a unit error.
    lasting = sample("IBM")
    lasting.close[k:] *= 100
    assert quality.unit_jumps(lasting) == []


def test_nan_prices_with_volume_are_flagged():
    bars = sample("MSFT")
    bars.adj_close[10] = np.nan
    bars.close[20] = np.nan
    bars.volume[20] = 0.0  # no volume: a placeholder row, not flagged
    assert quality.nan_prices(bars) == [bars.dates[10]]


def test_zero_volume_stretch_is_flagged():
    bars = sample("GOOG")
    bars.volume[100:106] = 0.0
    bars.volume[300:302] = 0.0  # a short run is normal (half days, thin trading)
    assert quality.zero_volume_stretches(bars) == bars.dates[100:106]


def test_missing_sessions_inside_the_range_are_flagged():
    bars = sample("FB")
    sessions = sessions_of(bars)
    dropped = [bars.dates[5], bars.dates[6], bars.dates[100]]
    keep = [i for i, d in enumerate(bars.dates) if d not in dropped]
    holey = SymbolBars(
        "FB",
        [bars.dates[i] for i in keep],
        *(
            getattr(bars, c)[keep]
            for c in ("open", "high", "low", "close", "adj_close", "volume", "splits")
        ),
    )
    assert quality.missing_sessions(holey, sessions) == dropped
