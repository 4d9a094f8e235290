"""How tight the warm-up markers are: per indicator, the stated convergence length against the
bar from which TA-Lib's values over a history started k bars late stay within the tolerance of
the values over the whole history (worst case over the offline sample's long histories and
several k). Prints measured figures; nothing is assumed.

    .venv/bin/python benchmarks/warmup_convergence.py
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from finpipe_core.indicators import INDICATORS, Bars, split_adjust
from finpipe_core.indicators.registry import (
    CONVERGENCE_BARS,
    WARM_TOLERANCE_POINTS,
    WARM_TOLERANCE_PRICE,
)
from workers.sources.sample import SampleSource

SYMBOLS = ("AAPL", "IBM", "MSFT", "GOOG")
OFFSETS = (1, 3, 10, 37, 100, 250, 600, 1500)
OSCILLATORS = {"rsi_14", "stoch", "adx_14"}


def adjusted(symbol: str) -> Bars:
    raw = SampleSource().fetch(symbol, dt.date(1990, 1, 1), dt.date(2014, 1, 1))
    splits = [(d, s) for d, s in zip(raw.dates, raw.splits, strict=True) if s > 0]
    return split_adjust(Bars(raw.open, raw.high, raw.low, raw.close, raw.volume), raw.dates, splits)


def first_settled_bar(indicator, bars: Bars, k: int) -> int:
    """1-based bar number (from the late start) after which every value is within tolerance."""
    full = indicator.batch(bars)
    late = indicator.batch(
        Bars(*(a[k:] for a in (bars.open, bars.high, bars.low, bars.close, bars.volume)))
    )
    close = bars.close[k:]
    scale = WARM_TOLERANCE_POINTS if indicator.key in OSCILLATORS else WARM_TOLERANCE_PRICE * close
    bad = np.zeros(len(close), dtype=bool)
    for a, b in zip(full, late, strict=True):
        with np.errstate(invalid="ignore"):
            bad |= ~(np.abs(a[k:] - b) <= scale) & ~(np.isnan(a[k:]) & np.isnan(b))
    out = np.flatnonzero(bad)
    return int(out[-1]) + 2 if len(out) else 1


def main() -> None:
    data = {s: adjusted(s) for s in SYMBOLS}
    print(f"{'indicator':<10} {'stated':>7} {'measured worst':>15} {'margin':>7}")
    for indicator in INDICATORS:
        stated = CONVERGENCE_BARS[indicator.key]
        worst = max(first_settled_bar(indicator, b, k) for b in data.values() for k in OFFSETS)
        n = max(len(b.close) for b in data.values())
        shown = "never" if worst >= n - max(OFFSETS) else str(worst)
        margin = "-" if stated is None or shown == "never" else f"{stated - worst:+d}"
        print(f"{indicator.key:<10} {stated if stated else 'never':>7} {shown:>15} {margin:>7}")


if __name__ == "__main__":
    main()
