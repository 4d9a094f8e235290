"""The code location loads; partitions are trading days; the schedule asks for the right day."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from finpipe_dagster.definitions import defs
from finpipe_dagster.jobs import stock_tasks_job
from finpipe_dagster.partitions import build_trading_day_partitions, trading_day_partitions
from finpipe_dagster.schedules import build_stock_tasks_schedule
from workers.calendar import trading_days
from workers.settings import Settings

REPO = Path(__file__).resolve().parents[2]
NY = ZoneInfo("America/New_York")


class TestDefinitions:
    def test_loadable(self) -> None:
        dg.Definitions.validate_loadable(defs)

    def test_every_job_resolves(self) -> None:
        repo = defs.get_repository_def()
        names = {job.name for job in repo.get_all_jobs()}
        assert {"stock_tasks_job", "market_data_checks_job"} <= names
        for name in names:
            assert defs.resolve_job_def(name) is not None

    def test_assets_share_the_partitions(self) -> None:
        graph = defs.resolve_asset_graph()
        keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
        assert keys == {"stock_tasks", "stock_prices", "stock_indicators", "indicator_report"}
        # The report sums up the latest state: it is the one unpartitioned asset.
        assert graph.get(dg.AssetKey("indicator_report")).partitions_def is None
        for key in ("stock_tasks", "stock_prices", "stock_indicators"):
            node = graph.get(dg.AssetKey(key))
            assert node.partitions_def == trading_day_partitions
        tasks = graph.get(dg.AssetKey("stock_tasks"))
        assert tasks.backfill_policy == dg.BackfillPolicy.single_run()
        assert not graph.get(dg.AssetKey("stock_prices")).is_materializable

    def test_checks_and_sensors_are_registered(self) -> None:
        repo = defs.get_repository_def()
        assert {s.name for s in repo.sensor_defs} == {
            "stock_completion_sensor", "stuck_tasks_sensor",
        }
        assert {s.name for s in repo.schedule_defs} == {
            "stock_tasks_after_close", "market_data_checks_daily",
        }
        check_names = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
        assert check_names == {
            "no_calendar_gaps", "rsi_in_range", "no_nan_after_warmup", "no_duplicate_rows",
            "symbols_healthy",
        }

    @pytest.mark.parametrize(
        "args",
        [
            ["definitions", "validate", "-w", "workspace.yaml"],
            ["definitions", "validate"],  # [tool.dagster] module_name in pyproject.toml
        ],
        ids=["workspace", "pyproject"],
    )
    def test_cli_loads_the_code_location(self, args: list[str], tmp_path: Path) -> None:
        env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
        dagster = Path(sys.executable).with_name("dagster")
        proc = subprocess.run(
            [str(dagster), *args], cwd=REPO, env=env, capture_output=True, text=True,
            timeout=120, check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "finpipe" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def keys_through_2013() -> list[str]:
    keys = trading_day_partitions.get_partition_keys(
        current_time=dt.datetime(2014, 1, 1, tzinfo=NY)
    )
    return [k for k in keys if k <= "2013-12-31"]


class TestPartitions:

    def test_keys_are_exactly_the_sessions(self, keys_through_2013: list[str]) -> None:
        sessions = trading_days(dt.date(2000, 1, 3), dt.date(2013, 12, 31))
        assert keys_through_2013 == [d.isoformat() for d in sessions]
        assert keys_through_2013[0] == "2000-01-03"

    @pytest.mark.parametrize(
        "day",
        [
            "2000-01-17",  # Martin Luther King Jr. Day
            "2001-09-11", "2001-09-14",  # closed after the attacks
            "2004-06-11",  # Reagan's funeral
            "2007-01-02",  # Ford's funeral
            "2012-10-29", "2012-10-30",  # Hurricane Sandy
            "2012-12-25", "2013-07-04", "2013-11-28",
            "2010-03-06", "2010-03-07",  # a weekend
        ],
    )
    def test_holidays_and_weekends_are_not_partitions(
        self, day: str, keys_through_2013: list[str]
    ) -> None:
        assert day not in keys_through_2013

    @pytest.mark.parametrize("day", ["2000-01-03", "2001-09-17", "2012-10-31", "2013-11-29"])
    def test_sessions_are_partitions(self, day: str, keys_through_2013: list[str]) -> None:
        assert day in keys_through_2013

    def test_recent_holidays(self) -> None:
        keys = trading_day_partitions.get_partition_keys(
            current_time=dt.datetime(2025, 1, 31, tzinfo=NY)
        )
        assert "2025-01-09" not in keys  # national day of mourning (Carter)
        assert "2025-01-20" not in keys  # Martin Luther King Jr. Day
        assert {"2025-01-08", "2025-01-10", "2025-01-30"} <= set(keys)

    def test_start_is_configurable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FINPIPE_PARTITIONS_START", "2012-05-18")
        partitions = build_trading_day_partitions()
        keys = partitions.get_partition_keys(current_time=dt.datetime(2012, 6, 1, tzinfo=NY))
        assert keys[0] == "2012-05-18"
        assert keys[-1] == "2012-06-01"  # the running session exists during its day
        with pytest.raises(ValueError, match="not an ISO date"):
            build_trading_day_partitions("May 2012")

    def test_range_time_window(self) -> None:
        window = trading_day_partitions.time_window_for_partition_key("2010-03-05")
        assert window.start.date() == dt.date(2010, 3, 5)
        assert window.end.date() == dt.date(2010, 3, 6)


class TestSchedule:
    schedule = build_stock_tasks_schedule(stock_tasks_job)

    def test_cron_after_the_us_close(self) -> None:
        assert self.schedule.cron_schedule == "30 18 * * 1-5"
        assert self.schedule.execution_timezone == "America/New_York"

    @pytest.mark.parametrize(
        ("when", "expected"),
        [
            ("2024-07-05 18:30", "2024-07-05"),  # Friday
            ("2024-07-03 18:30", "2024-07-03"),  # early close (13:00)
            ("2024-07-04 18:30", None),  # Independence Day
            ("2024-11-28 18:30", None),  # Thanksgiving
            ("2024-11-29 18:30", "2024-11-29"),  # early close
            ("2025-01-09 18:30", None),  # unscheduled closure
            ("2024-03-11 18:30", "2024-03-11"),  # Monday after the DST change
            ("2024-11-04 18:30", "2024-11-04"),  # Monday after the DST change
            ("2024-12-31 18:30", "2024-12-31"),
        ],
    )
    def test_tick_requests_the_session_that_closed(
        self, when: str, expected: str | None
    ) -> None:
        at = dt.datetime.fromisoformat(when).replace(tzinfo=NY)
        context = dg.build_schedule_context(scheduled_execution_time=at)
        result = self.schedule(context)
        if expected is None:
            assert isinstance(result, dg.SkipReason)
            return
        assert isinstance(result, dg.RunRequest)
        assert result.partition_key == expected
        assert result.run_key == f"stock_tasks:{expected}"
        # The partition exists at tick time, so the daemon accepts the request.
        assert expected in trading_day_partitions.get_partition_keys(current_time=at)

    def test_schedule_targets_the_partitioned_job(self) -> None:
        job = defs.resolve_job_def("stock_tasks_job")
        assert job.partitions_def == trading_day_partitions
        assert job.tags.get("finpipe/manager") == "stock_tasks"


@pytest.mark.integration
def test_local_instance_stores_in_postgres(
    local_stack: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings()
    env = {
        "FINPIPE_PG_HOST": settings.pg_host,
        "FINPIPE_PG_PORT": str(settings.pg_port),
        "FINPIPE_PG_USER": settings.pg_user,
        "FINPIPE_PG_DAGSTER_DATABASE": settings.pg_dagster_database,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    instance = dg.DagsterInstance.from_config(str(REPO / "dagster_home"))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.tag_concurrency_limits == [{"key": "finpipe/manager", "limit": 1}]
        assert instance.get_runs(limit=1) is not None  # the database answers
        assert not instance.telemetry_enabled
    finally:
        instance.dispose()
