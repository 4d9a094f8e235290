"""Bad bars and bad states are refused with errors that say what and where."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from workers.indicators import (
    Bars,
    InvalidBarsError,
    InvalidStateError,
    compute_incremental,
    initial_state,
)

FIELDS = ("open", "high", "low", "close", "volume")


def good_columns(n: int = 30) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return {
        "open": close * 1.001,
        "high": close * 1.01,
        "low": close * 0.99,
        "close": close,
        "volume": np.full(n, 1000.0),
    }


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, -1.0])
def test_non_finite_or_negative_values_are_rejected(field: str, bad: float) -> None:
    cols = good_columns()
    cols[field][17] = bad
    with pytest.raises(InvalidBarsError, match=rf"^{field}\[17\] = ") as info:
        Bars(**cols)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("field", ["open", "high", "low", "close"])
def test_zero_price_is_rejected(field: str) -> None:
    cols = good_columns()
    cols[field][0] = 0.0
    with pytest.raises(InvalidBarsError, match=rf"{field}\[0\] = 0\.0: {field} must be finite"):
        Bars(**cols)


def test_zero_volume_is_valid() -> None:
    cols = good_columns()
    cols["volume"][:] = 0.0
    assert len(Bars(**cols)) == 30


def test_first_bad_index_is_reported() -> None:
    cols = good_columns()
    cols["close"][[5, 9]] = np.nan
    with pytest.raises(InvalidBarsError, match=r"close\[5\]"):
        Bars(**cols)


def test_mismatched_lengths_are_rejected() -> None:
    cols = good_columns()
    cols["volume"] = cols["volume"][:-1]
    with pytest.raises(InvalidBarsError, match=r"different lengths.*'volume': 29"):
        Bars(**cols)


def test_non_numeric_and_2d_input_are_rejected() -> None:
    cols = good_columns()
    with pytest.raises(InvalidBarsError, match="open: cannot be read"):
        Bars(**{**cols, "open": ["a"] * 30})
    with pytest.raises(InvalidBarsError, match="expected a 1-D array"):
        Bars(**{**cols, "close": cols["close"].reshape(5, 6)})


def test_inputs_are_converted_to_float64() -> None:
    cols = {k: v.tolist() for k, v in good_columns().items()}
    cols["volume"] = [1000] * 30  # ints, as vendors send them
    b = Bars(**cols)
    assert all(getattr(b, f).dtype == np.float64 for f in FIELDS)
    assert b[3:7].close.tolist() == cols["close"][3:7]
    with pytest.raises(TypeError):
        b[3]  # type: ignore[index]


def test_empty_input_leaves_state_unchanged() -> None:
    b = Bars(**good_columns())
    _, state = compute_incremental(b, None)
    snapshot = copy.deepcopy(state)
    out, same = compute_incremental(Bars.empty(), state)
    assert same == snapshot
    assert all(arr.shape == (0,) for arr in out.values())
    out, fresh = compute_incremental(Bars.empty(), None)
    assert fresh == initial_state()


def _state_after(n: int = 30) -> dict:
    return compute_incremental(Bars(**good_columns(n)), None)[1]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.update(version=0), "version 0"),
        (lambda s: s.update(spec="0123"), "another indicator set"),
        (lambda s: s.update(bars=-1), "'bars'"),
        (lambda s: s.update(bars=3.0), "'bars'"),
        (lambda s: s["indicators"].pop("adx_14"), "no entry for 'adx_14'"),
        (lambda s: s["indicators"]["sma_200"].pop(), "'sma_200' is not a list of 200"),
        (lambda s: s["indicators"]["rsi_14"].__setitem__(1, "x"), "non-numbers"),
        (lambda s: s["indicators"]["rsi_14"].__setitem__(1, float("nan")), "NaN or inf"),
    ],
)
def test_bad_state_is_rejected(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    state = _state_after()
    mutate(state)
    with pytest.raises(InvalidStateError, match=message) as info:
        compute_incremental(Bars(**good_columns(3)), state)
    assert isinstance(info.value, ValueError)


def test_state_is_strict_json_and_not_mutated() -> None:
    state = _state_after()
    before = json.dumps(state, allow_nan=False)
    _, new = compute_incremental(Bars(**good_columns(5)), state)
    assert json.dumps(state, allow_nan=False) == before
    assert new["bars"] == state["bars"] + 5
    json.dumps(new, allow_nan=False)
