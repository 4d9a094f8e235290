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

from finpipe_core.calendar import CalendarRangeError, calendar_range, trading_days
from finpipe_core.settings import Settings
from finpipe_dagster.assets import stock_tasks
from finpipe_dagster.constants import MANAGER_POOL
from finpipe_dagster.definitions import defs
from finpipe_dagster.jobs import stock_tasks_job
from finpipe_dagster.partitions import build_trading_day_partitions, trading_day_partitions
from finpipe_dagster.schedules import build_stock_tasks_schedule
from finpipe_manager import quality

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
            "stock_completion_sensor",
            "stuck_tasks_sensor",
        }
        assert {s.name for s in repo.schedule_defs} == {
            "stock_tasks_after_close",
            "market_data_checks_daily",
        }
        check_names = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
        assert check_names == {
            "no_calendar_gaps",
            "rsi_in_range",
            "no_nan_after_warmup",
            "symbols_healthy",
            *quality.CHECKS,
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
            [str(dagster), *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
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
            "2001-09-11",
            "2001-09-14",  # closed after the attacks
            "2004-06-11",  # Reagan's funeral
            "2007-01-02",  # Ford's funeral
            "2012-10-29",
            "2012-10-30",  # Hurricane Sandy
            "2012-12-25",
            "2013-07-04",
            "2013-11-28",
            "2010-03-06",
            "2010-03-07",  # a weekend
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
        with pytest.raises(ValueError, match="not an ISO date"):
            build_trading_day_partitions("May 2012")

    @pytest.mark.parametrize(
        ("when", "last"),
        [
            ("2012-06-01 15:59", "2012-05-31"),  # Friday, still trading: not a partition yet
            ("2012-06-01 16:00", "2012-06-01"),  # its close: the partition appears
            ("2012-06-02 12:00", "2012-06-01"),  # Saturday: Monday is not a partition yet
            ("2012-06-04 10:00", "2012-06-01"),  # Monday morning
            ("2012-06-04 18:30", "2012-06-04"),  # the after-close schedule's time
        ],
    )
    def test_a_session_is_a_partition_from_its_close(self, when: str, last: str) -> None:
        at = dt.datetime.fromisoformat(when).replace(tzinfo=NY)
        assert trading_day_partitions.get_partition_keys(current_time=at)[-1] == last

    def test_history_back_to_1962(self) -> None:
        partitions = build_trading_day_partitions("1962-01-02")
        keys = partitions.get_partition_keys(current_time=dt.datetime(1963, 1, 1, tzinfo=NY))
        assert keys[0] == "1962-01-02"
        assert keys == [
            d.isoformat() for d in trading_days(dt.date(1962, 1, 2), dt.date(1962, 12, 31))
        ]

    def test_a_start_the_calendar_cannot_serve_fails_clearly(self) -> None:
        with pytest.raises(CalendarRangeError, match=r"1961-12-29 is outside the trading calendar"):
            build_trading_day_partitions("1961-12-29")

    def test_identity_depends_on_settings_only(self) -> None:
        """A fixed end and the holidays up to it: nothing in the definition moves with today."""
        first, last = calendar_range()
        again = build_trading_day_partitions("2000-01-03")
        assert again.get_serializable_unique_identifier() == (
            trading_day_partitions.get_serializable_unique_identifier()
        )
        assert trading_day_partitions.end.date() == last + dt.timedelta(days=1)
        excluded = [
            dt.datetime.fromtimestamp(e.timestamp, NY).date()
            for e in trading_day_partitions.exclusions
        ]
        assert max(excluded) <= last and dt.date(2035, 12, 25) in excluded
        assert first == dt.date(1962, 1, 2)


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
    def test_tick_requests_the_session_that_closed(self, when: str, expected: str | None) -> None:
        at = dt.datetime.fromisoformat(when).replace(tzinfo=NY)
        context = dg.build_schedule_context(scheduled_execution_time=at)
        result = self.schedule(context)
        if expected is None:
            assert isinstance(result, dg.SkipReason)
            return
        assert isinstance(result, dg.RunRequest)
        assert result.partition_key == expected
        assert result.run_key == f"stock_tasks:{expected}"
        # The daily run also requests the revision window (corrections).
        assert result.run_config == {"ops": {"stock_tasks": {"config": {"revision_window": True}}}}
        # The partition exists at tick time, so the daemon accepts the request.
        assert expected in trading_day_partitions.get_partition_keys(current_time=at)

    def test_schedule_targets_the_partitioned_job(self) -> None:
        job = defs.resolve_job_def("stock_tasks_job")
        assert job.partitions_def == trading_day_partitions
        assert job.tags.get("finpipe/manager") == "stock_tasks"

    def test_every_manager_run_is_in_the_pool(self) -> None:
        """The pool is on the asset, so the implicit job of a UI materialisation or backfill
        and a CLI run use it as the scheduled job does."""
        assert stock_tasks.op.pool == MANAGER_POOL
        for name in ("stock_tasks_job", "__ASSET_JOB"):
            job = defs.resolve_job_def(name)
            pools = {node.definition.pool for node in job.nodes_in_topological_order}
            assert MANAGER_POOL in pools


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
        concurrency = instance.get_concurrency_config()
        queue = concurrency.run_queue_config
        assert queue.tag_concurrency_limits == [{"key": "finpipe/manager", "limit": 1}]
        assert concurrency.pool_config.default_pool_limit == 1
        assert instance.get_runs(limit=1) is not None  # the database answers
        assert not instance.telemetry_enabled
    finally:
        instance.dispose()
