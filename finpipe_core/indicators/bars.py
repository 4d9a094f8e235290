"""Input bars for the indicator engine, validated once at construction.

Indicators are index-based: bar ``i + 1`` is simply the bar after bar ``i``. There are no dates
here on purpose: a gap in the calendar (a holiday, a halted symbol, a missing day in the source)
does not insert anything, the next row is the next bar, exactly as when the same arrays are
passed to TA-Lib. Whoever builds the arrays decides what a bar is; dates live next to them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from finpipe_core.indicators import _kernels

FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICE_MIN: float = _kernels.PRICE_MIN
PRICE_MAX: float = _kernels.PRICE_MAX
VOLUME_MAX: float = _kernels.VOLUME_MAX


class InvalidBarsError(ValueError):
    """Bars that no indicator can be computed from (NaN, inf, non-positive or extreme price...).

    A ``ValueError`` so callers that treat bad input generically still catch it; the message
    names the field and the index so a bad row can be found in the source data.
    """


def _as_float_array(name: str, values: object) -> np.ndarray:
    try:
        arr = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidBarsError(f"{name}: cannot be read as float64 numbers ({exc})") from exc
    if arr.ndim != 1:
        raise InvalidBarsError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    return arr


def _rule(name: str, value: float) -> str:
    """The rule ``value`` breaks, worded for the error message."""
    if name == "volume":
        if np.isfinite(value) and value >= 0.0:
            return f"<= {_kernels.VOLUME_MAX:g} (larger volumes overflow the indicators' sums)"
        return "finite and >= 0"
    if np.isfinite(value) and value > 0.0:
        return (
            f"within [{_kernels.PRICE_MIN:g}, {_kernels.PRICE_MAX:g}] (beyond, the indicators' "
            "sums of squares and ratios overflow float64)"
        )
    return "finite and > 0"


@dataclass(frozen=True, slots=True, eq=False)
class Bars:
    """OHLCV columns as equal-length float64 arrays (split-adjusted prices, ascending in time).

    Construction converts to contiguous float64 (no copy when the input already is) and
    validates every value, so the compute functions can trust any ``Bars`` they receive:

    - open, high, low, close must be finite and > 0 (a zero or negative price is a data error,
      and a NaN would silently poison every recursive indicator after it), and within
      [PRICE_MIN, PRICE_MAX] = [1e-100, 1e100]: beyond, sums of squares and ratios inside the
      indicators (TA-Lib's as well as ours) overflow float64;
    - volume must be finite, >= 0 (zero-volume days exist) and <= VOLUME_MAX = 1e100;
    - all five arrays must have the same length.

    OHLC consistency (low <= open, close <= high) is not enforced: real feeds occasionally
    violate it by a tick and TA-Lib does not need it.
    """

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __post_init__(self) -> None:
        # Written out per field: this runs for every message (a one-bar update included), and
        # loops over FIELDS with getattr/zip cost more than the checks themselves.
        o = _as_float_array("open", self.open)
        h = _as_float_array("high", self.high)
        lo = _as_float_array("low", self.low)
        c = _as_float_array("close", self.close)
        v = _as_float_array("volume", self.volume)
        n = c.shape[0]
        if o.shape[0] != n or h.shape[0] != n or lo.shape[0] != n or v.shape[0] != n:
            lengths = dict(zip(FIELDS, (a.shape[0] for a in (o, h, lo, c, v)), strict=True))
            raise InvalidBarsError(f"bar fields have different lengths: {lengths}")
        field, index = _kernels.first_invalid(o, h, lo, c, v)
        if field >= 0:
            name = FIELDS[field]
            value = float((o, h, lo, c, v)[field][index])
            raise InvalidBarsError(
                f"{name}[{index}] = {value!r}: {name} must be {_rule(name, value)}"
            )
        setattr_ = object.__setattr__
        setattr_(self, "open", o)
        setattr_(self, "high", h)
        setattr_(self, "low", lo)
        setattr_(self, "close", c)
        setattr_(self, "volume", v)

    def __len__(self) -> int:
        return int(self.close.shape[0])

    def __getitem__(self, index: slice) -> Bars:
        """Bars ``[start:stop]`` (views, re-validated cheaply), e.g. to feed a history in chunks."""
        if not isinstance(index, slice):
            raise TypeError("Bars can only be sliced (bars[a:b]); index the arrays for one value")
        return Bars(
            self.open[index],
            self.high[index],
            self.low[index],
            self.close[index],
            self.volume[index],
        )

    @classmethod
    def empty(cls) -> Bars:
        """Zero bars: valid input that produces empty outputs and leaves state unchanged."""
        z = np.empty(0, dtype=np.float64)
        return cls(z, z, z, z, z)
