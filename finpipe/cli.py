"""The ``finpipe`` command: run the local stack and look inside the pipeline."""

from __future__ import annotations

import logging

import typer

from finpipe import stack
from workers.settings import get_settings

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="finpipe: daily bars through Kafka into PostgreSQL.",
)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def up() -> None:
    """Start Kafka and PostgreSQL, create topics, apply migrations (idempotent)."""
    settings = get_settings()
    report = stack.up(settings)
    for change in report.changes:
        typer.echo(f"  {change}")
    if not report.changes:
        typer.echo("  already up; nothing changed")
    typer.echo(
        f"up in {report.total_seconds:.1f} s (Kafka ready after {report.kafka_ready_seconds:.1f} s)"
    )
    _print_status()


@app.command()
def down() -> None:
    """Stop every process finpipe started (workers, Dagster, Kafka, PostgreSQL)."""
    stopped = stack.down(get_settings())
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status() -> None:
    """Show what runs where."""
    _print_status()


def _print_status() -> None:
    for component, state in stack.status(get_settings()).items():
        typer.echo(f"{component:>12}: {state}")


if __name__ == "__main__":
    app()
