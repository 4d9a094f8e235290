"""A slow source: a fetch slower than the agent consumer's max.poll.interval.ms, and a source
that is unavailable for a while (the agent waits in its backoff path) while the group changes.

The agents run through tests/test_faults/slow_agent.py, which patches the synthetic source
(and, for the first test, max.poll.interval.ms is set to 7 s so that a 12 s fetch exceeds
it; production uses FINPIPE_KAFKA_MAX_POLL_INTERVAL_MS = 300 s and a yfinance fetch is bounded
by its 30 s HTTP timeout per request).
"""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest
from faultkit import (
    assert_exact,
    duplicate_deliveries,
    log_count,
    record_figures,
    start_script,
    wait_log,
    yearly_tasks,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

D = dt.date
MAX_POLL_MS = 7000
SESSION_MS = 6000
SLOW_S = 12.0
TIMEOUT_S = 120.0
ASSIGNED = "assigned partitions"


def test_fetch_slower_than_max_poll_interval(fault_pipelines, tmp_path):
    t_begin = time.monotonic()
    pipe = fault_pipelines()
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {
        "FAULT_SLOW_SYMBOLS": "SLW00",
        "FAULT_SLOW_SECONDS": str(SLOW_S),
        "FAULT_MARKER_DIR": str(markers),
        "FINPIPE_KAFKA_MAX_POLL_INTERVAL_MS": str(MAX_POLL_MS),
        "FINPIPE_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_MS),
    }
    agents = [start_script(pipe, "slow_agent.py", "agent", **env) for _ in range(2)]
    processor = pipe.start("processor")
    for a in agents:
        wait_log(a, ASSIGNED)
    wait_log(processor, "assigned [")
    time.sleep(2)  # let the two-member group settle
    assigned_before = _moves(agents)

    # One slow task, then three yearly tasks for 23 other symbols (some share its partition).
    tasks = [("SLW00", D(2012, 1, 1), D(2012, 12, 31))]
    tasks += yearly_tasks([f"SLW{i:02d}" for i in range(1, 24)], 2012, 3)
    ids = pipe.send_tasks(tasks)
    slow_agent = None
    deadline = time.monotonic() + 30
    while slow_agent is None and time.monotonic() < deadline:
        slow_agent = next((a for a in agents if "slow fetch start" in a.log.read_text()), None)
        time.sleep(0.1)
    assert slow_agent is not None, "no agent fetched the slow task"
    t_slow = time.monotonic()
    pipe.wait_tasks(ids, timeout=TIMEOUT_S)
    t_done = time.monotonic()
    wait_log(slow_agent, "slow fetch end", timeout=SLOW_S + 10)
    time.sleep(MAX_POLL_MS / 1000 + 3)  # anything the slow agent does after waking up
    exact = assert_exact(pipe, tasks)
    for w in [*agents, processor]:
        assert w.proc.poll() is None, f"{w.kind} exited with {w.proc.returncode}"
    messages, dups = duplicate_deliveries(pipe.settings)
    rebalances = _moves(agents) - assigned_before
    record_figures(
        "slow_fetch_over_max_poll",
        bars=exact.stored_bars,
        tasks=len(ids),
        faults=f"1 fetch of {SLOW_S:.0f}s > max.poll.interval {MAX_POLL_MS / 1000:.0f}s",
        left_group_on_max_poll=log_count(agents, "leaving group"),
        partition_moves_after_fault=rebalances,
        aborted_txns=log_count(agents, "transaction aborted"),
        bar_msgs=messages,
        dup_bar_msgs=dups,
        slow_start_to_all_done_s=t_done - t_slow,
        wall_s=time.monotonic() - t_begin,
    )
    # The fault happened: the slow agent overran max.poll.interval.ms and left the group,
    # its open transaction was aborted and its partitions moved to the other agent...
    assert log_count(agents, "leaving group") >= 1
    assert log_count(agents, "transaction aborted") >= 1
    assert rebalances >= 1
    # ...and no storm: they move to the other agent once, and some come back once when it
    # rejoins.
    assert rebalances <= 3, f"{rebalances} partition assignments after the slow fetch"


def _moves(agents) -> int:
    """Assignments that handed an agent partitions (not empty ones)."""
    return sum(len(re.findall(r"assigned partitions=\[\d", a.log.read_text())) for a in agents)


def test_backoff_wait_keeps_tasks_of_partitions_assigned_meanwhile(fault_pipelines, tmp_path):
    t_begin = time.monotonic()
    pipe = fault_pipelines()
    markers = tmp_path / "markers"
    markers.mkdir()
    # Unavailable for 14 s, retried every 8 s: attempts at 0 and 8 fail, 16 succeeds. The
    # partitions taken over during the first wait are not paused until the second one.
    env = {
        "FAULT_UNAVAILABLE_SYMBOLS": "UNV00",
        "FAULT_UNAVAILABLE_SECONDS": "14",
        "FAULT_BACKOFF_SECONDS": "8",
        "FAULT_MARKER_DIR": str(markers),
    }
    agents = [start_script(pipe, "slow_agent.py", "agent", **env) for _ in range(2)]
    processor = pipe.start("processor")
    for a in agents:
        wait_log(a, ASSIGNED)
    wait_log(processor, "assigned [")
    time.sleep(2)
    ids = pipe.send_tasks([("UNV00", D(2012, 1, 1), D(2012, 12, 31))])
    waiting = None
    deadline = time.monotonic() + 30
    while waiting is None and time.monotonic() < deadline:
        waiting = next((a for a in agents if "source unavailable" in a.log.read_text()), None)
        time.sleep(0.1)
    assert waiting is not None
    t_wait = time.monotonic()
    other = next(a for a in agents if a is not waiting)
    before = waiting.log.read_text().count(ASSIGNED)
    # The other agent leaves (scale-down): its partitions move to the waiting agent.
    assert other.stop() == 0
    wait_log(waiting, ASSIGNED, timeout=10, count=before + 1)
    assert time.monotonic() - t_wait < 6, "the rebalance came too late in the first wait"
    symbols = [f"UNV{i:02d}" for i in range(1, 49)]
    first = [(s, D(2012, 1, 1), D(2012, 12, 31)) for s in symbols]
    ids += pipe.send_tasks(first)
    wait_log(waiting, "fault: UNV00 unavailable", timeout=20, count=2)
    second = [(s, D(2013, 1, 1), D(2013, 12, 31)) for s in symbols]
    ids += pipe.send_tasks(second)
    lost = 0
    try:
        pipe.wait_tasks(ids, timeout=12)
    finally:
        conn = pipe.connect()
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM tasks WHERE task_id = ANY(%s) AND status = 'done'", (ids,)
            )
            lost = len(ids) - cur.fetchone()[0]
        conn.close()
        record_figures(
            "backoff_wait_while_rebalanced",
            tasks=len(ids),
            faults="source unavailable 14s + 1 agent leaves during the wait",
            tasks_lost=lost,
            wall_s=time.monotonic() - t_begin,
        )
    assert_exact(pipe, [("UNV00", D(2012, 1, 1), D(2012, 12, 31)), *first, *second])
