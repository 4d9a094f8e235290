"""The manager asset: fetch tasks for a range of trading days, through the outbox to Kafka.

Dagster's bookkeeping, not the outbox, is what a long range costs: a range run records one
materialisation per partition (9,216 for 1990..2026). So each partition's event carries only
the two run totals a user looks for, and the rest of the run's metadata (dates, preview,
publish counts) is attached to the range's last partition alone.
"""

import datetime as dt
import warnings
from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from finpipe_core.calendar import last_completed_session
from finpipe_dagster.constants import INGEST, MANAGER_POOL, OWNERS, STOCK_TASKS
from finpipe_dagster.partitions import key_range_dates, partition_date, trading_day_partitions
from finpipe_dagster.resources import KafkaProducerResource, ManagerResource, PostgresResource
from finpipe_manager.outbox import EmitReport, emit_tasks
from finpipe_manager.revision_window import enqueue_corrections
from finpipe_manager.universe import active_symbols, load_universe, sync_universe

# Tasks listed in the run's metadata preview.
PREVIEW_TASKS = 10


class StockTasksConfig(dg.Config):
    """Run config of stock_tasks."""

    force: bool = Field(
        default=False,
        description="Fetch the whole range again (corrections), even where tasks exist.",
    )
    revision_window: bool = Field(
        default=False,
        description="Also re-request the revision window (FINPIPE_REVISION_WINDOW_SESSIONS "
        "sessions before the range) as corrections; the daily schedule sets it.",
    )


# BackfillPolicy is marked beta in 1.13 yet is how a UI backfill becomes one run;
# without this filter every process loading the code location would print the warning.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy")
    _stock_tasks_asset = dg.asset(
        name=STOCK_TASKS,
        group_name=INGEST,
        kinds={"kafka", "postgres"},
        owners=OWNERS,
        partitions_def=trading_day_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        # One manager run at a time, however it is launched (schedule, UI, backfill, CLI):
        # dagster.yaml gives every pool a limit of one.
        pool=MANAGER_POOL,
        # A range reaching a session that has not closed materialises only the closed ones.
        output_required=False,
    )


@_stock_tasks_asset
def stock_tasks(
    context: dg.AssetExecutionContext,
    config: StockTasksConfig,
    postgres: PostgresResource,
    kafka: KafkaProducerResource,
    manager: ManagerResource,
) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization]:
    """Fetch tasks for every active symbol and trading day, stored in the outbox and on Kafka."""
    key_range = context.partition_key_range
    start, end = key_range_dates(key_range)
    # A session still trading (or not yet open) is left for a later run: a task for it now
    # would mark its day covered before the source has its bar.
    completed = last_completed_session(dt.datetime.now(dt.UTC))
    emit_end = min(end, completed)
    settings = manager.settings()
    entries = load_universe(settings.universe)
    with postgres.connection() as conn, kafka.producer() as producer:
        sync_universe(conn, entries)
        symbols = active_symbols(conn)
        corrections = (
            enqueue_corrections(
                conn,
                symbols,
                start,
                window_sessions=settings.revision_window_sessions,
                max_sessions=settings.max_sessions_per_task,
            )
            if config.revision_window
            else []
        )
        report = emit_tasks(
            conn,
            producer,
            kafka.topic,
            symbols,
            start,
            emit_end,
            requested_by=context.run.run_id,
            force=config.force,
            max_sessions=settings.max_sessions_per_task,
        )
    if not report.publish.ok:
        raise dg.Failure(
            description=(
                f"{len(report.publish.failed)} tasks were stored but not delivered to "
                f"{kafka.topic}; they stay pending and the next run or the stuck-task sensor "
                "publishes them"
            ),
            metadata={"undelivered": dg.MetadataValue.json(dict(report.publish.failed))},
        )
    totals = {
        "tasks_emitted": dg.MetadataValue.int(len(report.tasks)),
        "symbols": dg.MetadataValue.int(len(symbols)),
    }
    if config.revision_window:
        totals["corrections_emitted"] = dg.MetadataValue.int(len(corrections))
    details = _run_details(report, start, end, emit_end, config.force, kafka.topic)
    if emit_end >= end:
        # Every session of the range has closed: one result, which Dagster records on each
        # partition in batches.
        context.add_asset_metadata(details, partition_key=key_range.end)
        yield dg.MaterializeResult(metadata=totals)
        return
    # The range reaches a session still trading (a day after a holiday, before the close):
    # materialise the closed sessions one by one and leave the rest for a later run.
    context.log.warning(f"sessions after {completed} are not complete yet: not requested")
    closed = [k for k in context.partition_keys if partition_date(k) <= completed]
    for key in closed:
        metadata = {**totals, **details} if key == closed[-1] else totals
        yield dg.AssetMaterialization(asset_key=STOCK_TASKS, partition=key, metadata=metadata)


def _run_details(
    report: EmitReport,
    start: dt.date,
    end: dt.date,
    emit_end: dt.date,
    force: bool,
    topic: str,
) -> dict[str, dg.MetadataValue]:
    """The run's metadata beyond its totals (recorded once, on the range's last partition)."""
    own = {t.task_id for t in report.tasks}
    preview = "\n".join(
        f"| {t.symbol} | {t.start} | {t.end} | `{t.task_id}` |"
        for t in report.tasks[:PREVIEW_TASKS]
    )
    return {
        "symbols_with_tasks": dg.MetadataValue.int(len(report.symbols)),
        "start_date": dg.MetadataValue.text(start.isoformat()),
        "end_date": dg.MetadataValue.text(end.isoformat()),
        "requested_through": dg.MetadataValue.text(
            emit_end.isoformat() if emit_end >= start else "nothing yet"
        ),
        "force": dg.MetadataValue.bool(force),
        "tasks_published": dg.MetadataValue.int(len(report.publish.published)),
        "earlier_pending_published": dg.MetadataValue.int(len(set(report.publish.published) - own)),
        "topic": dg.MetadataValue.text(topic),
        "preview": dg.MetadataValue.md(
            "| symbol | start | end | task_id |\n|---|---|---|---|\n" + preview
            if preview
            else "no new tasks: every day of the range was already requested"
        ),
    }
