"""The manager asset end to end: partitions and ranges become tasks on the real broker, once."""

from __future__ import annotations

import datetime as dt
import importlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import psycopg2.extensions
import pytest

from finpipe_core.contracts import FetchTask
from finpipe_core.settings import Settings
from finpipe_dagster.assets import stock_tasks
from finpipe_dagster.constants import MANAGER_POOL
from finpipe_dagster.resources import ManagerResource, default_resources
from finpipe_dagster.sensors import build_stuck_tasks_sensor
from finpipe_manager import outbox

pytestmark = pytest.mark.integration

D = dt.date
REPO = Path(__file__).resolve().parents[2]
ReadTopic = Callable[[str], list[FetchTask]]


def _materialize(
    partition: str | tuple[str, str],
    *,
    force: bool = False,
    revision_window: bool = False,
    instance: dg.DagsterInstance | None = None,
    **manager: object,
) -> dg.ExecuteInProcessResult:
    resources = default_resources()
    if manager:
        resources["manager"] = ManagerResource(**manager)
    tags = {}
    key = None
    if isinstance(partition, tuple):
        tags = {
            "dagster/asset_partition_range_start": partition[0],
            "dagster/asset_partition_range_end": partition[1],
        }
    else:
        key = partition
    return dg.materialize(
        [stock_tasks],
        partition_key=key,
        tags=tags,
        resources=resources,
        run_config={
            "ops": {"stock_tasks": {"config": {"force": force, "revision_window": revision_window}}}
        },
        instance=instance,
    )


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    """The run's metadata: a range run records its totals on each partition and the rest on
    the range's last partition only (lean events are what keep a 9,216-day run fast)."""
    events = result.asset_materializations_for_node("stock_tasks")
    keys = [e.partition for e in events]
    assert len(set(keys)) == len(keys)
    assert keys == sorted(keys)
    for event in events[:-1]:
        assert set(event.metadata) == {"tasks_emitted", "symbols"}
    meta = {k: v.value for k, v in events[-1].metadata.items()}
    meta["partitions"] = keys
    return meta


def _spans(tasks: list[FetchTask]) -> set[tuple[str, dt.date, dt.date]]:
    return {(t.symbol, t.start, t.end) for t in tasks}


@pytest.fixture
def manager_env(
    clean_db: psycopg2.extensions.connection, sample_universe: tuple[str, ...], tasks_topic: str
) -> tuple[psycopg2.extensions.connection, tuple[str, ...], str]:
    return clean_db, sample_universe, tasks_topic


def test_one_partition_then_rerun(manager_env: tuple, read_topic: ReadTopic) -> None:
    _db, symbols, topic = manager_env
    result = _materialize("2010-03-03")
    meta = _metadata(result)
    assert meta["tasks_emitted"] == 5 and meta["symbols"] == 5
    assert (meta["start_date"], meta["end_date"]) == ("2010-03-03", "2010-03-03")
    tasks = read_topic(topic)
    assert _spans(tasks) == {(s, D(2010, 3, 3), D(2010, 3, 3)) for s in symbols}
    assert {t.requested_by for t in tasks} == {result.run_id}
    assert len(tasks) == 5
    again = _materialize("2010-03-03")
    assert _metadata(again)["tasks_emitted"] == 0
    assert len(read_topic(topic)) == 5


def test_partition_range_is_one_run_split_into_bounded_tasks(
    manager_env: tuple, read_topic: ReadTopic
) -> None:
    _db, symbols, topic = manager_env
    result = _materialize(("2010-03-01", "2010-03-12"), max_sessions_per_task=4)
    meta = _metadata(result)
    assert (meta["start_date"], meta["end_date"]) == ("2010-03-01", "2010-03-12")
    assert meta["partitions"] == [
        "2010-03-01",
        "2010-03-02",
        "2010-03-03",
        "2010-03-04",
        "2010-03-05",
        "2010-03-08",
        "2010-03-09",
        "2010-03-10",
        "2010-03-11",
        "2010-03-12",
    ]
    expected = {
        (s, a, b)
        for s in symbols
        for a, b in [
            (D(2010, 3, 1), D(2010, 3, 4)),
            (D(2010, 3, 5), D(2010, 3, 10)),
            (D(2010, 3, 11), D(2010, 3, 12)),
        ]
    }
    assert _spans(read_topic(topic)) == expected and meta["tasks_emitted"] == 15
    # An older backfill overlapping the stored range emits exactly the older days.
    older = _materialize(("2010-02-22", "2010-03-05"))
    assert _metadata(older)["tasks_emitted"] == 5
    tasks = read_topic(topic)
    assert len(tasks) == 20
    assert _spans(tasks) - expected == {(s, D(2010, 2, 22), D(2010, 2, 26)) for s in symbols}
    assert _metadata(_materialize(("2010-02-22", "2010-03-12")))["tasks_emitted"] == 0
    assert len(read_topic(topic)) == 20


def test_force_refetches_the_range(manager_env: tuple, read_topic: ReadTopic) -> None:
    _db, _symbols, topic = manager_env
    _materialize("2010-03-03")
    forced = _materialize("2010-03-03", force=True)
    assert _metadata(forced)["tasks_emitted"] == 5
    tasks = read_topic(topic)
    assert len(tasks) == 10
    assert {t.force for t in tasks if t.requested_by == forced.run_id} == {True}
    assert len({t.task_id for t in tasks}) == 10


def test_daily_run_also_requests_the_revision_window(
    manager_env: tuple, read_topic: ReadTopic
) -> None:
    """The schedule's run (revision_window) re-requests the 5 sessions before its day as
    corrections of their own; a repeated daily run adds nothing."""
    _db, symbols, topic = manager_env
    _materialize(("2010-03-01", "2010-03-12"))
    daily = _materialize("2010-03-15", revision_window=True)
    meta = _metadata(daily)
    assert meta["tasks_emitted"] == 5 and meta["corrections_emitted"] == 5
    corrections = [t for t in read_topic(topic) if t.requested_by.startswith("revision-window")]
    assert _spans(corrections) == {(s, D(2010, 3, 8), D(2010, 3, 12)) for s in symbols}
    assert {(t.force, t.requested_by) for t in corrections} == {
        (True, "revision-window:2010-03-15")
    }
    again = _materialize("2010-03-15", revision_window=True)
    assert _metadata(again)["corrections_emitted"] == 0
    assert _metadata(again)["tasks_emitted"] == 0


def test_crash_leaves_pending_tasks_published_once_later(
    manager_env: tuple, read_topic: ReadTopic, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, _symbols, topic = manager_env
    real_publish = outbox.publish_pending

    def dying_publish(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("process killed after the outbox commit")

    monkeypatch.setattr(outbox, "publish_pending", dying_publish)
    crashed = dg.materialize(
        [stock_tasks],
        partition_key="2010-03-03",
        resources=default_resources(),
        raise_on_error=False,
    )
    assert not crashed.success
    monkeypatch.setattr(outbox, "publish_pending", real_publish)
    with db, db.cursor() as cur:
        cur.execute("SELECT status, count(*) FROM tasks GROUP BY status")
        assert cur.fetchall() == [("pending", 5)]
    assert read_topic(topic) == []

    # The stuck-task sensor leaves them alone until they are older than the timeout ...
    sensor = build_stuck_tasks_sensor(timeout=dt.timedelta(minutes=10))
    resources = default_resources()
    with dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), resources=resources
    ) as context:
        sensor(context)
    assert read_topic(topic) == []
    # ... and the next manager run (another day) publishes them with its own tasks.
    nxt = _materialize("2010-03-04")
    meta = _metadata(nxt)
    assert meta["tasks_emitted"] == 5 and meta["earlier_pending_published"] == 5
    tasks = read_topic(topic)
    assert len(tasks) == len({t.task_id for t in tasks}) == 10
    assert {t.requested_by for t in tasks} == {crashed.run_id, nxt.run_id}
    with db, db.cursor() as cur:
        cur.execute("SELECT DISTINCT status, attempts FROM tasks")
        assert cur.fetchall() == [("published", 1)]


def test_stuck_sensor_publishes_what_a_crash_left(
    manager_env: tuple, read_topic: ReadTopic, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, _symbols, topic = manager_env
    monkeypatch.setattr(
        outbox, "publish_pending", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed"))
    )
    assert not dg.materialize(
        [stock_tasks],
        partition_key="2010-03-03",
        resources=default_resources(),
        raise_on_error=False,
    ).success
    with db, db.cursor() as cur:
        cur.execute("UPDATE tasks SET created_at = now() - interval '1 hour'")
    sensor = build_stuck_tasks_sensor(timeout=dt.timedelta(minutes=10))
    instance = dg.DagsterInstance.ephemeral()
    with dg.build_sensor_context(instance=instance, resources=default_resources()) as context:
        result = sensor(context)
    observations = [e for e in result.asset_events if isinstance(e, dg.AssetObservation)]
    assert observations[0].metadata["republished_tasks"].value == 5
    assert len(read_topic(topic)) == 5
    with dg.build_sensor_context(
        instance=instance, resources=default_resources(), cursor=result.cursor
    ) as context:
        second = sensor(context)
    assert not second.asset_events
    assert len(read_topic(topic)) == 5


# The two CLIs the README shows: `dagster asset materialize` and its successor `dg launch`
# (dagster-dg-cli; dg.toml at the repo root makes the repo a dg project).
CLIS = {
    "dagster asset materialize": [
        "dagster", "asset", "materialize", "-m", "finpipe_dagster.definitions",
        "--select", "stock_tasks",
    ],
    "dg launch": ["dg", "launch", "--assets", "stock_tasks"],
}  # fmt: skip


@pytest.mark.parametrize("cli", list(CLIS))
class TestCli:
    """Each CLI in a subprocess, as an operator would run it."""

    def _cli(self, cli: str, tmp_path: Path, topic: str, *args: str) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(tmp_path),
            "FINPIPE_UNIVERSE": "sample",
            "FINPIPE_TASKS_TOPIC": topic,
        }
        program, *rest = CLIS[cli]
        proc = subprocess.run(
            [str(Path(sys.executable).with_name(program)), *rest, *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    def test_partition_then_range(
        self,
        cli: str,
        clean_db: psycopg2.extensions.connection,
        tasks_topic: str,
        read_topic: ReadTopic,
        tmp_path: Path,
    ) -> None:
        symbols = {"AAPL", "FB", "GOOG", "IBM", "MSFT"}
        self._cli(cli, tmp_path, tasks_topic, "--partition", "2011-06-15")
        tasks = read_topic(tasks_topic)
        assert _spans(tasks) == {(s, D(2011, 6, 15), D(2011, 6, 15)) for s in symbols}
        self._cli(cli, tmp_path, tasks_topic, "--partition-range", "2011-06-13...2011-06-17")
        tasks = read_topic(tasks_topic)
        assert len(tasks) == 15
        assert _spans(tasks) == {
            (s, a, b)
            for s in symbols
            for a, b in [
                (D(2011, 6, 15), D(2011, 6, 15)),
                (D(2011, 6, 13), D(2011, 6, 14)),
                (D(2011, 6, 16), D(2011, 6, 17)),
            ]
        }
        self._cli(cli, tmp_path, tasks_topic, "--partition-range", "2011-06-13...2011-06-17")
        assert len(read_topic(tasks_topic)) == 15
        with clean_db, clean_db.cursor() as cur:
            cur.execute("SELECT count(DISTINCT requested_by), count(*) FROM tasks")
            assert cur.fetchone() == (2, 15)


def test_a_run_waits_for_the_manager_pool(
    manager_env: tuple, local_stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run outside the queue (CLI, in process) still waits for the pool's one slot."""
    for name, value in {
        "FINPIPE_PG_HOST": local_stack.pg_host,
        "FINPIPE_PG_PORT": str(local_stack.pg_port),
        "FINPIPE_PG_USER": local_stack.pg_user,
        "FINPIPE_PG_DAGSTER_DATABASE": local_stack.pg_dagster_database,
    }.items():
        monkeypatch.setenv(name, value)
    instance = dg.DagsterInstance.from_config(str(REPO / "dagster_home"))
    storage = instance.event_log_storage
    holder = f"other-manager-run-{uuid.uuid4().hex[:8]}"
    try:
        storage.set_concurrency_slots(MANAGER_POOL, 1)
        assert storage.claim_concurrency_slot(MANAGER_POOL, holder, "stock_tasks").is_claimed
        outcome: dict[str, object] = {}
        started = time.monotonic()

        def run() -> None:
            outcome["result"] = _materialize("2010-03-03", instance=instance)
            outcome["seconds"] = time.monotonic() - started

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(8)
        assert thread.is_alive() and "result" not in outcome  # waiting for the slot
        storage.free_concurrency_slot_for_step(holder, "stock_tasks")
        thread.join(180)
        assert outcome["result"].success and outcome["seconds"] >= 8
    finally:
        storage.free_concurrency_slots_for_run(holder)
        instance.dispose()


def test_a_range_reaching_an_open_session_materialises_only_closed_ones(
    manager_env: tuple, read_topic: ReadTopic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The day after a holiday its partition exists before the close (the window of the
    session before it ended on the holiday): a range run reaching it requests and marks only
    the sessions that have closed. The clock is moved to 2010-03-04 13:00 New York."""
    module = importlib.import_module("finpipe_dagster.assets.stock_tasks")
    monkeypatch.setattr(module, "last_completed_session", lambda _now: D(2010, 3, 3))
    _db, _symbols, topic = manager_env
    result = _materialize(("2010-03-01", "2010-03-05"))
    assert result.success
    meta = _metadata(result)
    assert meta["partitions"] == ["2010-03-01", "2010-03-02", "2010-03-03"]
    assert meta["requested_through"] == "2010-03-03" and meta["end_date"] == "2010-03-05"
    assert max(t.end for t in read_topic(topic)) == D(2010, 3, 3)
