"""The offline sources: real sample prices with their splits, and deterministic synthetic bars."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from finpipe_core.calendar import trading_days
from finpipe_core.indicators import split_factors
from workers.sources import NoDataError
from workers.sources.sample import SampleSource
from workers.sources.synthetic import SyntheticSource

D = dt.date


class TestSample:
    def test_known_real_splits_are_found(self) -> None:
        aapl = SampleSource().fetch("AAPL", D(2000, 1, 1), D(2013, 12, 31))
        splits = {d: r for d, r in zip(aapl.dates, aapl.splits, strict=True) if r}
        assert splits == {D(2000, 6, 21): 2.0, D(2005, 2, 28): 2.0}
        msft = SampleSource().fetch("MSFT", D(2000, 1, 1), D(2013, 12, 31))
        assert {d for d, r in zip(msft.dates, msft.splits, strict=True) if r} == {D(2003, 2, 18)}

    def test_raw_close_over_split_factor_tracks_the_adjusted_close(self) -> None:
        # Raw prices divided by the later splits differ from adj_close only by dividends.
        bars = SampleSource().fetch("AAPL", D(2000, 3, 1), D(2006, 12, 31))
        factors = split_factors(
            bars.dates, [(d, r) for d, r in zip(bars.dates, bars.splits, strict=True) if r]
        )
        ratio = (bars.close / factors) / bars.adj_close
        assert np.ptp(ratio) / ratio.mean() < 0.02

    def test_range_and_unknown_symbol(self) -> None:
        bars = SampleSource().fetch("IBM", D(2001, 1, 1), D(2001, 1, 31))
        assert bars.dates[0] >= D(2001, 1, 2) and bars.dates[-1] <= D(2001, 1, 31)
        assert len(bars) == 21
        with pytest.raises(NoDataError, match="ZZZZ"):
            SampleSource().fetch("ZZZZ", D(2001, 1, 1), D(2001, 1, 31))


class TestSynthetic:
    def test_bars_do_not_depend_on_the_range_asked_for(self) -> None:
        source = SyntheticSource()
        short = source.fetch("DET", D(2010, 1, 1), D(2010, 3, 1))
        long = source.fetch("DET", D(2009, 6, 1), D(2020, 1, 1))
        i = long.dates.index(short.dates[0])
        for column in ("open", "high", "low", "close", "volume", "splits", "dividends"):
            np.testing.assert_array_equal(
                getattr(short, column), getattr(long, column)[i : i + len(short)]
            )

    def test_sessions_only_and_valid_prices(self) -> None:
        bars = SyntheticSource().fetch("VAL", D(2012, 1, 1), D(2012, 12, 31))
        assert bars.dates == trading_days(D(2012, 1, 1), D(2012, 12, 31))
        assert (bars.low > 0).all() and (bars.low <= np.minimum(bars.open, bars.close)).all()
        assert (bars.high >= np.maximum(bars.open, bars.close)).all()

    def test_a_split_drops_the_raw_price_by_its_ratio(self) -> None:
        for i in range(400):
            bars = SyntheticSource().fetch(f"SP{i}", D(2000, 1, 1), D(2020, 12, 31))
            idx = np.flatnonzero(bars.splits)
            if len(idx):
                k = idx[0]
                jump = bars.close[k - 1] / bars.close[k]
                assert jump == pytest.approx(bars.splits[k], rel=0.2)
                return
        pytest.fail("no split in 400 synthetic symbols")
