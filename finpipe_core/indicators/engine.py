"""Batch and incremental computation over the registry.

Batch (``compute_batch``) is TA-Lib over a whole history: the reference, used for backfills,
recomputation after a split and the Dagster asset checks.

Incremental (``compute_incremental``) continues from a saved state, so a processor that
receives a month of new bars computes only those bars instead of re-reading years of history.
Its contract: feeding a history in any chunking, with the state round-tripped through msgpack
between chunks (stored in PostgreSQL, resumed in another process), gives what
``compute_batch`` gives over the whole history: the same NaN positions and the same values.

State layout (version ``STATE_VERSION``), a small dict that msgpack encodes as is::

    {"version": 2,
     "spec": "3f9a...",        # fingerprint of the registry the state belongs to
     "bars": 1234,             # bars consumed so far (global index of the next bar)
     "values": b"..."}         # every kernel's state vector, float64 little-endian, concatenated

Why bytes and not a dict of float lists (version 1): a one-bar update is dominated by fixed
costs, and turning ~400 floats into Python lists and back cost more than computing the bar.
The bytes are exact (no decimal round trip), so resuming anywhere gives the same numbers.
``state_vectors`` splits them per indicator for reading; what each vector holds is documented
on its kernel in ``_kernels``. A state of another version or registry is refused with
``InvalidStateError`` (callers recompute from stored prices).

A state never holds NaN/inf: inputs are validated (``Bars``), and a chunk whose computation
would still overflow (possible only with pathological bars, e.g. closes far outside the
high-low range after thousands of flat bars) is refused with ``InvalidBarsError`` before any
state is returned.
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any

import numpy as np

from finpipe_core.indicators import _kernels
from finpipe_core.indicators.bars import Bars, InvalidBarsError
from finpipe_core.indicators.registry import INDICATORS

STATE_VERSION = 2

INDICATOR_COLUMNS: tuple[str, ...] = tuple(c for ind in INDICATORS for c in ind.columns)
"""Output columns, in registry (= database schema) order."""

LOOKBACK: dict[str, int] = {c: ind.lookback for ind in INDICATORS for c in ind.columns}
"""Column -> index of its first non-NaN value over a history starting at bar 0 (TA-Lib's own
lookback for the default parameters; TA-Lib's unstable-period settings must stay at 0)."""

_SPEC: str = hashlib.sha256(
    repr(
        [(i.key, i.kernel.__name__, tuple(map(float, i.params)), i.state_size) for i in INDICATORS]
    ).encode()
).hexdigest()[:16]


def _build_plan() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Registry -> arrays for ``_kernels.run_plan``: plan rows (kernel id, state slice, output
    rows), kernel params, and each output row's first valid global bar index."""
    k = len(INDICATORS)
    plan = np.empty((k, 5), dtype=np.int64)
    params = np.zeros((k, _kernels.MAX_PARAMS), dtype=np.float64)
    first_valid = np.array([LOOKBACK[c] for c in INDICATOR_COLUMNS], dtype=np.int64)
    s = r = 0
    for j, ind in enumerate(INDICATORS):
        plan[j] = (
            _kernels.KERNELS.index(ind.kernel),
            s,
            s + ind.state_size,
            r,
            r + len(ind.columns),
        )
        params[j, : len(ind.params)] = ind.params
        s += ind.state_size
        r += len(ind.columns)
    return plan, params, first_valid


_PLAN = _build_plan()
_STATE_SLICES: tuple[tuple[str, int, int], ...] = tuple(
    (ind.key, int(row[_kernels.PLAN_S0]), int(row[_kernels.PLAN_S1]))
    for ind, row in zip(INDICATORS, _PLAN[0], strict=True)
)
_STATE_BYTES = 8 * sum(ind.state_size for ind in INDICATORS)
_LE_F8 = np.dtype("<f8")  # the stored byte order, whatever the machine's
_NATIVE_LE = sys.byteorder == "little"
_N_COLUMNS = len(INDICATOR_COLUMNS)


class InvalidStateError(ValueError):
    """A saved state that cannot be resumed (other version, other indicator set, corrupted).

    The remedy is always the same: drop the state and recompute the symbol from its stored
    history (``compute_incremental(history, None)`` or ``compute_batch``).
    """


def initial_state() -> dict[str, Any]:
    """The state at the start of a history (what ``state=None`` means)."""
    return {"version": STATE_VERSION, "spec": _SPEC, "bars": 0, "values": bytes(_STATE_BYTES)}


def state_vectors(state: dict[str, Any]) -> dict[str, list[float]]:
    """Indicator key -> its state vector as floats (for reading and debugging a state)."""
    _, flat = _unpack(state)
    values = flat.tolist()
    return {key: values[a:b] for key, a, b in _STATE_SLICES}


def _empty_outputs() -> dict[str, np.ndarray]:
    return {c: np.empty(0, dtype=np.float64) for c in INDICATOR_COLUMNS}


def compute_batch(bars: Bars) -> dict[str, np.ndarray]:
    """Every indicator over the whole history with TA-Lib (NaN during each warm-up)."""
    if len(bars) == 0:
        return _empty_outputs()
    out: dict[str, np.ndarray] = {}
    for ind in INDICATORS:
        for col, arr in zip(ind.columns, ind.batch(bars), strict=True):
            out[col] = arr
    return out


def can_resume(state: Any) -> bool:
    """Whether ``compute_incremental`` can continue from ``state``: saved by this version of
    the engine for this indicator set. A history whose state cannot resume is recomputed."""
    return (
        type(state) is dict
        and state.get("version") == STATE_VERSION
        and (state.get("spec") == _SPEC)
    )


def _unpack(state: Any) -> tuple[int, np.ndarray]:
    """(bars consumed, a fresh writable copy of the state vector), or ``InvalidStateError``."""
    if type(state) is dict and state.get("version") == STATE_VERSION:
        n0 = state.get("bars")
        values = state.get("values")
        if (
            state.get("spec") == _SPEC
            and type(n0) is int
            and n0 >= 0
            and type(values) is bytes
            and len(values) == _STATE_BYTES
        ):
            return n0, np.frombuffer(values, dtype=_LE_F8).copy()  # writable, native order
    raise InvalidStateError(_why_invalid(state))


def _why_invalid(state: Any) -> str:
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        version = state.get("version") if isinstance(state, dict) else type(state).__name__
        return f"indicator state version {version!r} is not {STATE_VERSION}; recompute from history"
    if state.get("spec") != _SPEC:
        return (
            "indicator state was saved by another indicator set (registry fingerprint "
            f"{state.get('spec')!r}, now {_SPEC!r}); recompute from history"
        )
    n0 = state.get("bars")
    if type(n0) is not int or n0 < 0:
        return f"indicator state lacks a valid 'bars' count (got {n0!r})"
    values = state.get("values")
    size = len(values) if isinstance(values, bytes | bytearray) else type(values).__name__
    return f"indicator state 'values' must be {_STATE_BYTES} bytes (got {size})"


def compute_incremental(
    bars: Bars, state: dict[str, Any] | None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Indicators for just ``bars`` (the bars following the state), plus the new state.

    ``state=None`` means the start of a history. The input state is not modified. The returned
    arrays are rows of one 2-D array (one allocation per call). Empty ``bars`` return empty
    outputs and the state unchanged (``initial_state()`` for ``None``).

    Raises ``InvalidStateError`` for a state that cannot be resumed, and ``InvalidBarsError``
    when ``bars`` would drive an indicator to NaN/inf past its warm-up (float64 overflow):
    nothing is returned then, so a non-finite state can never be stored.

    The engine has no dates: the caller must feed each bar exactly once and in order (e.g. drop
    re-delivered bars dated on or before the symbol's last processed date), and recompute from
    history on ``InvalidStateError`` or when a split rescales the stored prices.
    """
    if state is None:
        state = initial_state()
    n0, flat = _unpack(state)
    m = bars.close.shape[0]
    if m == 0:
        return _empty_outputs(), state
    out = np.empty((_N_COLUMNS, m), dtype=np.float64)
    failed, at = _kernels.run_plan(
        bars.open, bars.high, bars.low, bars.close, bars.volume, n0, *_PLAN, flat, out
    )
    if failed != -1:
        raise _overflow(failed, at, n0, m)
    new_state = {
        "version": STATE_VERSION,
        "spec": _SPEC,
        "bars": n0 + m,
        "values": flat.tobytes() if _NATIVE_LE else flat.astype(_LE_F8).tobytes(),
    }
    return dict(zip(INDICATOR_COLUMNS, out)), new_state  # noqa: B905 (18 rows by construction)


def _overflow(failed: int, at: int, n0: int, m: int) -> Exception:
    if failed == -2:
        return InvalidStateError("indicator state holds NaN or inf")
    where = f"at bar {at}" if at >= 0 else "in its state"
    return InvalidBarsError(
        f"bars {n0}..{n0 + m - 1} overflow float64 in {INDICATORS[failed].key} ({where}): "
        "TA-Lib would return NaN/inf here, and a non-finite state could never be resumed"
    )
