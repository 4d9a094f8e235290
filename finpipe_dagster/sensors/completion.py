"""Completion sensor: a runless materialisation of stock_prices and stock_indicators for each
trading day that every active symbol has finished (``finpipe_manager.completion`` decides which).

The materialisations are written by the sensor itself, in batches (``report_in_batches``):
returned as ``SensorResult.asset_events``, the daemon would store them one at a time (two new
PostgreSQL connections each), which made 100 days per tick the most a tick could afford.
Written in batches, a tick reports up to 10,000 days (20,000 events); it stops writing after
``WRITE_BUDGET_SECONDS`` (well inside the 60 s sensor timeout) and leaves the days it did not
write in the cursor's ``todo`` for the next tick.
"""

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Final

import dagster as dg

from finpipe_dagster.constants import STOCK_INDICATORS, STOCK_PRICES
from finpipe_dagster.partitions import first_partition_date, partition_key
from finpipe_dagster.resources import PostgresResource
from finpipe_manager.completion import (
    MAX_DATES_PER_TICK,
    MAX_TASKS_PER_TICK,
    SETTLE_SECONDS,
    CompletedDay,
    CompletionCursor,
    bounded_todo,
    clip_after,
    evaluate_completion,
)

# Asset events per write to the event log (an even number: whole days).
EVENT_BATCH: Final = 2_000
EVENTS_PER_DAY: Final = 2  # stock_prices and stock_indicators
# A tick stops writing batches after this long; the rest waits for the next tick.
WRITE_BUDGET_SECONDS: Final = 30.0


def completion_events(
    days: Sequence[CompletedDay],
) -> list[dg.AssetMaterialization]:
    """One stock_prices and one stock_indicators materialisation per finished day."""
    events: list[dg.AssetMaterialization] = []
    for d in days:
        common = {
            "symbols": dg.MetadataValue.int(d.symbols),
            "completed_at": dg.MetadataValue.timestamp(d.completed_at),
            "lag_seconds": dg.MetadataValue.float(round(d.lag_seconds, 3)),
            "revisions": dg.MetadataValue.int(d.revisions),
        }
        for key, rows in ((STOCK_PRICES, d.prices_rows), (STOCK_INDICATORS, d.indicators_rows)):
            events.append(
                dg.AssetMaterialization(
                    asset_key=key,
                    partition=partition_key(d.day),
                    metadata={**common, "rows": dg.MetadataValue.int(rows)},
                )
            )
    return events


def report_in_batches(
    instance: dg.DagsterInstance,
    events: Sequence[dg.AssetMaterialization],
    batch_size: int = EVENT_BATCH,
    budget_seconds: float | None = None,
) -> int:
    """Record runless materialisations as ``DagsterInstance.report_runless_asset_event`` does,
    but handed to the event log ``batch_size`` at a time (``store_event_batch``: one insert per
    batch, where the public call costs two new connections per event).

    :param budget_seconds: start no new batch after this long (the first is always written).
    :return: how many of ``events`` (a prefix) were written.
    """
    from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
    from dagster._core.events.log import EventLogEntry
    from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID

    now = time.time()
    entries = [
        EventLogEntry(
            user_message="",
            level=logging.INFO,
            job_name=RUNLESS_JOB_NAME,
            run_id=RUNLESS_RUN_ID,
            error_info=None,
            timestamp=now,
            step_key=None,
            dagster_event=DagsterEvent(
                event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
                job_name=RUNLESS_JOB_NAME,
                event_specific_data=StepMaterializationData(event),
            ),
        )
        for event in events
    ]
    started = time.monotonic()
    written = 0
    while written < len(entries):
        if written and budget_seconds is not None and time.monotonic() - started > budget_seconds:
            break
        batch = entries[written : written + batch_size]
        instance.event_log_storage.store_event_batch(batch)
        written += len(batch)
    return written


def build_completion_sensor(
    *,
    name: str = "stock_completion_sensor",
    max_dates: int = MAX_DATES_PER_TICK,
    max_tasks: int = MAX_TASKS_PER_TICK,
    settle_seconds: float = SETTLE_SECONDS,
    first_date: dt.date | None = None,
    minimum_interval_seconds: int = 30,
    write_budget: float = WRITE_BUDGET_SECONDS,
    event_batch: int = EVENT_BATCH,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """The completion sensor (see the module docstring).

    :param first_date: ignore days before it; the partitions' start date by default.
    """
    start = first_date or first_partition_date()

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Reports stock_prices/stock_indicators days that every symbol finished.",
    )
    def completion_sensor(
        context: dg.SensorEvaluationContext, postgres: PostgresResource
    ) -> dg.SensorResult:
        cursor = CompletionCursor.from_json(context.cursor)
        with postgres.connection() as conn:
            tick = evaluate_completion(
                conn,
                cursor,
                max_dates=max_dates,
                max_tasks=max_tasks,
                settle=dt.timedelta(seconds=settle_seconds),
                first_date=start,
            )
        if not tick.days:
            return dg.SensorResult(
                cursor=tick.cursor.to_json(),
                skip_reason=dg.SkipReason(
                    f"no newly finished day ({tick.tasks_read} finished tasks read)"
                ),
            )
        events = completion_events(tick.days)
        written = report_in_batches(
            context.instance, events, batch_size=event_batch, budget_seconds=write_budget
        )
        days = tick.days[: written // EVENTS_PER_DAY]
        cursor = tick.cursor
        if len(days) < len(tick.days):
            cursor = replace(cursor, todo=bounded_todo(clip_after(tick.candidates, days[-1].day)))
        context.log.info(
            f"finished days: {len(days)} ({days[0].day}..{days[-1].day}) of {len(tick.days)}"
        )
        # The events are stored before the cursor moves: a tick failing in between reports
        # its days again (a repeated materialisation), never loses them.
        return dg.SensorResult(cursor=cursor.to_json())

    return completion_sensor
