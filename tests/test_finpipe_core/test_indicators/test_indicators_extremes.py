"""Per-symbol sequences of hostile but contract-valid bars: refused cleanly or equal to TA-Lib.

The processor feeds one symbol message by message; a message the engine refuses is
dead-lettered and the next one continues from the last accepted state. So for any sequence:
every message is either refused with ``InvalidBarsError`` (nothing returned) or accepted; every
returned state is finite and survives a msgpack round trip; and the outputs of the accepted
messages equal TA-Lib run once over the accepted bars, bit for bit.
"""

from __future__ import annotations

import re

import msgspec
import numpy as np
import pytest
import talib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finpipe_core.indicators import (
    INDICATOR_COLUMNS,
    PRICE_MAX,
    PRICE_MIN,
    VOLUME_MAX,
    Bars,
    InvalidBarsError,
    compute_batch,
    compute_incremental,
    initial_state,
)

Columns = dict[str, np.ndarray]

# Magnitudes around and beyond the accepted range, as a hostile or broken feed might send.
EXTREMES = (
    1e300,
    1e-300,
    PRICE_MAX,
    PRICE_MIN,
    np.nextafter(PRICE_MAX, np.inf),
    np.nextafter(PRICE_MIN, 0.0),
    1e50,
    1e-50,
    5e-324,
    1.7e308,
)


def _walk(rng: np.random.Generator, n: int, level: float, vol: float) -> Columns:
    close = level * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = close * np.exp(rng.normal(0.0, vol / 3, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, vol / 2, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, vol / 2, n)))
    volume = rng.integers(0, 10**8, n).astype(np.float64)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def _segment(kind: str, n: int, seed: int) -> Columns:
    """One message's bars. Every kind keeps low <= high (the contract's only OHLC rule)."""
    rng = np.random.default_rng(seed)
    if kind == "extreme":  # alternating extremes (issue: 1e300 / 1e-300 overflowed Bollinger)
        a, b = rng.choice(EXTREMES, 2)
        close = np.where(np.arange(n) % 2 == 0, a, b)
        return {
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "volume": rng.choice([0.0, 1.0, 1e100, 1e300], n),
        }
    if kind == "edge":  # the accepted bounds themselves, mixed with ordinary prices
        close = rng.choice([PRICE_MAX, PRICE_MIN, 1.0, 100.0], n)
        spread = rng.choice([1.0, 1.0 + 1e-12, 2.0], n)
        return {
            "open": close,
            "high": np.minimum(close * spread, PRICE_MAX),
            "low": close,
            "close": close,
            "volume": rng.choice([0.0, VOLUME_MAX], n),
        }
    if kind == "zero_volume":
        cols = _walk(rng, n, 50.0, 0.02)
        cols["volume"][:] = 0.0
        return cols
    if kind == "flat":  # low == high == open == close, a halted symbol
        price = float(rng.choice([1e-100, 0.01, 37.5, 1e100]))
        flat = np.full(n, price)
        return {"open": flat, "high": flat, "low": flat, "close": flat, "volume": np.zeros(n)}
    if kind == "low_eq_high":  # range zero but closes outside it (contract-valid)
        cols = _walk(rng, n, 20.0, 0.05)
        cols["high"] = cols["low"].copy()
        return cols
    if kind == "long":  # a 5,000-bar message (about 20 years in one go)
        return _walk(rng, 5000, float(10.0 ** rng.uniform(-3, 5)), 0.03)
    return _walk(rng, n, float(10.0 ** rng.uniform(-2, 4)), 0.02)  # "normal"


KINDS = ("extreme", "edge", "zero_volume", "flat", "low_eq_high", "long", "normal")
segments = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(1, 80), st.integers(0, 2**32 - 1)),
    min_size=1,
    max_size=8,
)


def feed(messages: list[Columns]) -> tuple[Columns, Columns, int]:
    """As the processor: each message accepted or refused; returns accepted bars, outputs,
    and how many messages were refused."""
    state = None
    accepted: dict[str, list[np.ndarray]] = {
        k: [] for k in ("open", "high", "low", "close", "volume")
    }
    outputs: dict[str, list[np.ndarray]] = {c: [] for c in INDICATOR_COLUMNS}
    refused = 0
    for cols in messages:
        try:
            bars = Bars(**cols)
            out, new = compute_incremental(bars, state)
        except InvalidBarsError:
            refused += 1
            continue
        values = np.frombuffer(new["values"], dtype="<f8")
        assert np.isfinite(values).all(), "a returned state must be finite"
        state = msgspec.msgpack.decode(msgspec.msgpack.encode(new))
        for k in accepted:
            accepted[k].append(getattr(bars, k))
        for c in INDICATOR_COLUMNS:
            outputs[c].append(out[c])
    bars_cols = {k: np.concatenate(v) if v else np.empty(0) for k, v in accepted.items()}
    outs = {c: np.concatenate(v) if v else np.empty(0) for c, v in outputs.items()}
    return bars_cols, outs, refused


def assert_talib_exact(bars_cols: Columns, outs: Columns) -> None:
    if len(bars_cols["close"]) == 0:
        return
    ref = compute_batch(Bars(**bars_cols))
    for c in INDICATOR_COLUMNS:
        np.testing.assert_array_equal(outs[c], ref[c], err_msg=c)  # NaN == NaN here


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plan=segments, tail=st.integers(1, 300), seed=st.integers(0, 2**32 - 1))
def test_hostile_sequences_are_refused_or_equal_talib(plan, tail: int, seed: int) -> None:
    messages = [_segment(kind, n, s) for kind, n, s in plan]
    messages.append(_walk(np.random.default_rng(seed), tail, 80.0, 0.02))  # normal bars after
    bars_cols, outs, refused = feed(messages)
    assert refused <= len(plan)  # the normal tail is never refused
    assert len(outs["rsi_14"]) == len(bars_cols["close"]) >= tail
    assert_talib_exact(bars_cols, outs)


def test_the_reported_alternating_extremes_are_refused_with_the_limit() -> None:
    """1e300 / 1e-300 alternating used to overflow the Bollinger sum into a NaN state."""
    close = np.where(np.arange(60) % 2 == 0, 1e300, 1e-300)
    with pytest.raises(
        InvalidBarsError,
        match=r"open\[0\] = 1e\+300: open must be within "
        r"\[1e-100, 1e\+100\]",
    ):
        Bars(close, close, close, close, np.ones(60))
    assert not np.isfinite(talib.BBANDS(close, timeperiod=20)[0][19:]).all()  # TA-Lib's NaN


@pytest.mark.parametrize(("field", "value"), [("close", 1e-300), ("low", 1e101), ("volume", 1e300)])
def test_out_of_range_values_name_value_and_limit(field: str, value: float) -> None:
    cols = _walk(np.random.default_rng(3), 30, 10.0, 0.01)
    cols[field][4] = value
    with pytest.raises(
        InvalidBarsError,
        match=rf"^{field}\[4\] = {re.escape(repr(value))}: "
        r".*(within \[1e-100, 1e\+100\]|<= 1e\+100)",
    ):
        Bars(**cols)


def test_bounds_are_accepted_and_equal_talib() -> None:
    """PRICE_MIN / PRICE_MAX / VOLUME_MAX themselves, alternating: finite, TA-Lib's numbers."""
    n = 400
    close = np.where(np.arange(n) % 3 == 0, PRICE_MAX, PRICE_MIN)
    close[::7] = 1.0
    cols = {
        "open": close,
        "high": close,
        "low": close,
        "close": close,
        "volume": np.where(np.arange(n) % 2 == 0, VOLUME_MAX, 0.0),
    }
    bars_cols, outs, refused = feed(
        [{k: v[:150] for k, v in cols.items()}, {k: v[150:] for k, v in cols.items()}]
    )
    assert refused == 0
    assert_talib_exact(bars_cols, outs)
    assert np.isfinite(outs["bb_upper"][19:]).all()


def test_overflow_inside_the_limits_is_refused_and_state_kept() -> None:
    """ADX's smoothed true range decays to the smallest subnormal over a long flat run; a jump
    whose true range is 0 (previous close far above its own high, contract-valid) then makes
    +DI infinite. TA-Lib returns NaN there; the engine refuses the chunk instead."""
    rng = np.random.default_rng(5)
    first = _walk(rng, 30, 1.0, 0.02)
    flat = {k: np.ones(12_000) for k in ("open", "high", "low", "close")}
    flat["volume"] = np.zeros(12_000)
    first = {k: np.concatenate([first[k], flat[k]]) for k in first}
    first["close"][-1] = 1.0
    _, state = compute_incremental(Bars(**first), None)
    jump = {
        "open": np.array([1.0, 100.0]),
        "high": np.array([1.0, 100.0]),
        "low": np.array([1.0, 100.0]),
        "close": np.array([100.0, 100.0]),
        "volume": np.zeros(2),
    }
    # Bar 1 of `jump`: high = low = 1 = previous close, close 100 (outside its range);
    # bar 2: high = low = close = 100, so its true range is 0 while +DM is 99.
    everything = {k: np.concatenate([first[k], jump[k]]) for k in first}
    ref = talib.ADX(everything["high"], everything["low"], everything["close"], 14)
    assert np.isnan(ref[-1])  # TA-Lib itself breaks down here
    before = state["values"]
    with pytest.raises(InvalidBarsError, match=r"overflow float64 in adx_14 \(at bar 12031\)"):
        compute_incremental(Bars(**jump), state)
    assert state["values"] == before  # nothing was changed or returned
    # The symbol goes on with sane bars after the refused message, equal to TA-Lib over the
    # accepted bars.
    after = _walk(np.random.default_rng(6), 50, 1.0, 0.02)
    bars_cols, outs, refused = feed([first, jump, after])
    assert refused == 1
    assert_talib_exact(bars_cols, outs)


def test_initial_state_is_finite_zero() -> None:
    values = np.frombuffer(initial_state()["values"], dtype="<f8")
    assert values.size > 0 and not values.any()
