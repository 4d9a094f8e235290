#!/usr/bin/env python3
"""Compile the indicator engine's numba kernels into NUMBA_CACHE_DIR (the image build runs it).

numba compiles a ``cache=True`` kernel the first time it is called with a given signature and
then loads it from its cache directory. Running one incremental computation here calls every
kernel with the signatures the processor uses, so a new pod loads machine code instead of
spending tens of seconds in LLVM. Set NUMBA_CPU_NAME=generic for a cache that any x86-64 node
can load (a cache entry is keyed by the CPU it was compiled for).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main() -> int:
    cache = os.environ.get("NUMBA_CACHE_DIR")
    if not cache:
        print("compile_numba_cache: NUMBA_CACHE_DIR is not set", file=sys.stderr)
        return 2
    import numpy as np

    from finpipe_core.indicators import Bars, compute_incremental

    start = time.perf_counter()
    sessions = 400
    close = 100.0 + np.cumsum(np.sin(np.arange(sessions)) + 0.1)
    bars = Bars(
        open=close, high=close + 1.0, low=close - 1.0, close=close, volume=np.full(sessions, 1e6)
    )
    compute_incremental(bars, None)
    files = [p for p in Path(cache).rglob("*") if p.suffix in (".nbi", ".nbc")]
    if not files:
        print(f"compile_numba_cache: nothing cached under {cache}", file=sys.stderr)
        return 1
    print(
        f"compile_numba_cache: {len(files)} files in {cache} ({time.perf_counter() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
