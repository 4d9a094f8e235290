"""The manager asset: fetch tasks for a range of trading days, through the outbox to Kafka."""


import datetime as dt
import warnings

import dagster as dg
from pydantic import Field

from finpipe_dagster.constants import INGEST, OWNERS, STOCK_TASKS
from finpipe_dagster.partitions import trading_day_partitions, window_dates
from finpipe_dagster.resources import KafkaProducerResource, ManagerResource, PostgresResource
from workers.calendar import last_completed_session
from workers.outbox import emit_tasks
from workers.universe import active_symbols, load_universe, sync_universe

# Tasks listed in the run's metadata preview.
PREVIEW_TASKS = 10


class StockTasksConfig(dg.Config):
    """Run config of stock_tasks."""

    force: bool = Field(
        default=False,
        description="Fetch the whole range again (corrections), even where tasks exist.",
    )


# BackfillPolicy is marked beta in 1.13 yet is how a UI backfill becomes one run (design.md 4);
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
    )


@_stock_tasks_asset
def stock_tasks(
    context: dg.AssetExecutionContext,
    config: StockTasksConfig,
    postgres: PostgresResource,
    kafka: KafkaProducerResource,
    manager: ManagerResource,
) -> dg.MaterializeResult:
    """Fetch tasks for every active symbol and trading day, stored in the outbox and on Kafka."""
    start, end = window_dates(context.partition_time_window)
    # A session still trading (or not yet open) is left for a later run: a task for it now
    # would mark its day covered before the source has its bar.
    completed = last_completed_session(dt.datetime.now(dt.UTC))
    emit_end = min(end, completed)
    settings = manager.settings()
    entries = load_universe(settings.universe)
    with postgres.connection() as conn, kafka.producer() as producer:
        sync_universe(conn, entries)
        symbols = active_symbols(conn)
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
    if emit_end < end:
        context.log.warning(f"sessions after {completed} are not complete yet: not requested")
    if not report.publish.ok:
        raise dg.Failure(
            description=(
                f"{len(report.publish.failed)} tasks were stored but not delivered to "
                f"{kafka.topic}; they stay pending and the next run or the stuck-task sensor "
                "publishes them"
            ),
            metadata={"undelivered": dg.MetadataValue.json(dict(report.publish.failed))},
        )
    own = {t.task_id for t in report.tasks}
    preview = "\n".join(
        f"| {t.symbol} | {t.start} | {t.end} | `{t.task_id}` |"
        for t in report.tasks[:PREVIEW_TASKS]
    )
    return dg.MaterializeResult(
        metadata={
            "tasks_emitted": dg.MetadataValue.int(len(report.tasks)),
            "symbols": dg.MetadataValue.int(len(symbols)),
            "symbols_with_tasks": dg.MetadataValue.int(len(report.symbols)),
            "start_date": dg.MetadataValue.text(start.isoformat()),
            "end_date": dg.MetadataValue.text(end.isoformat()),
            "requested_through": dg.MetadataValue.text(
                emit_end.isoformat() if emit_end >= start else "nothing yet"
            ),
            "force": dg.MetadataValue.bool(config.force),
            "tasks_published": dg.MetadataValue.int(len(report.publish.published)),
            "earlier_pending_published": dg.MetadataValue.int(
                len(set(report.publish.published) - own)
            ),
            "topic": dg.MetadataValue.text(kafka.topic),
            "preview": dg.MetadataValue.md(
                "| symbol | start | end | task_id |\n|---|---|---|---|\n" + preview
                if preview
                else "no new tasks: every day of the range was already requested"
            ),
        }
    )
