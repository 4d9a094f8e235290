"""Bad bars and bad states are refused with errors that say what and where."""

from __future__ import annotations

import copy

import msgspec
import numpy as np
import pytest

from finpipe_core.indicators import (
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
        (lambda s: s.update(version=1), "version 1 is not 2"),
        (lambda s: s.update(spec="0123"), "another indicator set"),
        (lambda s: s.update(bars=-1), "'bars'"),
        (lambda s: s.update(bars=3.0), "'bars'"),
        (lambda s: s.pop("values"), "'values' must be"),
        (lambda s: s.update(values=s["values"][:-8]), r"'values' must be \d+ bytes"),
        (lambda s: s.update(values=list(s["values"])), "got list"),
        (lambda s: s.update(values=_with_float(s["values"], 1, float("nan"))), "NaN or inf"),
        (lambda s: s.update(values=_with_float(s["values"], 7, float("inf"))), "NaN or inf"),
    ],
)
def test_bad_state_is_rejected(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    state = _state_after()
    mutate(state)
    with pytest.raises(InvalidStateError, match=message) as info:
        compute_incremental(Bars(**good_columns(3)), state)
    assert isinstance(info.value, ValueError)


def _with_float(values: bytes, index: int, x: float) -> bytes:
    arr = np.frombuffer(values, dtype="<f8").copy()
    arr[index] = x
    return arr.tobytes()


def test_version_1_state_is_stale() -> None:
    """A state of the dict-of-lists format (version 1) is refused: the caller recomputes."""
    old = {"version": 1, "spec": initial_state()["spec"], "bars": 30, "indicators": {}}
    with pytest.raises(InvalidStateError, match="version 1 is not 2; recompute from history"):
        compute_incremental(Bars(**good_columns(3)), old)


def test_state_is_msgpack_bytes_and_not_mutated() -> None:
    state = _state_after()
    before = msgspec.msgpack.encode(state)
    _, new = compute_incremental(Bars(**good_columns(5)), state)
    assert msgspec.msgpack.encode(state) == before
    assert new["bars"] == state["bars"] + 5
    assert set(new) == {"version", "spec", "bars", "values"}
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(new)) == new
    assert np.isfinite(np.frombuffer(new["values"], dtype="<f8")).all()
