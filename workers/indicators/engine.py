"""Batch and incremental computation over the registry.

Batch (``compute_batch``) is TA-Lib over a whole history: the reference, used for backfills,
recomputation after a split and the Dagster asset checks.

Incremental (``compute_incremental``) continues from a saved state, so a processor that
receives a month of new bars computes only those bars instead of re-reading years of history.
Its contract: feeding a history in any chunking, with the state JSON round-tripped between
chunks (stored in PostgreSQL, resumed in another process), gives what ``compute_batch`` gives
over the whole history: the same NaN positions and the same values (1e-9).

State layout (version ``STATE_VERSION``), plain JSON (no NaN/inf, bounded size)::

    {"version": 1,
     "spec": "3f9a...",                 # fingerprint of the registry the state belongs to
     "bars": 1234,                      # bars consumed so far (global index of the next bar)
     "indicators": {"rsi_14": [prev_close, gain, loss],
                    "macd": [fast_ema, slow_ema, signal_ema],
                    "sma_200": [running_total, ...ring of the last 199 closes],
                    ...}}

What each vector holds is documented on its kernel in ``_kernels``. Floats survive
``json.dumps``/``json.loads`` exactly (shortest repr round-trips), and PostgreSQL ``jsonb``
keeps numbers as exact decimals, which is why resuming in another process gives the same
numbers. A state never holds NaN/inf (inputs are validated), which ``jsonb`` would reject.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import numpy as np

from workers.indicators import _kernels
from workers.indicators.bars import Bars
from workers.indicators.registry import INDICATORS

STATE_VERSION = 1

INDICATOR_COLUMNS: tuple[str, ...] = tuple(c for ind in INDICATORS for c in ind.columns)
"""Output columns, in registry (= database schema) order."""

LOOKBACK: dict[str, int] = {c: ind.lookback for ind in INDICATORS for c in ind.columns}
"""Column -> index of its first non-NaN value over a history starting at bar 0 (TA-Lib's own
lookback for the default parameters; TA-Lib's unstable-period settings must stay at 0)."""

_KEYS: tuple[str, ...] = tuple(ind.key for ind in INDICATORS)
_SPEC: str = hashlib.sha256(
    repr(
        [(i.key, i.kernel.__name__, tuple(map(float, i.params)), i.state_size) for i in INDICATORS]
    ).encode()
).hexdigest()[:16]
_SIZES: dict[str, int] = {ind.key: ind.state_size for ind in INDICATORS}


def _build_plan() -> tuple[np.ndarray, ...]:
    """Registry -> arrays for ``_kernels.run_plan`` (kernel ids, params, state/row offsets)."""
    k = len(INDICATORS)
    kinds = np.empty(k, dtype=np.int64)
    params = np.zeros((k, _kernels.MAX_PARAMS), dtype=np.float64)
    s0, s1, r0, r1 = (np.empty(k, dtype=np.int64) for _ in range(4))
    s = r = 0
    for j, ind in enumerate(INDICATORS):
        kinds[j] = _kernels.KERNELS.index(ind.kernel)
        params[j, : len(ind.params)] = ind.params
        s0[j], s1[j] = s, s + ind.state_size
        r0[j], r1[j] = r, r + len(ind.columns)
        s += ind.state_size
        r += len(ind.columns)
    return kinds, params, s0, s1, r0, r1


_PLAN = _build_plan()
_STATE_SLICES: tuple[tuple[str, int, int], ...] = tuple(
    (ind.key, int(a), int(b)) for ind, a, b in zip(INDICATORS, _PLAN[2], _PLAN[3], strict=True)
)


class InvalidStateError(ValueError):
    """A saved state that cannot be resumed (other version, other indicator set, corrupted).

    The remedy is always the same: drop the state and recompute the symbol from its stored
    history (``compute_incremental(history, None)`` or ``compute_batch``).
    """


def initial_state() -> dict[str, Any]:
    """The state at the start of a history (what ``state=None`` means)."""
    return {
        "version": STATE_VERSION,
        "spec": _SPEC,
        "bars": 0,
        "indicators": {key: [0.0] * size for key, size in _SIZES.items()},
    }


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


def _unpack(state: dict[str, Any]) -> tuple[int, np.ndarray]:
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        version = state.get("version") if isinstance(state, dict) else type(state).__name__
        raise InvalidStateError(
            f"indicator state version {version!r} is not {STATE_VERSION}; recompute from history"
        )
    if state.get("spec") != _SPEC:
        raise InvalidStateError(
            "indicator state was saved by another indicator set (registry fingerprint "
            f"{state.get('spec')!r}, now {_SPEC!r}); recompute from history"
        )
    n0 = state.get("bars")
    inds = state.get("indicators")
    if type(n0) is not int or n0 < 0 or not isinstance(inds, dict):
        raise InvalidStateError("indicator state lacks a valid 'bars' count or 'indicators'")
    try:
        parts = [inds[key] for key in _KEYS]
    except KeyError as exc:
        raise InvalidStateError(f"indicator state has no entry for {exc.args[0]!r}") from None
    for key, part in zip(_KEYS, parts, strict=True):
        if not isinstance(part, list) or len(part) != _SIZES[key]:
            raise InvalidStateError(
                f"indicator state for {key!r} is not a list of {_SIZES[key]} numbers"
            )
    try:
        flat = np.array(list(itertools.chain.from_iterable(parts)), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidStateError(f"indicator state holds non-numbers: {exc}") from None
    if not np.isfinite(flat).all():
        raise InvalidStateError("indicator state holds NaN or inf")
    return n0, flat


def compute_incremental(
    bars: Bars, state: dict[str, Any] | None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Indicators for just ``bars`` (the bars following the state), plus the new state.

    ``state=None`` means the start of a history. The input state is not modified. The returned
    arrays are rows of one 2-D array (one allocation per call). Empty ``bars`` return empty
    outputs and the state unchanged (``initial_state()`` for ``None``).

    The engine has no dates: the caller must feed each bar exactly once and in order (e.g. drop
    re-delivered bars dated on or before the symbol's last processed date), and recompute from
    history on ``InvalidStateError`` or when a split rescales the stored prices.
    """
    if state is None:
        state = initial_state()
    m = len(bars)
    n0, flat = _unpack(state)
    if m == 0:
        return _empty_outputs(), state
    out = np.empty((len(INDICATOR_COLUMNS), m), dtype=np.float64)
    _kernels.run_plan(
        bars.open, bars.high, bars.low, bars.close, bars.volume, n0, *_PLAN, flat, out
    )
    values = flat.tolist()
    new_state = {
        "version": STATE_VERSION,
        "spec": _SPEC,
        "bars": n0 + m,
        "indicators": {key: values[a:b] for key, a, b in _STATE_SLICES},
    }
    return dict(zip(INDICATOR_COLUMNS, out, strict=True)), new_state
