"""``finpipe demo`` (``make demo``): the main job, end to end, offline, on real prices.

1. Start Kafka and PostgreSQL, one agent and one processor (sample source: bokeh_sampledata).
2. Materialise ``stock_tasks`` for the sample's whole range through Dagster's CLI, as a user
   would (``dagster asset materialize --partition-range``), recorded in the local Dagster
   instance (so the UI of ``make dev`` shows the run).
3. Show progress (bars stored against bars expected) until the completion sensor's view
   (``evaluate_completion``) reports every trading day of the range finished.
4. Print a summary table, write it as CSV, and draw one chart per symbol.

Running it again emits no new task (the outbox covers the range) and ends at once.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from finpipe import stack
from finpipe.stack import paths
from finpipe.stack.dagster_env import dagster_env
from finpipe.stack.local_workers import start_workers
from finpipe.stack.settings import StackSettings
from finpipe_core import tasks
from finpipe_core.calendar import trading_days
from finpipe_core.db import connection
from finpipe_core.settings import Settings
from finpipe_manager import report
from finpipe_manager.completion import finished_days

# The sample's span (bokeh_sampledata: 2000-03-01 .. 2013-03-01), both trading days.
DEMO_START = dt.date(2000, 3, 1)
DEMO_END = dt.date(2013, 3, 1)


@dataclass(frozen=True)
class DemoResult:
    tasks_emitted: int
    days_complete: int
    days_expected: int
    summaries: list[report.SymbolSummary]
    charts: list[Path]
    summary_csv: Path
    seconds: float


def _count_tasks(settings: Settings) -> int:
    with connection(settings) as conn, conn.cursor() as cur:
        return tasks.count(cur)


def _nothing_to_request(settings: Settings) -> bool:
    """True when every sample symbol is active and all its demo days are covered by tasks."""
    from finpipe_manager.outbox import uncovered_tasks
    from finpipe_manager.universe import active_symbols, load_universe

    wanted = {e.symbol for e in load_universe(settings.universe)}
    with connection(settings) as conn:
        if set(active_symbols(conn)) != wanted:
            return False  # the run syncs the universe first
        return not uncovered_tasks(
            conn, sorted(wanted), DEMO_START, DEMO_END, max_sessions=settings.max_sessions_per_task
        )


def materialize_range(settings: Settings, start: dt.date, end: dt.date, console: Console) -> None:
    """``dagster asset materialize`` of stock_tasks for ``start...end`` (one run)."""
    command = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "finpipe_dagster.definitions",
        "--select",
        "stock_tasks",
        "--partition-range",
        f"{start.isoformat()}...{end.isoformat()}",
    ]
    console.print(
        f"[bold]dagster[/bold] asset materialize stock_tasks --partition-range {start}...{end}"
    )
    result = subprocess.run(
        command, cwd=paths.REPO_ROOT, env=dagster_env(settings), capture_output=True, text=True
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise RuntimeError(f"the Dagster run failed:\n{tail}")


def wait_until_complete(
    settings: Settings, days_expected: list[dt.date], console: Console, timeout: float = 900.0
) -> int:
    """Follow progress until the completion sensor's view has every expected day."""
    wanted = set(days_expected)
    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bars = progress.add_task("bars stored", total=max(1, report.expected_bars(settings)))
        days = progress.add_task("days complete", total=len(wanted))
        while True:
            progress.update(
                bars,
                completed=report.stored_bars(settings),
                total=max(1, report.expected_bars(settings)),
            )
            with connection(settings) as conn:
                complete = finished_days(conn, first_date=DEMO_START)
            progress.update(days, completed=len(wanted & complete))
            if wanted <= complete:
                return len(wanted)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(wanted - complete)} days still incomplete after {timeout:.0f} s; "
                    "see `finpipe status` and the worker logs under the state dir"
                )
            time.sleep(1.0)


def write_summary_csv(rows: list[report.SymbolSummary], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["symbol", "first_date", "last_date", "bars", "last_close", "rsi_14", "macd", "status"]
        )
        for r in rows:
            writer.writerow(
                [
                    r.symbol,
                    r.first_date,
                    r.last_date,
                    r.bars,
                    r.last_close,
                    r.rsi_14,
                    r.macd,
                    r.status,
                ]
            )
    return path


def summary_table(rows: list[report.SymbolSummary]) -> Table:
    table = Table(title="finpipe demo: sample universe")
    for column, justify in (
        ("symbol", "left"),
        ("date range", "left"),
        ("bars", "right"),
        ("last close", "right"),
        ("RSI 14", "right"),
        ("MACD", "right"),
        ("status", "left"),
    ):
        table.add_column(column, justify=justify)
    for r in rows:
        span = f"{r.first_date} .. {r.last_date}" if r.bars else "-"
        values = [report.format_number(v) for v in (r.last_close, r.rsi_14, r.macd)]
        table.add_row(r.symbol, span, f"{r.bars:,}", *values, r.status)
    return table


def render_charts(settings: Settings, symbols: list[str], out_dir: Path) -> list[Path]:
    """One chart per symbol, drawn in parallel: matplotlib takes seconds per 3,000-bar chart
    and the charts are independent."""
    workers = max(1, min(len(symbols), os.cpu_count() or 1))
    if workers == 1:
        return [report.render_chart(settings, s, out_dir) for s in symbols]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(report.render_chart, repeat(settings), symbols, repeat(out_dir)))


def run_demo(settings: StackSettings, out_dir: Path, console: Console) -> DemoResult:
    """The whole demo; returns what it produced (the CLI prints it, tests assert on it)."""
    started = time.monotonic()
    settings = settings.model_copy(update={"source": "sample", "universe": "sample"})
    console.print("[bold]1/4[/bold] local stack and workers")
    for change in stack.up(settings).changes:
        console.print(f"  {change}")
    new_workers = start_workers(settings, agents=1, processors=1)
    console.print(f"  workers: {', '.join(new_workers) or 'already running'}")

    console.print(f"  ({time.monotonic() - started:.0f} s)")
    console.print("[bold]2/4[/bold] Dagster backfill of the sample universe")
    if _nothing_to_request(settings):
        # Every day is covered by a task already: a run would emit nothing (the outbox
        # guarantees it), so skip Dagster's bookkeeping of 3,270 partitions.
        emitted = 0
        console.print("  tasks emitted: 0 (nothing new to fetch: the range is covered)")
    else:
        before = _count_tasks(settings)
        step = time.monotonic()
        materialize_range(settings, DEMO_START, DEMO_END, console)
        emitted = _count_tasks(settings) - before
        console.print(
            f"  tasks emitted: {emitted}, Dagster run took {time.monotonic() - step:.0f} s"
        )

    console.print(
        f"[bold]3/4[/bold] waiting for the completion sensor's view "
        f"({time.monotonic() - started:.0f} s)"
    )
    expected = trading_days(DEMO_START, DEMO_END)
    done = wait_until_complete(settings, expected, console)

    console.print(f"[bold]4/4[/bold] results ({time.monotonic() - started:.0f} s)")
    from finpipe_manager.universe import load_universe

    symbols = [e.symbol for e in load_universe("sample")]
    rows = report.symbol_summaries(settings, symbols)
    console.print(summary_table(rows))
    csv_path = write_summary_csv(rows, out_dir / "summary.csv")
    charts = render_charts(settings, [r.symbol for r in rows if r.bars], out_dir / "charts")
    return DemoResult(
        emitted, done, len(expected), rows, charts, csv_path, time.monotonic() - started
    )
