"""The `finpipe` CLI against the running stack, and its plain-word errors when it is down."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time

import pytest
from confluent_kafka import Producer

from finpipe.stack import paths
from finpipe_core import contracts
from finpipe_core.kafka import producer_config
from finpipe_manager.universe import UniverseEntry, sync_universe
from workers.agent.main import chunk_messages
from workers.processor.batch import BatchWriter, InputMessage
from workers.sources.synthetic import SyntheticSource

pytestmark = pytest.mark.integration


def finpipe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "finpipe.cli", *args],
        cwd=paths.REPO_ROOT,
        text=True,
        capture_output=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


@pytest.fixture
def private_db(pipeline_factory):
    """A scratch database and private topics; env that points the CLI at them."""
    pipe = pipeline_factory(source="synthetic")
    return pipe, pipe.settings.to_env()


def _store(conn, symbol: str) -> None:
    start, end = dt.date(2013, 1, 1), dt.date(2013, 12, 31)
    task = contracts.FetchTask(
        schema_version=1, task_id=f"t-{symbol}", symbol=symbol, start=start, end=end
    )
    messages = [
        InputMessage("t", 0, i, symbol.encode(), contracts.encode(m))
        for i, m in enumerate(
            chunk_messages(task, SyntheticSource().fetch(symbol, start, end), 100)
        )
    ]
    BatchWriter(conn, "cli-test", 900_000).apply(messages)


def test_status_shows_per_symbol_progress_and_lag(private_db):
    pipe, env = private_db
    conn = pipe.connect()
    conn.autocommit = False
    sync_universe(conn, [UniverseEntry("CLIA", "A"), UniverseEntry("CLIB", "B")])
    _store(conn, "CLIA")
    conn.commit()
    result = finpipe("status", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    line_a = next(line for line in out.splitlines() if "CLIA" in line)
    assert "2013-01-02" in line_a and "2013-12-31" in line_a and "252" in line_a
    assert "CLIB" in out
    assert f"lag {pipe.settings.agent_group} on {pipe.settings.tasks_topic}: 0 messages" in out


def test_chart_writes_a_png(private_db, tmp_path):
    pipe, env = private_db
    conn = pipe.connect()
    conn.autocommit = False
    _store(conn, "CHRT")
    conn.commit()
    result = finpipe("chart", "CHRT", "--out", str(tmp_path), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "CHRT.png").read_bytes()[:4] == b"\x89PNG"
    missing = finpipe("chart", "NOPE", "--out", str(tmp_path), env=env)
    assert missing.returncode == 1 and "no stored bars for NOPE" in missing.stdout


def test_dlq_list_shows_origin_and_reason(private_db):
    pipe, env = private_db
    pipe.start("processor")
    pipe.produce_raw(pipe.settings.data_topic, b"GARB", b"not json at all")
    deadline_env = {**env}
    for _ in range(60):
        result = finpipe("dlq", "list", env=deadline_env)
        if "GARB" in result.stdout:
            break
    assert "GARB" in result.stdout and "ContractError" in result.stdout
    assert f"{pipe.settings.data_topic}[" in result.stdout
    assert "malformed" in result.stdout


def test_symbols_add_remove_edit_the_universe_file(private_db, tmp_path):
    _, env = private_db
    universe = tmp_path / "universe.csv"
    env = {**env, "FINPIPE_UNIVERSE": str(universe)}
    assert (
        finpipe(
            "symbols", "export", str(universe), env={**env, "FINPIPE_UNIVERSE": "sample"}
        ).returncode
        == 0
    )
    added = finpipe("symbols", "add", "NVDA", "--name", "NVIDIA", env=env)
    assert added.returncode == 0, added.stdout + added.stderr
    assert "NVDA,NVIDIA" in universe.read_text()
    removed = finpipe("symbols", "remove", "IBM", env=env)
    assert removed.returncode == 0 and "IBM" not in universe.read_text()
    listed = finpipe("symbols", "list", env=env).stdout
    assert "NVDA" in listed and "IBM" not in listed
    bad = finpipe("symbols", "add", "NV;DA", env=env)
    assert bad.returncode == 1 and "invalid symbol" in bad.stdout


def test_builtin_universe_cannot_be_edited_in_place(private_db):
    _, env = private_db
    result = finpipe("symbols", "add", "NVDA", env={**env, "FINPIPE_UNIVERSE": "default"})
    assert result.returncode == 1
    assert "FINPIPE_UNIVERSE" in result.stdout and "Traceback" not in result.stderr


def test_errors_say_what_to_run_when_the_stack_is_down(tmp_path):
    # Ports where nothing listens: the stack of this state dir is "down".
    env = {
        "FINPIPE_PG_PORT": "1",
        "FINPIPE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "FINPIPE_STATE_DIR": str(tmp_path / "state"),
    }
    status = finpipe("status", env=env)
    assert status.returncode == 1
    assert "PostgreSQL is not running. Start the stack: finpipe up" in status.stdout
    assert "Traceback" not in status.stderr
    dlq = finpipe("dlq", "list", env=env)
    assert dlq.returncode == 1
    assert "Kafka is not reachable at 127.0.0.1:1. Start the stack: finpipe up" in dlq.stdout
    chart = finpipe("chart", "AAPL", "--out", str(tmp_path), env=env)
    assert chart.returncode == 1 and "PostgreSQL is not reachable" in chart.stdout


def _dead_letter(pipe, symbol: str, offset: int) -> None:
    """A dead letter as the processor writes it: the DLQ record, its row, the symbol parked."""
    s = pipe.settings
    start, end = dt.date(2014, 1, 1), dt.date(2014, 12, 31)
    task = contracts.FetchTask(
        schema_version=1, task_id=f"t-{symbol}", symbol=symbol, start=start, end=end
    )
    (message,) = chunk_messages(task, SyntheticSource().fetch(symbol, start, end), 1000)
    value = contracts.encode(message)
    error = RuntimeError("a processor bug, fixed since")
    conn = pipe.connect()
    conn.autocommit = False
    BatchWriter(
        conn, s.processor_group, s.max_message_bytes, record_offsets=False
    ).dead_letter_only(InputMessage(s.data_topic, 0, offset, symbol.encode(), value), error)
    conn.commit()
    conn.close()
    producer = Producer(producer_config(s))
    producer.produce(
        s.dlq_topic,
        key=symbol.encode(),
        value=value,
        headers=contracts.dlq_headers(s.data_topic, 0, offset, error),
    )
    assert producer.flush(30) == 0


def _dead_letter_status(pipe, symbol: str) -> list[str]:
    conn = pipe.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT status FROM dead_letters WHERE symbol = %s", (symbol,))
        statuses = [r[0] for r in cur.fetchall()]
    conn.close()
    return statuses


def test_dlq_replay_sends_each_dead_letter_once(private_db):
    pipe, env = private_db
    pipe.start("processor")
    _dead_letter(pipe, "RPLY", offset=7)
    _dead_letter(pipe, "SKIP", offset=8)
    assert _dead_letter_status(pipe, "RPLY") == ["open"]

    first = finpipe("dlq", "replay", "--symbol", "RPLY", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "replayed 1 dead letters of RPLY (0 already resolved)" in first.stdout
    assert _dead_letter_status(pipe, "RPLY") == ["replayed"]
    conn = pipe.connect()
    for _ in range(120):  # the processor applies the replayed message
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM prices WHERE symbol = 'RPLY'")
            if cur.fetchone()[0]:
                break
        time.sleep(0.5)
    conn.close()
    second = finpipe("dlq", "replay", "--symbol", "RPLY", env=env)
    assert "replayed 0 dead letters of RPLY (1 already resolved)" in second.stdout

    # Resumed without its dead letter (unpark): a later replay does not send it either.
    assert finpipe("unpark", "SKIP", env=env).returncode == 0
    assert _dead_letter_status(pipe, "SKIP") == ["skipped"]
    third = finpipe("dlq", "replay", "--symbol", "SKIP", env=env)
    assert "replayed 0 dead letters of SKIP (1 already resolved)" in third.stdout
