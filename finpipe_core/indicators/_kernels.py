"""Per-bar kernels of the incremental engine, compiled with numba.

Why loops and not numpy expressions: the incremental path processes small chunks (a month of
daily bars is ~21 bars), where the fixed cost of each numpy call (~1 µs) dominates, and every
indicator here is a recursion (EMA, Wilder smoothing) or a running sum that TA-Lib evaluates bar
by bar. A compiled loop that performs TA-Lib's arithmetic in TA-Lib's order gives the same
float64 results as one TA-Lib call over the whole history, whatever the chunking (bit-for-bit
against the pinned wheel in every test so far; the contract and the tests allow 1e-9), at a few
tens of nanoseconds per bar. ``run_plan`` drives all of them in one compiled call.

Every kernel has the same signature so the engine can drive them uniformly::

    kernel(open, high, low, close, volume, n0, params, state, out) -> None

- ``n0``: global index (bars already consumed) of the chunk's first bar. Warm-up phases are
  decided from it, so states need no phase flags.
- ``params``: float64 parameters of the indicator (periods, deviations).
- ``state``: float64 vector, updated in place (a view into the engine's flat state vector).
- ``out``: float64 array ``(n_columns, len(chunk))`` filled with values or NaN during warm-up.

Rolling windows are ring buffers indexed by ``global index % window``, so they hold at most the
window and need no stored position.

The reference is the TA-Lib C library inside the pinned ``ta-lib`` wheel (C 0.8.1), whose
arithmetic (matched against the compiled library, not the classic sources) differs from TA-Lib
0.4 in places that matter for bit-exactness and for flat prices: EMA-type updates use a fused
multiply-add, RSI multiplies by 1/n, ATR is ``fma((n-1)/n, atr, tr * (1 - (n-1)/n))``,
the Bollinger variance uses shifted sums that are re-centred on the window mean when
cancellation threatens, and zero tests are ``> 0`` or 1e-14 (relative for STOCH) instead of
1e-8. Each kernel documents the recurrence it reproduces; the tests compare against ``talib``
directly, so a TA-Lib upgrade that changes them shows up there.

Without numba (or with ``NUMBA_DISABLE_JIT=1``) the same functions run as plain Python: same
numbers, ~100x slower.
"""

from __future__ import annotations

import math

import numpy as np

try:
    import numba

    HAVE_JIT = not numba.config.DISABLE_JIT
except ImportError:  # pragma: no cover - numba is a pinned dependency
    HAVE_JIT = False

if HAVE_JIT:
    from numba.core import types as _nbtypes
    from numba.extending import intrinsic as _intrinsic

    def _jit(func):  # type: ignore[no-untyped-def]
        return numba.njit(cache=True, nogil=True)(func)

    @_intrinsic
    def fma(typingctx, a, b, c):  # type: ignore[no-untyped-def]
        """a * b + c with a single rounding (LLVM's llvm.fma: exact on any CPU)."""
        sig = _nbtypes.float64(_nbtypes.float64, _nbtypes.float64, _nbtypes.float64)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            return builder.fma(*args)

        return sig, codegen

else:
    from fractions import Fraction

    def _jit(func):  # type: ignore[no-untyped-def]
        return func

    def fma(a: float, b: float, c: float) -> float:
        """a * b + c with a single rounding (exact rational arithmetic, correctly rounded)."""
        return float(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


_EPS = 1e-14  # TA-Lib's TA_EPSILON (zero tests of ADX and STOCH)
_INF = math.inf


PRICE_MIN = 1e-100
PRICE_MAX = 1e100
VOLUME_MAX = 1e100
"""Accepted magnitudes. The widest intermediates of the kernels (and of TA-Lib, which does the
same arithmetic) are the Bollinger sums of squared deviations (20 x price**2, compared after
x 1e6) and the Stochastic ratio (close - lowest) / range with range >= 1e-14 x highest (up to
1e16 x 100 x PRICE_MAX / PRICE_MIN). Both stay below float64's 1.8e308 with margins of 1e50
or more inside these limits; OBV sums volumes, so 1e100 leaves room for any history length."""


@_jit
def first_invalid(o, h, l, c, v):  # noqa: E741
    """(field, index) of the first bad value, (-1, -1) if all good. Field order: o, h, l, c, v.

    A price must lie in [PRICE_MIN, PRICE_MAX], a volume in [0, VOLUME_MAX]; NaN fails every
    comparison, so it is caught by the same test.
    """
    n = c.shape[0]
    for f in range(4):
        a = o if f == 0 else h if f == 1 else l if f == 2 else c
        for i in range(n):
            x = a[i]
            if not (x >= PRICE_MIN and x <= PRICE_MAX):
                return f, i
    for i in range(n):
        x = v[i]
        if not (x >= 0.0 and x <= VOLUME_MAX):
            return 4, i
    return -1, -1


@_jit
def rsi_kernel(o, h, l, c, v, n0, p, st, out):  # noqa: E741
    """RSI with Wilder smoothing, seeded with the mean gain/loss of the first n changes.

    gain = (gain*(n-1) + up) * (1/n), loss likewise; RSI = 100 * gain / (gain + loss), 0 when
    gain + loss is 0 (flat prices). state: [previous close, gain, loss] (sums while seeding).
    """
    n = int(p[0])
    r = 1.0 / n
    nm1 = float(n - 1)
    prev = st[0]
    gain = st[1]
    loss = st[2]
    res = out[0]
    for i in range(c.shape[0]):
        t = n0 + i
        x = c[i]
        if t == 0:
            prev = x
            res[i] = np.nan
            continue
        d = x - prev
        prev = x
        up = d if d > 0.0 else 0.0
        if t <= n:
            gain += up
            loss += up - d
            if t < n:
                res[i] = np.nan
                continue
            gain *= r
            loss *= r
        else:
            gain = (gain * nm1 + up) * r
            loss = ((up - d) + loss * nm1) * r
        s = loss + gain
        res[i] = (gain / s) * 100.0 if s > 0.0 else 0.0
    st[0] = prev
    st[1] = gain
    st[2] = loss


@_jit
def macd_kernel(o, h, l, c, v, n0, p, st, out):  # noqa: E741
    """MACD as TA-Lib computes it: both EMAs' seed windows end on bar slow-1.

    The fast EMA therefore starts accumulating at bar slow-fast, not at bar 0; the signal EMA
    is seeded with the mean of the first ``signal`` MACD values; outputs start at
    slow + signal - 2 (33 for 12/26/9) although MACD itself is known from bar slow-1.
    EMA step: e = fma(x - e, k, e), k = 2/(period+1).
    state: [fast EMA, slow EMA, signal EMA] (partial sums while seeding).
    """
    nf = int(p[0])
    ns = int(p[1])
    ng = int(p[2])
    kf = 2.0 / (nf + 1)
    ks = 2.0 / (ns + 1)
    kg = 2.0 / (ng + 1)
    seed_t = ns - 1
    fast_start = ns - nf
    sig_t = seed_t + ng - 1
    fast = st[0]
    slow = st[1]
    sig = st[2]
    r_macd = out[0]
    r_sig = out[1]
    r_hist = out[2]
    for i in range(c.shape[0]):
        t = n0 + i
        x = c[i]
        if t < seed_t:
            slow += x
            if t >= fast_start:
                fast += x
            r_macd[i] = np.nan
            r_sig[i] = np.nan
            r_hist[i] = np.nan
            continue
        if t == seed_t:
            slow = (slow + x) / ns
            fast = (fast + x) / nf
        else:
            fast = fma(x - fast, kf, fast)
            slow = fma(x - slow, ks, slow)
        m = fast - slow
        if t < sig_t:
            sig += m
            r_macd[i] = np.nan
            r_sig[i] = np.nan
            r_hist[i] = np.nan
            continue
        sig = (sig + m) / ng if t == sig_t else fma(m - sig, kg, sig)
        r_macd[i] = m
        r_sig[i] = sig
        r_hist[i] = m - sig
    st[0] = fast
    st[1] = slow
    st[2] = sig


@_jit
def sma_kernel(o, h, l, c, v, n0, p, st, out):  # noqa: E741
    """SMA with TA-Lib's running total (add the new close, emit total/n, subtract the oldest).

    state: [running total, ring of the last n-1 closes].
    """
    n = int(p[0])
    w = n - 1
    tot = st[0]
    ring = st[1:]
    res = out[0]
    for i in range(c.shape[0]):
        t = n0 + i
        x = c[i]
        pos = t % w
        tot += x
        if t >= w:
            res[i] = tot / n
            tot -= ring[pos]
        else:
            res[i] = np.nan
        ring[pos] = x
    st[0] = tot


@_jit
def ema_kernel(o, h, l, c, v, n0, p, st, out):  # noqa: E741
    """EMA seeded with the SMA of the first n closes, then e = fma(x - e, 2/(n+1), e).

    state: [EMA] (partial sum while seeding).
    """
    n = int(p[0])
    k = 2.0 / (n + 1)
    e = st[0]
    res = out[0]
    for i in range(c.shape[0]):
        t = n0 + i
        x = c[i]
        if t < n - 1:
            e += x
            res[i] = np.nan
            continue
        e = (e + x) / n if t == n - 1 else fma(x - e, k, e)
        res[i] = e
    st[0] = e


@_jit
def _recenter(ring, x, t, w, inv):  # type: ignore[no-untyped-def]
    """Shift K = window mean and the window's sums of (x-K), (x-K)^2, oldest value first."""
    k = 0.0
    for j in range(w):
        k += ring[(t + j) % w]
    k += x
    k *= inv
    s1 = 0.0
    s2 = 0.0
    for j in range(w):
        d = ring[(t + j) % w] - k
        s1 += d
        s2 += d * d
    d = x - k
    s1 += d
    s2 += d * d
    return k, s1, s2


@_jit
def bbands_kernel(o, h, l, c, v, n0, p, st, out):  # noqa: E741
    """Bollinger bands: SMA middle band +- dev * population stddev over the same window.

    The variance uses sums of (x - K) and (x - K)^2 for a shift K (first close, later the
    window mean), var = S2/n - (S1/n)^2. The sums are rebuilt around the current window mean
    when the variance is small against S2 (1e-6), when the leaving value dominates (1e6), or
    every 32n bars; after a rebuild a variance below 1e-12 * S2/n counts as 0.
    state: [running total, K, S1, S2, bars until forced rebuild, ring of the last n-1 closes].
    """
    n = int(p[0])
    up = p[1]
    dn = p[2]
    w = n - 1
    inv = 1.0 / n
    period = 32 * n
    tot = st[0]
    k = st[1]
    s1 = st[2]
    s2 = st[3]
    left = int(st[4])
    ring = st[5:]
    r_up = out[0]
    r_mid = out[1]
    r_dn = out[2]
    for i in range(c.shape[0]):
        t = n0 + i
        x = c[i]
        pos = t % w
        if t == 0:
            k = x
            left = period
        tot += x
        d = x - k
        s1 += d
        s2 += d * d
        if t < w:
            ring[pos] = x
            r_up[i] = np.nan
            r_mid[i] = np.nan
            r_dn[i] = np.nan
            continue
        m1 = inv * s1
        var = inv * s2 - m1 * m1
        mid = tot / n
        old = ring[pos]
        tot -= old
        dt = old - k
        dt2 = dt * dt
        s2 -= dt2
        left -= 1
        if (inv * s2) * 1e-6 > var or dt2 > s2 * 1e6 or left == 0:
            k, s1, s2 = _recenter(ring, x, t, w, inv)
            m1 = inv * s1
            q = inv * s2
            var = q - m1 * m1
            if q * 1e-12 > var:
                var = 0.0
            dt = old - k
            s1 -= dt
            s2 -= dt * dt
            left = period
        else:
            s1 -= dt
        sd = math.sqrt(var) if var != 0.0 else 0.0
        r_up[i] = mid + sd * up
        r_mid[i] = mid
        r_dn[i] = mid - sd * dn
        ring[pos] = x
    st[0] = tot
    st[1] = k
    st[2] = s1
    st[3] = s2
    st[4] = left


@_jit
def atr_kernel(o, h, l, c, v, n0, p, st, out):  # noqa: E741
    """ATR: seeded with the mean of TR[1..n], then atr = fma(c, atr, tr * (1 - c)), c=(n-1)/n.

    state: [previous close, ATR] (TR sum while seeding).
    """
    n = int(p[0])
    cf = float(n - 1) / n
    af = 1.0 - cf
    pc = st[0]
    a = st[1]
    res = out[0]
    for i in range(c.shape[0]):
        t = n0 + i
        if t == 0:
            pc = c[i]
            res[i] = np.nan
            continue
        hh = h[i]
        ll = l[i]
        tr = hh - ll
        d = abs(pc - hh)
        if d > tr:
            tr = d
        d = abs(ll - pc)
        if d > tr:
            tr = d
        pc = c[i]
        if t < n:
            a += tr
            res[i] = np.nan
            continue
        a = (a + tr) / n if t == n else fma(cf, a, tr * af)
        res[i] = a
    st[0] = pc
    st[1] = a


@_jit
def obv_kernel(o, h, l, c, v, n0, p, st, out):  # noqa: E741
    """On-balance volume; starts at the first bar's volume. state: [previous close, OBV]."""
    pc = st[0]
    acc = st[1]
    res = out[0]
    for i in range(c.shape[0]):
        x = c[i]
        if n0 + i == 0:
            acc = v[i]
        elif x > pc:
            acc += v[i]
        elif x < pc:
            acc -= v[i]
        pc = x
        res[i] = acc
    st[0] = pc
    st[1] = acc


@_jit
def stoch_kernel(o, h, l, c, v, n0, p, st, out):  # noqa: E741
    """Slow stochastic: fast %K over nk bars, SMA(nsk) -> slow %K, SMA(nsd) -> slow %D.

    fast %K = (close - lowest) / (highest - lowest) * 100, or 0 when the range is within 1e-14
    of |highest| + |lowest| (flat window). Each SMA keeps TA-Lib's running total, started
    where its input series starts.
    state: [total %K, total %D, ring highs (nk-1), ring lows (nk-1), ring fast %K (nsk-1),
    ring slow %K (nsd-1)].
    """
    nk = int(p[0])
    nsk = int(p[1])
    nsd = int(p[2])
    wk = nk - 1
    wsk = nsk - 1
    wsd = nsd - 1
    tot_k = st[0]
    tot_d = st[1]
    hi_r = st[2 : 2 + wk]
    lo_r = st[2 + wk : 2 + 2 * wk]
    fk_r = st[2 + 2 * wk : 2 + 2 * wk + wsk]
    sk_r = st[2 + 2 * wk + wsk : 2 + 2 * wk + wsk + wsd]
    r_k = out[0]
    r_d = out[1]
    for i in range(c.shape[0]):
        t = n0 + i
        hh = h[i]
        ll = l[i]
        highest = hh
        lowest = ll
        if t >= wk:
            for j in range(wk):
                if hi_r[j] > highest:
                    highest = hi_r[j]
                if lo_r[j] < lowest:
                    lowest = lo_r[j]
        pos = t % wk
        hi_r[pos] = hh
        lo_r[pos] = ll
        r_k[i] = np.nan
        r_d[i] = np.nan
        if t < wk:
            continue
        diff = highest - lowest
        if (abs(highest) + abs(lowest)) * _EPS < abs(diff):
            fk = ((c[i] - lowest) / diff) * 100.0
        else:
            fk = 0.0
        u = t - wk
        tot_k += fk
        pos = u % wsk
        if u < wsk:
            fk_r[pos] = fk
            continue
        sk = tot_k / nsk
        tot_k -= fk_r[pos]
        fk_r[pos] = fk
        u -= wsk
        tot_d += sk
        pos = u % wsd
        if u < wsd:
            sk_r[pos] = sk
            continue
        sd = tot_d / nsd
        tot_d -= sk_r[pos]
        sk_r[pos] = sk
        r_k[i] = sk
        r_d[i] = sd
    st[0] = tot_k
    st[1] = tot_d


@_jit
def adx_kernel(o, h, l, c, v, n0, p, st, out):  # noqa: E741
    """ADX as TA-Lib computes it.

    +DM/-DM/TR are summed over bars 1..n-1, then Wilder-smoothed as sums (s - s/n + x) from bar
    n on; DX from bar n; ADX seeded with sum(DX[n..2n-1])/n at bar 2n-1, then
    (adx*(n-1) + dx)/n. A DX is skipped (ADX held) when the smoothed TR is 0 or +DI + -DI is
    within 1e-14 of 0 (flat prices).
    state: [prev high, prev low, prev close, -DM, +DM, TR, ADX (DX sum while seeding)].
    """
    n = int(p[0])
    ph = st[0]
    pl = st[1]
    pc = st[2]
    mdm = st[3]
    pdm = st[4]
    trs = st[5]
    adx = st[6]
    res = out[0]
    last_seed = 2 * n - 1
    for i in range(c.shape[0]):
        t = n0 + i
        hh = h[i]
        ll = l[i]
        if t == 0:
            ph = hh
            pl = ll
            pc = c[i]
            res[i] = np.nan
            continue
        dp = hh - ph
        dm = pl - ll
        ph = hh
        pl = ll
        if t >= n:
            mdm -= mdm / n
            pdm -= pdm / n
        if dm > 0.0 and dp < dm:
            mdm += dm
        elif dp > 0.0 and dp > dm:
            pdm += dp
        tr = hh - ll
        d = abs(hh - pc)
        if d > tr:
            tr = d
        d = abs(ll - pc)
        if d > tr:
            tr = d
        if t >= n:
            trs = trs - (trs / n) + tr
        else:
            trs += tr
        pc = c[i]
        if t < n:
            res[i] = np.nan
            continue
        ok = False
        dx = 0.0
        if trs > 0.0:
            mdi = (mdm / trs) * 100.0
            pdi = (pdm / trs) * 100.0
            s = mdi + pdi
            if not (-_EPS < s < _EPS):
                dx = (abs(mdi - pdi) / s) * 100.0
                ok = True
        if t < last_seed:
            if ok:
                adx += dx
            res[i] = np.nan
            continue
        if t == last_seed:
            if ok:
                adx += dx
            adx = adx / n
        elif ok:
            adx = ((adx * (n - 1)) + dx) / n
        res[i] = adx
    st[0] = ph
    st[1] = pl
    st[2] = pc
    st[3] = mdm
    st[4] = pdm
    st[5] = trs
    st[6] = adx


KERNELS = (
    rsi_kernel,
    macd_kernel,
    sma_kernel,
    ema_kernel,
    bbands_kernel,
    atr_kernel,
    obv_kernel,
    stoch_kernel,
    adx_kernel,
)
"""Kernel id -> kernel, the table ``run_plan`` dispatches on (a new kernel gets a branch there)."""

MAX_PARAMS = 3

PLAN_KIND, PLAN_S0, PLAN_S1, PLAN_R0, PLAN_R1 = range(5)
"""Columns of the int64 plan array ``run_plan`` reads: kernel id, state slice, output rows."""


@_jit
def _all_finite(a):  # type: ignore[no-untyped-def]
    for i in range(a.shape[0]):
        x = a[i]
        if not (x > -_INF and x < _INF):
            return False
    return True


@_jit
def run_plan(o, h, l, c, v, n0, plan, params, first_valid, flat, out):  # noqa: E741
    """Run every registry entry over one chunk in a single compiled call, then check it.

    One call instead of one per indicator because the fixed cost of entering compiled code
    (~2 µs each here) would otherwise dominate a one-bar update.

    Returns ``(-1, -1)`` when the resulting state is finite and every output from its column's
    first valid bar (``first_valid``, TA-Lib's lookback) on is finite; ``(-2, -1)`` when the
    state passed in is not finite (nothing computed); otherwise ``(j, t)``: plan entry ``j``
    overflowed, first seen at global bar ``t`` (-1 when only its state shows it). The caller
    must then discard ``flat`` and ``out``: a state holding NaN/inf can never be resumed.
    """
    if not _all_finite(flat):
        return -2, -1
    k = plan.shape[0]
    for j in range(k):
        kind = plan[j, PLAN_KIND]
        p = params[j]
        st = flat[plan[j, PLAN_S0] : plan[j, PLAN_S1]]
        res = out[plan[j, PLAN_R0] : plan[j, PLAN_R1]]
        if kind == 0:
            rsi_kernel(o, h, l, c, v, n0, p, st, res)
        elif kind == 1:
            macd_kernel(o, h, l, c, v, n0, p, st, res)
        elif kind == 2:
            sma_kernel(o, h, l, c, v, n0, p, st, res)
        elif kind == 3:
            ema_kernel(o, h, l, c, v, n0, p, st, res)
        elif kind == 4:
            bbands_kernel(o, h, l, c, v, n0, p, st, res)
        elif kind == 5:
            atr_kernel(o, h, l, c, v, n0, p, st, res)
        elif kind == 6:
            obv_kernel(o, h, l, c, v, n0, p, st, res)
        elif kind == 7:
            stoch_kernel(o, h, l, c, v, n0, p, st, res)
        elif kind == 8:
            adx_kernel(o, h, l, c, v, n0, p, st, res)
        else:
            raise ValueError("unknown kernel id")
    m = c.shape[0]
    for j in range(k):
        for r in range(plan[j, PLAN_R0], plan[j, PLAN_R1]):
            start = first_valid[r] - n0
            if start < 0:
                start = 0
            row = out[r]
            for i in range(start, m):
                x = row[i]
                if not (x > -_INF and x < _INF):
                    return j, n0 + i
        if not _all_finite(flat[plan[j, PLAN_S0] : plan[j, PLAN_S1]]):
            return j, -1
    return -1, -1
