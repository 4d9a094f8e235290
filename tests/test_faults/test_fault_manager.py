"""The manager (a Dagster run of ``stock_tasks``) SIGKILLed between its DB commit and its
publish, and the run retried: downstream sees each task's effect exactly once.

Two crash points, each followed by a retried run of the same partition range:

- ``before_publish`` (the outbox's hook, after the commit): nothing reached Kafka; the retry
  plans nothing new and publishes the pending tasks: each task is on the topic once.
- ``after_delivery`` (the broker acknowledged every task, the ``published`` mark was not
  committed): the retry sends them again, so each task is on the topic twice (the outbox is
  at-least-once by design); the agents fetch twice and the processor must absorb the repeat.
  The agent is stopped across the crash and the retry (a slow downstream): otherwise the
  processor may finish the delivered tasks first, and the retry finds nothing pending.

Real agent and processor run throughout; the tables must equal one clean run.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections import Counter

import msgspec
import pytest
from faultkit import HERE, assert_exact, read_topic, record_figures, wait_log

from finpipe_core.calendar import trading_days
from finpipe_manager.outbox import plan_symbol_ranges
from tests.fixtures.pipeline import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYMBOLS = [f"MGR{i:02d}" for i in range(20)]
SCENARIOS = [  # crash point, partition range (two years: two tasks per symbol)
    ("before_publish", "2015-01-02", "2016-12-30"),
    ("after_delivery", "2017-01-03", "2018-12-31"),
]
RUN_TIMEOUT_S = 120


def _planned(start: str, end: str) -> list[tuple[str, dt.date, dt.date]]:
    a, b = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    ranges = plan_symbol_ranges(trading_days(a, b), a, b, [], max_sessions=252)
    return [(s, lo, hi) for s in SYMBOLS for lo, hi in ranges]


def test_manager_killed_between_commit_and_publish(fault_pipelines, tmp_path):
    t_begin = time.monotonic()
    pipe = fault_pipelines()
    s = pipe.settings
    universe = tmp_path / "universe.csv"
    universe.write_text("symbol,name\n" + "".join(f"{x},{x} Inc.\n" for x in SYMBOLS))
    env = pipe.env(FINPIPE_UNIVERSE=str(universe))

    def run(start: str, end: str, die: str | None = None) -> subprocess.CompletedProcess:
        argv = [sys.executable, str(HERE / "manager_run.py"), start, end]
        return subprocess.run(
            argv + (["--die", die] if die else []),
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )

    agent, processor = pipe.start("agent"), pipe.start("processor")
    wait_log(agent, "assigned partitions")
    wait_log(processor, "assigned [")
    conn = pipe.connect()
    all_tasks: list[tuple[str, dt.date, dt.date]] = []
    retry_to_done: list[float] = []
    sent_per_scenario: dict[str, Counter] = {}
    for die, start, end in SCENARIOS:
        tasks = _planned(start, end)
        all_tasks += tasks
        if die == "after_delivery":
            assert agent.stop() == 0
        crashed = run(start, end, die)
        out = crashed.stdout + crashed.stderr
        assert crashed.returncode == -9, out[-3000:]
        assert "manager_run: SIGKILL" in out
        with conn.cursor() as cur:
            cur.execute(
                "SELECT status, count(*) FROM tasks WHERE start_date >= %s "
                "AND end_date <= %s GROUP BY status",
                (start, end),
            )
            # Committed before the crash, never marked published.
            assert dict(cur.fetchall()) == {"pending": len(tasks)}, die

        t_retry = time.monotonic()
        retried = run(start, end)
        assert retried.returncode == 0, (retried.stdout + retried.stderr)[-3000:]
        assert f"earlier_pending_published={len(tasks)}" in retried.stdout
        assert "tasks_emitted=0" in retried.stdout  # the retry planned nothing new
        if die == "after_delivery":
            agent = pipe.start("agent")
        ids = [t for (t,) in _ids(conn, start, end)]
        assert len(ids) == len(tasks)
        pipe.wait_tasks(ids, timeout=120)
        retry_to_done.append(time.monotonic() - t_retry)

        sent = Counter(
            msgspec.json.decode(m.value())["task_id"] for m in read_topic(s, s.tasks_topic)
        )
        sent_per_scenario[die] = Counter(sent[i] for i in ids)

    exact = assert_exact(pipe, all_tasks)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*), count(DISTINCT (symbol, start_date, end_date)), "
            "array_agg(DISTINCT status), array_agg(DISTINCT attempts) FROM tasks"
        )
        rows, ranges, statuses, attempts = cur.fetchone()
    conn.close()
    assert rows == ranges == len(all_tasks)
    assert statuses == ["done"] and attempts == [1]
    # Each task on the topic once after a crash before publishing, twice after one that
    # followed the delivery: the outbox is at-least-once, the effect above is exactly once.
    assert sent_per_scenario["before_publish"] == {1: len(_planned(*SCENARIOS[0][1:]))}
    assert sent_per_scenario["after_delivery"] == {2: len(_planned(*SCENARIOS[1][1:]))}
    data = Counter(
        (v["task_id"], v.get("chunk", 0))
        for v in (msgspec.json.decode(m.value()) for m in read_topic(s, s.data_topic))
    )
    for w in (agent, processor):
        assert w.proc.poll() is None
    record_figures(
        "manager_crash",
        bars=exact.stored_bars,
        tasks=len(all_tasks),
        faults="2xSIGKILL(before_publish,after_delivery)+2 retried runs",
        tasks_sent_twice=sum(1 for c in sent_per_scenario["after_delivery"].elements() if c),
        bar_msgs=sum(data.values()),
        dup_bar_msgs=sum(n - 1 for n in data.values()),
        max_retry_to_done_s=max(retry_to_done),
        wall_s=time.monotonic() - t_begin,
    )


def _ids(conn, start: str, end: str) -> list[tuple[str]]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT task_id FROM tasks WHERE start_date >= %s AND end_date <= %s", (start, end)
        )
        return cur.fetchall()
