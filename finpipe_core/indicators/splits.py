"""Stock-split adjustment: put raw bars on the latest share basis.

Convention (the one yfinance and most vendors use for split-adjusted prices):

- A split is ``(date, ratio)``: from ``date`` on (its ex-date, the first bar traded on the new
  share count) one old share is ``ratio`` new shares. ``4.0`` is a 4:1 split, ``0.1`` a 1:10
  reverse split.
- A bar dated strictly *before* a split's date is divided by its ratio (open, high, low,
  close) and its volume is multiplied by it, so prices and volumes on both sides of the split
  are comparable and price x volume (turnover) is unchanged. Bars on or after the date are
  untouched.
- With several splits a bar's factor is the product of the ratios of all splits dated after
  it. Adjustments compose: adjusting raw bars for splits A and B at once equals adjusting for A
  and then adjusting that result for B. So when a new split arrives for a symbol whose stored
  history is already adjusted for the older ones, apply only the new split to the stored bars
  (every stored bar precedes it, so all are rescaled) and recompute that symbol's indicators:
  rescaled prices change every indicator except ratio-type ones, and OBV's volume basis
  changes too.
- Do not apply a split twice: yfinance (``auto_adjust=False``) already returns OHLC adjusted
  for the splits known at download time.
- Volume becomes fractional after a reverse split or an odd ratio; it stays float64.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import numpy as np

from finpipe_core.indicators.bars import Bars, InvalidBarsError

DateLike = dt.date | np.datetime64 | str


_UNIX_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def _as_days(values: Sequence[DateLike] | np.ndarray, what: str) -> np.ndarray:
    if isinstance(values, list) and values and type(values[0]) is dt.date:
        # The processor's case (a symbol's stored dates on a history rewrite): numpy converts
        # a list of dates element by element, ordinals through fromiter are ~5x faster.
        try:
            days = np.fromiter((d.toordinal() for d in values), dtype=np.int64, count=len(values))
        except (AttributeError, TypeError):
            pass  # mixed types: numpy's own conversion below decides
        else:
            return (days - _UNIX_EPOCH_ORDINAL).astype("datetime64[D]")
    try:
        return np.asarray(values, dtype="datetime64[D]")
    except (TypeError, ValueError) as exc:
        raise InvalidBarsError(f"{what}: cannot be read as dates ({exc})") from exc


def is_split(ratio: float) -> bool:
    """Whether a bar's ``splits`` value is a split event: sources write 0 (yfinance) or 1 for
    "no split" on every other bar."""
    return ratio > 0 and ratio != 1


def split_events(
    dates: Sequence[DateLike], ratios: Iterable[float]
) -> list[tuple[DateLike, float]]:
    """The ``(date, ratio)`` split events of a ``splits`` column, for ``split_adjust``."""
    return [(d, float(r)) for d, r in zip(dates, ratios, strict=True) if is_split(r)]


def split_factors(
    dates: Sequence[DateLike] | np.ndarray, splits: Iterable[tuple[DateLike, float]]
) -> np.ndarray:
    """Per-bar divisor: the product of the ratios of the splits dated after each bar.

    ``dates`` must be ascending. Prices are divided and volumes multiplied by this factor.
    """
    days = _as_days(dates, "dates")
    if days.ndim != 1:
        raise InvalidBarsError(f"dates: expected a 1-D sequence, got shape {days.shape}")
    if days.size > 1 and (np.diff(days) < np.timedelta64(0, "D")).any():
        bad = int(np.argmax(np.diff(days) < np.timedelta64(0, "D"))) + 1
        raise InvalidBarsError(
            f"dates[{bad}] = {days[bad]} is before the previous date; "
            "bars must be in ascending date order"
        )
    factors = np.ones(days.shape[0], dtype=np.float64)
    for when, ratio in splits:
        r = float(ratio)
        if not (np.isfinite(r) and r > 0.0):
            raise InvalidBarsError(f"split on {when}: ratio {ratio!r} must be finite and > 0")
        day = _as_days([when], "split date")[0]
        # Bars strictly before the split's date are on the old share basis.
        factors[: int(np.searchsorted(days, day, side="left"))] *= r
    return factors


def split_adjust(
    bars: Bars,
    dates: Sequence[DateLike] | np.ndarray,
    splits: Iterable[tuple[DateLike, float]],
) -> Bars:
    """Bars on the post-split basis: earlier OHLC divided, earlier volume multiplied.

    ``dates[i]`` is the date of bar ``i`` (ascending); ``splits`` are ``(date, ratio)`` pairs
    in any order, e.g. ``[("2020-08-31", 4.0)]`` for Apple's 4:1 split. See the module
    docstring for the convention and how to rescale stored history when a split arrives.
    """
    if len(dates) != len(bars):
        raise InvalidBarsError(f"dates has {len(dates)} entries for {len(bars)} bars")
    f = split_factors(dates, splits)
    return Bars(bars.open / f, bars.high / f, bars.low / f, bars.close / f, bars.volume * f)
