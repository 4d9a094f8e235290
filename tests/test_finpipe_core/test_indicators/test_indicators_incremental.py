"""Property: any chunking, state msgpack round-tripped between chunks, equals TA-Lib in batch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from finpipe_core.indicators import (
    INDICATOR_COLUMNS,
    Bars,
    compute_batch,
    compute_incremental,
    state_vectors,
)

PROPERTY_SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def assert_same(got: np.ndarray, ref: np.ndarray, col: str) -> None:
    """Same NaN positions; values within 1e-9 (relative above 1, e.g. OBV)."""
    assert got.shape == ref.shape, col
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=col)
    ok = ~np.isnan(ref)
    np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-9, atol=1e-9, err_msg=col)


def run_chunked(bars: Bars, sizes: list[int]) -> tuple[dict[str, np.ndarray], dict]:
    """Feed ``bars`` in chunks of ``sizes`` (the rest in one chunk), msgpack between chunks."""
    state = None
    parts: dict[str, list[np.ndarray]] = {col: [] for col in INDICATOR_COLUMNS}
    start = 0
    for size in [*sizes, len(bars)]:
        chunk = bars[start : start + size]
        out, state = compute_incremental(chunk, state)
        # What the processor does: store as msgpack in PostgreSQL, load in another process.
        state = msgspec.msgpack.decode(msgspec.msgpack.encode(state))
        for col in INDICATOR_COLUMNS:
            assert out[col].shape == (len(chunk),)
            parts[col].append(out[col])
        start += len(chunk)
        if start >= len(bars):
            break
    assert state is not None
    return {col: np.concatenate(parts[col]) for col in INDICATOR_COLUMNS}, state


@st.composite
def ohlcv(draw: st.DrawFn, max_len: int = 320) -> Bars:
    """Realistic bars: low <= open, close <= high, positive volume, occasional flat stretches."""
    n = draw(st.integers(0, max_len))
    level = 10.0 ** draw(st.floats(-2.0, 5.0))
    vol = draw(st.sampled_from([0.0005, 0.01, 0.03, 0.08]))
    step = st.one_of(st.just(0.0), st.floats(-4.0, 4.0))  # 0 -> unchanged close
    moves = draw(arrays(np.float64, n, elements=step)) * vol
    close = level * np.exp(np.cumsum(moves))
    if draw(st.booleans()):  # prices on a tick grid: many exact repeats and equal highs/lows
        tick = level / 1000.0
        close = np.maximum(np.round(close / tick) * tick, tick)
    wick = st.floats(0.0, 1.0)
    gap = draw(arrays(np.float64, n, elements=st.floats(-1.0, 1.0))) * vol
    open_ = close * np.exp(gap)
    high = np.maximum(open_, close) * (1.0 + draw(arrays(np.float64, n, elements=wick)) * vol)
    low = np.minimum(open_, close) * (1.0 - draw(arrays(np.float64, n, elements=wick)) * vol / 2)
    volume = draw(arrays(np.float64, n, elements=st.integers(1, 10**9).map(float)))
    return Bars(open_, high, low, close, volume)


chunkings = st.lists(st.integers(1, 60), max_size=40)


@PROPERTY_SETTINGS
@given(bars=ohlcv(), sizes=chunkings)
def test_any_chunking_equals_batch(bars: Bars, sizes: list[int]) -> None:
    ref = compute_batch(bars)
    got, state = run_chunked(bars, sizes)
    assert state["bars"] == len(bars)
    for col in INDICATOR_COLUMNS:
        assert_same(got[col], ref[col], col)


@settings(max_examples=25, deadline=None)
@given(bars=ohlcv(max_len=260))
def test_one_bar_at_a_time_equals_batch(bars: Bars) -> None:
    ref = compute_batch(bars)
    got, _ = run_chunked(bars, [1] * len(bars))
    for col in INDICATOR_COLUMNS:
        assert_same(got[col], ref[col], col)


@settings(max_examples=25, deadline=None)
@given(bars=ohlcv(max_len=40), sizes=chunkings)
def test_shorter_than_warm_up(bars: Bars, sizes: list[int]) -> None:
    """Histories shorter than MACD's or SMA-200's warm-up: all NaN where TA-Lib has NaN."""
    ref = compute_batch(bars)
    got, _ = run_chunked(bars, sizes)
    for col in INDICATOR_COLUMNS:
        assert_same(got[col], ref[col], col)
    assert np.isnan(got["sma_200"]).all()


def test_long_history_with_bbands_rebuilds() -> None:
    """> 32 x 20 bars so the Bollinger variance goes through its periodic re-centring."""
    rng = np.random.default_rng(21)
    n = 2600
    close = 800 * np.exp(np.cumsum(rng.normal(0, 0.015, n)))
    close[1000:1300] = close[999]  # long flat stretch: variance exactly 0, then recovers
    bars = Bars(close * 1.002, close * 1.01, close * 0.99, close, rng.integers(1, 1e7, n) * 1.0)
    ref = compute_batch(bars)
    for sizes in ([21] * 200, [250] * 20, [1000, 1, 1, 599]):
        got, _ = run_chunked(bars, sizes)
        for col in INDICATOR_COLUMNS:
            assert_same(got[col], ref[col], col)


def test_state_size_is_bounded() -> None:
    """No growing history: the state of 10 bars and of 3,000 bars has the same shape."""
    rng = np.random.default_rng(2)
    close = 20 * np.exp(np.cumsum(rng.normal(0, 0.02, 3000)))
    bars = Bars(close, close * 1.01, close * 0.99, close, np.full(3000, 5.0))
    _, small = compute_incremental(bars[:10], None)
    _, large = compute_incremental(bars, None)
    small_vectors, large_vectors = state_vectors(small), state_vectors(large)
    assert {k: len(v) for k, v in small_vectors.items()} == {
        k: len(v) for k, v in large_vectors.items()
    }
    total = sum(len(v) for v in large_vectors.values())
    assert total < 400  # the SMA-200 window dominates
    assert len(small["values"]) == len(large["values"]) == 8 * total
    assert len(msgspec.msgpack.encode(large)) < 3_300


def test_resume_in_another_process(tmp_path: Path) -> None:
    """State saved as msgpack here, resumed by a fresh interpreter, gives the batch numbers."""
    rng = np.random.default_rng(4)
    close = 150 * np.exp(np.cumsum(rng.normal(0, 0.02, 400)))
    cols = {
        "open": close * 1.003,
        "high": close * 1.02,
        "low": close * 0.98,
        "close": close,
        "volume": rng.integers(1, 1e6, 400) * 1.0,
    }
    bars = Bars(**cols)
    _, state = compute_incremental(bars[:250], None)
    (tmp_path / "state.bin").write_bytes(msgspec.msgpack.encode(state))
    np.savez(tmp_path / "bars.npz", **cols)
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        import msgspec
        import numpy as np
        from finpipe_core.indicators import Bars, compute_incremental
        d = Path(sys.argv[1])
        cols = {k: v[250:] for k, v in np.load(d / "bars.npz").items()}
        state = msgspec.msgpack.decode((d / "state.bin").read_bytes())
        out, new = compute_incremental(Bars(**cols), state)
        np.savez(d / "out.npz", **out)
        (d / "new.bin").write_bytes(msgspec.msgpack.encode(new))
        """
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=300)
    resumed = np.load(tmp_path / "out.npz")
    ref = compute_batch(bars)
    for col in INDICATOR_COLUMNS:
        assert_same(resumed[col], ref[col][250:], col)
    _, here = compute_incremental(bars[250:], state)
    assert msgspec.msgpack.decode((tmp_path / "new.bin").read_bytes()) == here


def test_pure_python_fallback_gives_the_same_numbers() -> None:
    """Without the JIT (no numba, or NUMBA_DISABLE_JIT=1) the kernels run as plain Python."""
    script = textwrap.dedent(
        """
        import msgspec
        import numpy as np
        from finpipe_core.indicators import (
            INDICATOR_COLUMNS,
            Bars,
            compute_batch,
            compute_incremental,
        )
        from finpipe_core.indicators import _kernels
        assert not _kernels.HAVE_JIT
        rng = np.random.default_rng(8)
        n = 240
        c = 30 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
        b = Bars(c * 1.004, c * 1.02, c * 0.98, c, rng.integers(1, 10**6, n) * 1.0)
        ref = compute_batch(b)
        state, parts = None, []
        for i in range(0, n, 37):
            out, state = compute_incremental(b[i : i + 37], state)
            state = msgspec.msgpack.decode(msgspec.msgpack.encode(state))
            parts.append(out)
        for col in INDICATOR_COLUMNS:
            got = np.concatenate([p[col] for p in parts])
            assert np.array_equal(np.isnan(got), np.isnan(ref[col])), col
            ok = ~np.isnan(ref[col])
            np.testing.assert_allclose(got[ok], ref[col][ok], rtol=1e-9, atol=1e-9)
        print("ok")
        """
    )
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    res = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
