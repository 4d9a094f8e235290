"""Schedules: request the last completed session after the US close, then check the tables."""

import datetime as dt
from typing import Any, Final
from zoneinfo import ZoneInfo

import dagster as dg

from finpipe_core.calendar import EXCHANGE_TIMEZONE, last_completed_session
from finpipe_dagster.partitions import partition_key

# 18:30 New York, Monday to Friday: 2.5 hours after the regular close, when daily bars are
# final at the sources; early-close days are covered too.
AFTER_CLOSE_CRON: Final = "30 18 * * 1-5"
# 21:00 New York: the checks run once the day's tasks have had time to finish.
CHECKS_CRON: Final = "0 21 * * 1-5"

# A job or the result of dg.define_asset_job (whose class is not public).
ScheduleTarget = Any


def build_stock_tasks_schedule(
    job: ScheduleTarget,
    *,
    name: str = "stock_tasks_after_close",
    cron_schedule: str = AFTER_CLOSE_CRON,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.RUNNING,
) -> dg.ScheduleDefinition:
    """Each weekday after the close, request the partition of the session that just closed;
    on an exchange holiday, skip (the previous session was requested on its own day)."""

    @dg.schedule(
        name=name,
        job=job,
        cron_schedule=cron_schedule,
        execution_timezone=EXCHANGE_TIMEZONE,
        default_status=default_status,
        description="Requests the session that just closed (NYSE calendar).",
    )
    def stock_tasks_schedule(
        context: dg.ScheduleEvaluationContext,
    ) -> dg.RunRequest | dg.SkipReason:
        now = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        today = now.astimezone(ZoneInfo(EXCHANGE_TIMEZONE)).date()
        session = last_completed_session(now)
        if session != today:
            return dg.SkipReason(
                f"{today} is not a trading session (or has not closed); the last session, "
                f"{session}, was requested after its own close"
            )
        key = partition_key(session)
        # The daily run also re-requests the revision window before the session.
        return dg.RunRequest(
            run_key=f"stock_tasks:{key}",
            partition_key=key,
            run_config={"ops": {"stock_tasks": {"config": {"revision_window": True}}}},
        )

    return stock_tasks_schedule


def build_checks_schedule(
    job: ScheduleTarget,
    *,
    name: str = "market_data_checks_daily",
    cron_schedule: str = CHECKS_CRON,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.RUNNING,
) -> dg.ScheduleDefinition:
    """Run the asset checks of the workers' tables each weekday evening."""
    return dg.ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule=cron_schedule,
        execution_timezone=EXCHANGE_TIMEZONE,
        default_status=default_status,
    )
