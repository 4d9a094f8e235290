"""The daily update's per-message parts, this checkout against an earlier commit, in one run.

The synthetic source's one-day and 20-year fetches, and ``pack_rows`` for a one-row message
and a 2,500-row one, timed interleaved (old, new, old, new ...) so a busy machine slows both
alike; ``pack_rows`` of both versions must give the same bytes.

    .venv/bin/python benchmarks/bench_daily_parts.py --base f6a490a
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SOURCE = "workers/sources/synthetic.py"
BULK = "finpipe_core/db/bulk.py"


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def at_commit(commit: str, path: str, directory: Path) -> Path:
    out = directory / f"{commit}-{Path(path).name}"
    out.write_bytes(subprocess.check_output(["git", "-C", str(ROOT), "show", f"{commit}:{path}"]))
    return out


def per_call(fn, calls: int) -> float:
    t = time.perf_counter()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - t) / calls


DAY = dt.date(2014, 3, 27)
DATES = [dt.date(2000, 1, 3) + dt.timedelta(days=i) for i in range(2500)]


def measure(tag: str, source_module: ModuleType, bulk: ModuleType) -> str:
    """One version's figures; ``tag`` keeps symbols unseen by any cache."""
    src = source_module.SyntheticSource()
    one = [np.random.rand(1) for _ in range(20)]
    many = [np.random.rand(2500) for _ in range(20)]
    day_us = per_call(lambda i: src.fetch(f"M{tag}{i:05d}", DAY, DAY), 2000) * 1e6
    first, last = dt.date(2005, 1, 1), dt.date(2024, 12, 31)
    years_ms = per_call(lambda i: src.fetch(f"Y{tag}{i:05d}", first, last), 50) * 1e3
    pack_one = per_call(lambda i: bulk.pack_rows("D00001", [DAY], one), 3000) * 1e6
    pack_many = per_call(lambda i: bulk.pack_rows("D00001", DATES, many), 50) * 1e3
    return (
        f"synthetic fetch one day {day_us:.0f} us, 20 years {years_ms:.2f} ms; "
        f"pack_rows 1 row {pack_one:.1f} us, 2,500 rows {pack_many:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="f6a490a", help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        versions = {
            "old": (
                load("old_source", at_commit(args.base, SOURCE, Path(tmp))),
                load("old_bulk", at_commit(args.base, BULK, Path(tmp))),
            ),
            "new": (load("new_source", ROOT / SOURCE), load("new_bulk", ROOT / BULK)),
        }
    for r in range(args.rounds):
        for name, (source_module, bulk) in versions.items():
            print(f"round {r} {name}: " + measure(f"{r}{name}", source_module, bulk))
    for n in (1, 7, 2500):
        cols = [np.random.rand(n) * 1e3 for _ in range(20)]
        cols[3][0] = np.nan
        assert versions["old"][1].pack_rows("ABC", DATES[:n], cols) == versions["new"][1].pack_rows(
            "ABC", DATES[:n], cols
        )
    print("pack_rows: the same bytes in both versions")


if __name__ == "__main__":
    main()
