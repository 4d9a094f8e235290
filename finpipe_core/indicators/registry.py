"""The indicator registry: one entry per TA-Lib call, with its incremental twin.

Adding an indicator is one ``Indicator(...)`` entry in ``INDICATORS``. Another instance of an
existing kernel (say ``_sma(100)``) needs nothing else; a new calculation also needs its kernel
in ``_kernels`` (same signature as the others, state a fixed-size float vector, listed in
``KERNELS`` and dispatched in ``run_plan``). Its columns must also exist in the database
schema. States saved before the change carry another registry fingerprint, so
``compute_incremental`` rejects them and the caller recomputes that symbol from its stored
history (see ``InvalidStateError``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import talib
from talib import abstract

from finpipe_core.indicators import _kernels
from finpipe_core.indicators.bars import Bars

BatchFn = Callable[[Bars], tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class Indicator:
    """One TA-Lib function with fixed parameters, computed in batch and incrementally.

    ``batch`` is the reference (TA-Lib over a whole history); ``kernel`` must reproduce it
    chunk by chunk from a state of ``state_size`` floats. ``lookback`` comes from TA-Lib itself
    so the warm-up length is never re-derived by hand.
    """

    key: str
    columns: tuple[str, ...]
    talib_function: str
    talib_params: Mapping[str, int | float]
    batch: BatchFn
    kernel: Callable[..., None]
    params: tuple[float, ...]
    state_size: int

    def __post_init__(self) -> None:
        if self.kernel not in _kernels.KERNELS:
            raise ValueError(f"{self.key}: kernel must be listed in _kernels.KERNELS")
        if len(self.params) > _kernels.MAX_PARAMS:
            raise ValueError(f"{self.key}: at most {_kernels.MAX_PARAMS} kernel params")
        object.__setattr__(self, "talib_params", MappingProxyType(dict(self.talib_params)))

    @property
    def lookback(self) -> int:
        """Index of the first non-NaN output, from TA-Lib's own lookback function."""
        func = abstract.Function(self.talib_function)
        func.set_parameters(dict(self.talib_params))
        return int(func.lookback)


def _rsi(period: int) -> Indicator:
    def batch(b: Bars) -> tuple[np.ndarray, ...]:
        return (talib.RSI(b.close, timeperiod=period),)

    return Indicator(
        f"rsi_{period}",
        (f"rsi_{period}",),
        "RSI",
        {"timeperiod": period},
        batch,
        _kernels.rsi_kernel,
        (period,),
        3,
    )


def _macd(fast: int, slow: int, signal: int) -> Indicator:
    if not 1 < fast < slow or signal < 2:
        raise ValueError("MACD kernel assumes 1 < fast < slow and signal >= 2")

    def batch(b: Bars) -> tuple[np.ndarray, ...]:
        return tuple(talib.MACD(b.close, fastperiod=fast, slowperiod=slow, signalperiod=signal))

    return Indicator(
        "macd",
        ("macd", "macd_signal", "macd_hist"),
        "MACD",
        {"fastperiod": fast, "slowperiod": slow, "signalperiod": signal},
        batch,
        _kernels.macd_kernel,
        (fast, slow, signal),
        3,
    )


def _sma(period: int) -> Indicator:
    if period < 2:
        raise ValueError("SMA kernel needs period >= 2")

    def batch(b: Bars) -> tuple[np.ndarray, ...]:
        return (talib.SMA(b.close, timeperiod=period),)

    return Indicator(
        f"sma_{period}",
        (f"sma_{period}",),
        "SMA",
        {"timeperiod": period},
        batch,
        _kernels.sma_kernel,
        (period,),
        1 + (period - 1),
    )


def _ema(period: int) -> Indicator:
    if period < 2:
        raise ValueError("EMA kernel needs period >= 2")

    def batch(b: Bars) -> tuple[np.ndarray, ...]:
        return (talib.EMA(b.close, timeperiod=period),)

    return Indicator(
        f"ema_{period}",
        (f"ema_{period}",),
        "EMA",
        {"timeperiod": period},
        batch,
        _kernels.ema_kernel,
        (period,),
        1,
    )


def _bbands(period: int, dev_up: float, dev_dn: float) -> Indicator:
    if period < 2:
        raise ValueError("BBANDS kernel needs period >= 2")

    def batch(b: Bars) -> tuple[np.ndarray, ...]:
        return tuple(
            talib.BBANDS(
                b.close, timeperiod=period, nbdevup=dev_up, nbdevdn=dev_dn, matype=talib.MA_Type.SMA
            )
        )

    return Indicator(
        f"bbands_{period}",
        ("bb_upper", "bb_middle", "bb_lower"),
        "BBANDS",
        {
            "timeperiod": period,
            "nbdevup": dev_up,
            "nbdevdn": dev_dn,
            "matype": int(talib.MA_Type.SMA),
        },
        batch,
        _kernels.bbands_kernel,
        (period, dev_up, dev_dn),
        5 + (period - 1),
    )


def _atr(period: int) -> Indicator:
    if period < 2:
        raise ValueError("ATR kernel needs period >= 2")

    def batch(b: Bars) -> tuple[np.ndarray, ...]:
        return (talib.ATR(b.high, b.low, b.close, timeperiod=period),)

    return Indicator(
        f"atr_{period}",
        (f"atr_{period}",),
        "ATR",
        {"timeperiod": period},
        batch,
        _kernels.atr_kernel,
        (period,),
        2,
    )


def _obv() -> Indicator:
    def batch(b: Bars) -> tuple[np.ndarray, ...]:
        return (talib.OBV(b.close, b.volume),)

    return Indicator("obv", ("obv",), "OBV", {}, batch, _kernels.obv_kernel, (), 2)


def _stoch(fastk: int, slowk: int, slowd: int) -> Indicator:
    if fastk < 2 or slowk < 2 or slowd < 2:
        raise ValueError("STOCH kernel needs all periods >= 2")

    def batch(b: Bars) -> tuple[np.ndarray, ...]:
        return tuple(
            talib.STOCH(
                b.high,
                b.low,
                b.close,
                fastk_period=fastk,
                slowk_period=slowk,
                slowk_matype=talib.MA_Type.SMA,
                slowd_period=slowd,
                slowd_matype=talib.MA_Type.SMA,
            )
        )

    return Indicator(
        "stoch",
        ("stoch_k", "stoch_d"),
        "STOCH",
        {
            "fastk_period": fastk,
            "slowk_period": slowk,
            "slowk_matype": int(talib.MA_Type.SMA),
            "slowd_period": slowd,
            "slowd_matype": int(talib.MA_Type.SMA),
        },
        batch,
        _kernels.stoch_kernel,
        (fastk, slowk, slowd),
        2 + 2 * (fastk - 1) + (slowk - 1) + (slowd - 1),
    )


def _adx(period: int) -> Indicator:
    if period < 2:
        raise ValueError("ADX kernel needs period >= 2")

    def batch(b: Bars) -> tuple[np.ndarray, ...]:
        return (talib.ADX(b.high, b.low, b.close, timeperiod=period),)

    return Indicator(
        f"adx_{period}",
        (f"adx_{period}",),
        "ADX",
        {"timeperiod": period},
        batch,
        _kernels.adx_kernel,
        (period,),
        7,
    )


INDICATORS: tuple[Indicator, ...] = (
    _rsi(14),
    _macd(12, 26, 9),
    _sma(20),
    _sma(50),
    _sma(200),
    _ema(12),
    _ema(26),
    _ema(50),
    _bbands(20, 2.0, 2.0),
    _atr(14),
    _obv(),
    _stoch(14, 3, 3),
    _adx(14),
)
"""The indicator set, in the column order of the database schema."""

# --- warm-up -------------------------------------------------------------------------------
WARM_TOLERANCE_PRICE = 1e-4
"""A warm price-scale value (moving averages, bands, MACD, ATR) moves by at most this fraction
of the bar's close when the history starts later."""
WARM_TOLERANCE_POINTS = 0.01
"""A warm 0..100 oscillator (RSI, Stochastic, ADX) moves by at most this many points."""

CONVERGENCE_BARS: Mapping[str, int | None] = MappingProxyType(
    {
        # Recursive smoothings remember their seed: the seed's weight decays by a factor d per
        # bar, so after lookback + ln(tolerance)/ln(d) bars it is below the tolerance.
        # Wilder's smoothing (RSI, ATR): d = 13/14 -> 14 + 125 bars.
        "rsi_14": 140,
        # The slow EMA (d = 25/27: 120 bars) feeds the signal EMA (d = 0.8: 41 bars): 33 + 161.
        "macd": 200,
        # Windows: the value reads exactly the last n bars, so bar n is already final.
        "sma_20": 20,
        "sma_50": 50,
        "sma_200": 200,
        # EMA(n): d = (n - 1) / (n + 1), seeded by the SMA of the first n bars.
        "ema_12": 70,
        "ema_26": 150,
        "ema_50": 280,
        "bbands_20": 20,
        "atr_14": 140,
        # A running sum: every value depends on the first bar forever (only its changes mean
        # something), so OBV is never warm.
        "obv": None,
        # Fast %K over 14 bars, then two 3-bar SMAs: a window of 18 bars.
        "stoch": 18,
        # Two Wilder smoothings in a row: the seed's weight decays like k * d^k -> 27 + 200.
        "adx_14": 230,
    }
)
"""Per indicator key: the bar number (1 = a symbol's first stored bar) from which a value no
longer depends on where the history starts, within ``WARM_TOLERANCE_*``; None: never. The
``indicators_warm`` view (migration 0006) states the same numbers, checked by a test against
this table, and ``tests/test_finpipe_core/test_indicators/test_warmup.py`` checks them against
TA-Lib on long real histories. Values are TA-Lib's either way: the marker only says which ones a
later start would change."""


def convergence_bars(indicator: Indicator) -> int | None:
    """``CONVERGENCE_BARS`` of ``indicator`` (every registered indicator must state one)."""
    return CONVERGENCE_BARS[indicator.key]
