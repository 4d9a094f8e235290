"""The ``finpipe`` command: run the local stack and look inside the pipeline."""

from __future__ import annotations

import csv
import io
import logging
import sys
import time
from pathlib import Path

import psycopg2
import typer
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from rich.console import Console
from rich.table import Table

from finpipe import dev as dev_server
from finpipe import stack
from finpipe.stack import paths
from finpipe.stack.dagster_env import DAGSTER_HOME
from finpipe.stack.local_workers import start_workers, stop_workers, worker_names
from finpipe.stack.settings import StackSettings, get_stack_settings
from finpipe.stack.stack import StackDownError
from finpipe_core import contracts
from finpipe_core.db import connection
from finpipe_core.exceptions import ContractError
from finpipe_core.kafka import consumer_config, producer_config
from finpipe_core.settings import Settings, get_settings
from finpipe_manager import report
from finpipe_manager.universe import UniverseEntry, UniverseError

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="finpipe: daily bars through Kafka into PostgreSQL, orchestrated by Dagster.",
)
workers_app = typer.Typer(no_args_is_help=True, help="Run agents and processors locally.")
dlq_app = typer.Typer(no_args_is_help=True, help="Inspect and replay the dead-letter topic.")
symbols_app = typer.Typer(no_args_is_help=True, help="The symbol universe.")
app.add_typer(workers_app, name="workers")
app.add_typer(dlq_app, name="dlq")
app.add_typer(symbols_app, name="symbols")
console = Console()


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def run() -> None:
    """Entry point: errors a user can act on are printed in plain words, without a traceback."""
    try:
        app()
    except (StackDownError, ContractError, UniverseError, LookupError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
    except psycopg2.OperationalError as exc:
        s = get_settings()
        console.print(
            f"[red]error:[/red] PostgreSQL is not reachable at {s.pg_host}:{s.pg_port} "
            f"({str(exc).strip().splitlines()[0]}). Start the stack: finpipe up"
        )
        sys.exit(1)


def _require_kafka(settings: Settings) -> None:
    try:
        stack.kafka.admin_client(settings).list_topics(timeout=5)
    except KafkaException as exc:
        raise StackDownError(
            f"Kafka is not reachable at {settings.kafka_bootstrap_servers}. "
            "Start the stack: finpipe up"
        ) from exc


# --- the local stack -------------------------------------------------------------------------
@app.command()
def up() -> None:
    """Start Kafka and PostgreSQL, create topics, apply migrations (idempotent)."""
    settings = get_stack_settings()
    result = stack.up(settings)
    for change in result.changes:
        console.print(f"  {change}")
    if not result.changes:
        console.print("  already up; nothing changed")
    console.print(
        f"up in {result.total_seconds:.1f} s (Kafka ready after {result.kafka_ready_seconds:.1f} s)"
    )
    _print_services(settings)


@app.command()
def down() -> None:
    """Stop every process finpipe started (workers, Dagster, Kafka, PostgreSQL)."""
    stopped = stack.down(get_stack_settings())
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status() -> None:
    """Services, per-symbol progress and consumer lag."""
    settings = get_stack_settings()
    _print_services(settings)
    services = stack.status(settings)
    if not services["postgres"].startswith("running"):
        raise StackDownError("PostgreSQL is not running. Start the stack: finpipe up")
    rows = report.symbol_summaries(settings)
    table = Table(title="symbols")
    for column in (
        "symbol",
        "first",
        "last",
        "bars",
        "close",
        "RSI 14",
        "MACD",
        "status",
        "open tasks",
    ):
        table.add_column(column, justify="right" if column not in ("symbol", "status") else "left")
    for r in rows:
        values = [report.format_number(v) for v in (r.last_close, r.rsi_14, r.macd)]
        table.add_row(
            r.symbol,
            str(r.first_date or "-"),
            str(r.last_date or "-"),
            f"{r.bars:,}",
            *values,
            r.status,
            str(r.tasks_open),
        )
    console.print(table)
    _print_data_trust(settings, [r.symbol for r in rows])
    if services["kafka"].startswith("running"):
        for group, topic in (
            (settings.agent_group, settings.tasks_topic),
            (settings.processor_group, settings.data_topic),
        ):
            lag = report.consumer_lag(settings, group, topic)
            console.print(f"lag {group} on {topic}: {sum(lag.values()):,} messages")


def _print_data_trust(settings: Settings, symbols: list[str]) -> None:
    """Per symbol: indicators past their warm-up, suspicious-data flags, logged revisions."""
    from finpipe_manager import quality, warmup
    from finpipe_manager.revisions import revisions_per_symbol

    with connection(settings) as conn:
        warm = {w.symbol: w for w in warmup.warm_ups(conn, symbols)}
        flags = quality.scan(conn, symbols)
        revised = revisions_per_symbol(conn, symbols)
    table = Table(title="data trust")
    for column in ("symbol", "warm indicators", "flags", "revisions"):
        table.add_column(column)
    for symbol in symbols:
        table.add_row(
            symbol,
            warm[symbol].label,
            ", ".join(flags.flags(symbol)) or "-",
            str(revised.get(symbol, 0)),
        )
    console.print(table)


def _print_services(settings: StackSettings) -> None:
    for component, state in stack.status(settings).items():
        console.print(f"{component:>14}: {state}")


# --- the main job ----------------------------------------------------------------------------
DEMO_DIR = Path("out/demo")


@app.command()
def demo(out: Path = typer.Option(DEMO_DIR, help="Output folder.")) -> None:  # noqa: B008
    """The main job: backfill the offline sample universe through Dagster, Kafka and the
    workers, then print a summary and draw a chart per symbol."""
    # Imported here: the demo needs the trading calendar (exchange_calendars, about 3 s to
    # import), which no other command should wait for.
    from finpipe.demo import run_demo

    result = run_demo(get_stack_settings(), out, console)
    console.print(
        f"\n[bold]done[/bold] in {result.seconds:.0f} s: {result.days_complete:,} of "
        f"{result.days_expected:,} trading days complete, "
        f"{result.tasks_emitted} tasks emitted by this run"
    )
    console.print(f"summary: {result.summary_csv}")
    console.print(f"charts:  {out / 'charts'}/ ({len(result.charts)} PNG files)")
    console.print(
        "status:  finpipe status    UI: make dev (http://127.0.0.1:3000)    "
        "stop everything: make down"
    )


# --- workers ---------------------------------------------------------------------------------
@workers_app.command("start")
def workers_start(
    agents: int = typer.Option(1, min=0, max=12), processors: int = typer.Option(1, min=0, max=12)
) -> None:
    """Start agents and processors in the background (logs under the state dir)."""
    settings = get_stack_settings()
    _require_kafka(settings)
    started = start_workers(settings, agents, processors)
    console.print(f"started: {', '.join(started) or 'nothing (already running)'}")


@workers_app.command("stop")
def workers_stop() -> None:
    """Stop the local agents and processors (they finish their batch first)."""
    stopped = stop_workers(get_stack_settings())
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


# --- charts ----------------------------------------------------------------------------------
CHARTS_DIR = Path("out/charts")


@app.command()
def chart(
    symbol: str,
    out: Path = typer.Option(CHARTS_DIR, help="Output folder."),  # noqa: B008
    log: bool = typer.Option(False, "--log", help="Logarithmic price scale."),
) -> None:
    """Write SYMBOL's chart (price with Bollinger bands, RSI, MACD) as a PNG."""
    contracts.validate_symbol(symbol)
    path = report.render_chart(get_settings(), symbol, out, log_scale=log)
    console.print(f"wrote {path}")


# --- revisions -------------------------------------------------------------------------------
@app.command("revisions")
def revisions_command(
    symbol: str | None = typer.Argument(None, help="Only this symbol's revisions."),
    limit: int = typer.Option(50, min=1, help="Newest N revisions."),
) -> None:
    """Changes to stored bars (the revision log): columns, old -> new values, task, when seen."""
    from finpipe_manager.revisions import list_revisions

    if symbol is not None:
        contracts.validate_symbol(symbol)
    with connection(get_settings()) as conn:
        rows = list_revisions(conn, symbol, limit)
    table = Table(title=f"revisions{' of ' + symbol if symbol else ''} (newest {limit})")
    for column in ("symbol", "date", "change", "history", "task", "seen"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.symbol,
            str(r.date),
            r.describe(),
            "rewritten" if r.rewrote_history else "in place",
            r.task_id or "-",
            r.seen_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(table if rows else "no revisions")


# --- dead letters ----------------------------------------------------------------------------
def _read_dlq(settings: Settings, limit: int | None = None) -> list:
    _require_kafka(settings)
    consumer = Consumer(
        consumer_config(settings, "finpipe-cli-dlq-reader", **{"enable.partition.eof": True})
    )
    topic = settings.dlq_topic
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    records, finished = [], set()
    deadline = time.monotonic() + 30
    try:
        while len(finished) < len(partitions) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                finished.add(msg.partition())
                continue
            records.append(msg)
    finally:
        consumer.close()
    records.sort(key=lambda m: m.timestamp()[1])
    return records[-limit:] if limit else records


@dlq_app.command("list")
def dlq_list(limit: int = typer.Option(20, help="Newest N records.")) -> None:
    """Dead letters: where each came from and why it failed."""
    settings = get_settings()
    records = _read_dlq(settings, limit)
    table = Table(title=f"{settings.dlq_topic} (newest {limit})")
    for column in ("key", "from", "error", "reason"):
        table.add_column(column)
    for m in records:
        h = contracts.parse_dlq_headers(m.headers())
        origin = (
            f"{h.get(contracts.DLQ_HEADER_TOPIC, '?')}"
            f"[{h.get(contracts.DLQ_HEADER_PARTITION)}]@{h.get(contracts.DLQ_HEADER_OFFSET)}"
        )
        key = (m.key() or b"").decode("utf-8", "replace")
        table.add_row(
            key,
            origin,
            h.get(contracts.DLQ_HEADER_ERROR_CLASS, "?"),
            h.get(contracts.DLQ_HEADER_ERROR, "")[:120],
        )
    console.print(table)
    if not records:
        console.print("no dead letters")


@dlq_app.command("replay")
def dlq_replay(symbol: str = typer.Option(..., help="Replay this symbol's dead letters.")) -> None:
    """Send SYMBOL's unresolved dead letters back to their topics and unpark it.

    Each dead letter is sent once: what a replay sent is recorded as replayed, and what an
    unpark resumed without is recorded as skipped, so repeating a replay sends nothing.
    """
    from workers.processor.parking import unpark, unresolved_dead_letters

    settings = get_settings()
    contracts.validate_symbol(symbol)
    by_source = {}
    for m in _read_dlq(settings):
        h = contracts.parse_dlq_headers(m.headers())
        topic = h.get(contracts.DLQ_HEADER_TOPIC)
        if m.key() != symbol.encode() or topic not in (settings.tasks_topic, settings.data_topic):
            continue
        try:
            source = (
                topic,
                int(h[contracts.DLQ_HEADER_PARTITION]),
                int(h[contracts.DLQ_HEADER_OFFSET]),
            )
        except (KeyError, ValueError):
            continue  # not written by finpipe: nothing says where it came from
        by_source.setdefault(source, m)  # a dead letter written twice is replayed once
    todo = unresolved_dead_letters(settings, list(by_source))
    producer = Producer(producer_config(settings))
    for source in todo:
        m = by_source[source]
        producer.produce(
            source[0],
            key=m.key(),
            value=m.value(),
            headers=[("finpipe.replayed_from", f"dlq@{m.offset()}".encode())],
        )
    if producer.flush(30) > 0:
        raise StackDownError("could not deliver the replayed messages; nothing was unparked")
    held = unpark(settings, symbol, replayed=todo)
    console.print(
        f"replayed {len(todo)} dead letters of {symbol} "
        f"({len(by_source) - len(todo)} already resolved); "
        f"applied {held} held messages"
    )


@app.command("unpark")
def unpark_command(symbol: str) -> None:
    """Resume a parked SYMBOL without its dead letters: apply its held messages in order."""
    from workers.processor.parking import unpark

    contracts.validate_symbol(symbol)
    applied = unpark(get_settings(), symbol)
    console.print(f"{symbol}: applied {applied} held messages")


# --- symbols ---------------------------------------------------------------------------------
def _universe_file(settings: Settings) -> Path:
    if settings.universe in ("default", "sample"):
        raise StackDownError(
            f"the universe is the built-in {settings.universe!r} list; to edit symbols, copy it "
            "to a file (finpipe symbols export universe.csv) and set FINPIPE_UNIVERSE to its path"
        )
    return Path(settings.universe).expanduser()


def _sync(settings: Settings) -> None:
    from finpipe_manager.universe import load_universe, sync_universe

    with connection(settings) as conn:
        sync_universe(conn, load_universe(settings.universe))


def _write_universe(path: Path, entries: list[UniverseEntry]) -> None:
    """Write ``entries`` to ``path`` only if the result parses: a bad name never lands."""
    from finpipe_manager.universe import parse_universe

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["symbol", "name"])
    writer.writerows([e.symbol, e.name] for e in entries)
    parse_universe(buffer.getvalue(), source=str(path))  # raises UniverseError, file untouched
    path.write_text(buffer.getvalue())


@symbols_app.command("list")
def symbols_list() -> None:
    """The symbols of the configured universe (FINPIPE_UNIVERSE)."""
    from finpipe_manager.universe import load_universe

    settings = get_settings()
    for entry in load_universe(settings.universe):
        console.print(f"{entry.symbol:<10} {entry.name}")


@symbols_app.command("export")
def symbols_export(path: Path) -> None:
    """Write the configured universe to PATH (then set FINPIPE_UNIVERSE=PATH to edit it)."""
    from finpipe_manager.universe import load_universe

    entries = load_universe(get_settings().universe)
    _write_universe(path, entries)
    console.print(f"wrote {len(entries)} symbols to {path}")


@symbols_app.command("add")
def symbols_add(symbol: str, name: str = typer.Option("", help="Company name.")) -> None:
    """Add SYMBOL to the universe file and the database (requested from the next run on)."""
    from finpipe_manager.universe import load_universe

    settings = get_settings()
    contracts.validate_symbol(symbol)
    path = _universe_file(settings)
    if symbol in {e.symbol for e in load_universe(str(path))}:
        console.print(f"{symbol} is already in {path}")
        return
    _write_universe(path, [*load_universe(str(path)), UniverseEntry(symbol, name or symbol)])
    _sync(settings)
    console.print(f"added {symbol} to {path}")


@symbols_app.command("remove")
def symbols_remove(symbol: str) -> None:
    """Remove SYMBOL from the universe file; its stored data stays, it is no longer requested."""
    from finpipe_manager.universe import load_universe

    settings = get_settings()
    contracts.validate_symbol(symbol)
    path = _universe_file(settings)
    _write_universe(path, [e for e in load_universe(str(path)) if e.symbol != symbol])
    _sync(settings)
    console.print(f"removed {symbol} from {path}")


# --- the Dagster UI --------------------------------------------------------------------------
@app.command()
def dev(
    port: int = typer.Option(
        dev_server.DEFAULT_PORT,
        envvar=dev_server.PORT_ENV_VAR,
        min=1,
        max=65535,
        help="Port of the Dagster UI.",
    ),
    host: str = typer.Option(dev_server.DEFAULT_HOST, help="Interface the Dagster UI listens on."),
    timeout: float = typer.Option(dev_server.READY_TIMEOUT_S, help="Seconds to wait for the UI."),
) -> None:
    """Kafka, PostgreSQL, one agent, one processor and `dagster dev` (the UI), in the background.

    Stop everything with `finpipe down` (or `make down`).
    """
    settings = get_stack_settings()
    t0 = time.monotonic()
    result = stack.up(settings)
    for change in result.changes:
        console.print(f"  {change}")
    workers = [*worker_names(settings, "agent", 1), *worker_names(settings, "processor", 1)]
    started = start_workers(settings, 1, 1)
    console.print(
        f"  workers: started {', '.join(started)}"
        if started
        else f"  workers: {' and '.join(workers)} already running"
    )
    console.print(f"  starting dagster dev on {dev_server.ui_url(host, port)} ...")
    server = dev_server.start_dagster_dev(settings, host=host, port=port, timeout=timeout)
    log_dir = paths.log_dir(settings)
    logs = ", ".join(f"{n}.log" for n in [dev_server.DAGSTER_DEV, *workers])
    console.print(
        f"\nDagster UI: [bold]{server.url}[/bold]"
        f"{'' if server.started else ' (already running)'}  "
        f"(ready after {time.monotonic() - t0:.0f} s)\n"
        f"  DAGSTER_HOME: {DAGSTER_HOME}\n"
        f"  logs: {log_dir}/ ({logs}, kafka.log, postgres.log)\n"
        "  backfill: Catalog > stock_tasks > Materialize…; schedules and sensors: Automation\n"
        "  stop everything: finpipe down (or make down)",
        soft_wrap=True,
    )


if __name__ == "__main__":
    run()
