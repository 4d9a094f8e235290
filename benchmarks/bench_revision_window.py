"""What the revision window costs the processor, side by side in one run.

The daily schedule now also re-requests the last 5 sessions of every symbol. This measures,
on the real PostgreSQL of the local stack (a scratch database) and the processor's own
``BatchWriter``, for SYMBOLS synthetic symbols with a year of stored history, rounds of:

- ``daily``: the new session of every symbol (the append the pipeline always did);
- ``correction, unchanged``: the 5-session window of every symbol, equal to what is stored
  (compared, skipped: no row written);
- ``correction, 5% revised``: the same window with one revised volume in 5% of the symbols
  (logged in ``revisions``, those symbols' histories recomputed).

Rounds alternate so a busy machine slows all alike; medians are printed with their ratio to
the daily append.

    .venv/bin/python benchmarks/bench_revision_window.py --symbols 500 --rounds 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
import uuid

from psycopg2 import sql

from finpipe.stack.postgres import PostgresCluster
from finpipe_core import contracts
from finpipe_core.calendar import trading_days
from finpipe_core.db import connect
from finpipe_core.db.migrate import apply_migrations
from finpipe_core.settings import get_settings
from workers.agent.main import chunk_messages
from workers.processor.batch import BatchWriter, InputMessage
from workers.sources.base import RawBars
from workers.sources.synthetic import SyntheticSource

WINDOW = 5


class Feed:
    def __init__(self) -> None:
        self.offset = 0

    def messages(self, bars: list[RawBars], tag: str) -> list[InputMessage]:
        out = []
        for b in bars:
            task = contracts.FetchTask(
                schema_version=1,
                symbol=b.symbol,
                start=b.dates[0],
                end=b.dates[-1],
                task_id=contracts.make_task_id(b.symbol, b.dates[0], b.dates[-1], tag),
            )
            for m in chunk_messages(task, b, 1000):
                out.append(
                    InputMessage("data", 0, self.offset, b.symbol.encode(), contracts.encode(m))
                )
                self.offset += 1
        return out


def timed(conn, feed: Feed, bars: list[RawBars], tag: str) -> float:
    messages = feed.messages(bars, tag)
    started = time.perf_counter()
    BatchWriter(conn, "bench", 10_000_000).apply(messages)
    conn.commit()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = get_settings()
    db = f"finpipe_bench_{uuid.uuid4().hex[:8]}"
    admin = PostgresCluster(base).admin_connection()
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(db), sql.Identifier(base.pg_user)
            )
        )
    try:
        settings = base.model_copy(update={"pg_database": db})
        apply_migrations(settings)
        conn = connect(settings)
        symbols = [f"RW{i:04d}" for i in range(args.symbols)]
        days = trading_days(dt.date(2019, 1, 1), dt.date(2021, 12, 31))
        history = 252
        src = SyntheticSource()
        full = {s: src.fetch(s, days[0], days[-1]) for s in symbols}
        feed = Feed()
        timed(conn, feed, [full[s].slice(0, history) for s in symbols], "backfill")
        results: dict[str, list[float]] = {"daily": [], "unchanged": [], "revised": []}
        stored = history
        for r in range(args.rounds):
            results["daily"].append(
                timed(conn, feed, [full[s].slice(stored, stored + 1) for s in symbols], "d")
            )
            stored += 1
            window = [full[s].slice(stored - WINDOW, stored) for s in symbols]
            results["unchanged"].append(timed(conn, feed, window, f"c{r}"))
            revised = []
            for i, b in enumerate(window):
                b = RawBars(
                    b.symbol,
                    list(b.dates),
                    *(
                        getattr(b, c).copy()
                        for c in (
                            "open",
                            "high",
                            "low",
                            "close",
                            "adj_close",
                            "volume",
                            "dividends",
                            "splits",
                        )
                    ),
                    source=b.source,
                )
                if i % 20 == 0:
                    b.volume[-3] += 100 * (r + 1)
                revised.append(b)
            results["revised"].append(timed(conn, feed, revised, f"r{r}"))
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM revisions")
            logged = cur.fetchone()[0]
        conn.close()
        daily = statistics.median(results["daily"])
        print(
            f"{args.symbols} symbols, {history}+ stored sessions each, {args.rounds} rounds; "
            f"{logged} revisions logged"
        )
        for name, label in (
            ("daily", "daily append (1 session)"),
            ("unchanged", f"correction, unchanged ({WINDOW} sessions)"),
            ("revised", f"correction, 5% revised ({WINDOW} sessions)"),
        ):
            m = statistics.median(results[name])
            print(
                f"  {label:<40} median {m * 1000:8.1f} ms  "
                f"{m / args.symbols * 1e6:7.0f} us/symbol  {m / daily:5.2f}x daily "
                f"(runs: {', '.join(f'{x * 1000:.0f}' for x in results[name])} ms)"
            )
    finally:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
            )
        admin.close()


if __name__ == "__main__":
    main()
