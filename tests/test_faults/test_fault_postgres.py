"""PostgreSQL stopped (immediate: a crash, open transactions lost) in the middle of a backfill
and started again: the processor waits with backoff, reconnects, resumes from the offsets
stored with the rows, and the final tables are exact.

The outage runs on a private PostgreSQL cluster (the shared one is never touched). It is kept
within what the processor is built to ride out: DB_RETRY_ATTEMPTS (10) retries of one batch,
waiting backoff_delay(attempt, base=0.5, cap=15) (full jitter, so the 10 waits sum to 0..90.5 s,
45 s on average) while polling Kafka. OUTAGE_S is far below that sum's low tail.
"""

from __future__ import annotations

import time

import pytest
from faultkit import (
    ProgressSampler,
    assert_exact,
    log_count,
    record_figures,
    wait_log,
    yearly_tasks,
)

from finpipe_core import contracts
from workers.sources.synthetic import SyntheticSource

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYMBOLS = [f"PGR{i:02d}" for i in range(40)]
FIRST_YEAR, YEARS = 2008, 8  # about 80,000 bars
OUTAGE_S = 10.0
TIMEOUT_S = 180.0


def test_database_restart_mid_backfill(scratch_postgres, fault_pipelines):
    t_begin = time.monotonic()
    scratch, cluster = scratch_postgres
    pipe = fault_pipelines(scratch)
    tasks = yearly_tasks(SYMBOLS, FIRST_YEAR, YEARS)
    src = SyntheticSource()
    total = sum(len(src.fetch(s, a, b)) for s, a, b in tasks)
    workers = [pipe.start("agent"), pipe.start("processor")]
    wait_log(workers[0], "assigned partitions")
    wait_log(workers[1], "assigned [")

    per_wave = len(SYMBOLS)  # one wave: one year of every symbol
    waves = [tasks[i : i + per_wave] for i in range(0, len(tasks), per_wave)]
    ids: list[str] = []
    with ProgressSampler(pipe.settings) as progress:
        for wave in waves[:3]:
            ids += pipe.send_tasks(wave)
        # Stop while the third wave is being processed; the rest arrives during the outage.
        progress.wait_bars(
            sum(len(src.fetch(*t)) for t in tasks[: 2 * per_wave]), timeout=TIMEOUT_S
        )
        bars_at_stop = progress.latest_bars()
        # The manager stored the later waves before the outage; they are published during it.
        pipe.register_tasks([(contracts.make_task_id(*t), *t) for t in tasks[3 * per_wave :]])
        t_stop = time.monotonic()
        cluster.stop(mode="immediate")
        for wave in waves[3:]:
            ids += pipe.send_tasks(wave, register=False)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t_stop)))
        t_start = time.monotonic()
        cluster.start()
        start_s = time.monotonic() - t_start
        t_up = time.monotonic()
        pipe.wait_tasks(ids, timeout=TIMEOUT_S)
        t_done = time.monotonic()

    exact = assert_exact(pipe, tasks)
    assert len(pipe.workers) == 2
    for w in workers:
        assert w.proc.poll() is None, f"{w.kind} exited with {w.proc.returncode}"
    retries = log_count(workers[1:], "batch not committed")
    assert retries >= 1, "the outage never reached the processor"
    assert bars_at_stop < total
    record_figures(
        "postgres_restart",
        bars=exact.stored_bars,
        tasks=len(ids),
        faults="1xpg_ctl-stop-immediate",
        bars_before_fault=bars_at_stop,
        outage_s=t_up - t_stop,
        pg_start_s=start_s,
        processor_retries=retries,
        first_row_after_fault_s=progress.first_progress_after(t_stop) or -1.0,
        first_row_after_db_up_s=progress.first_progress_after(t_up) or -1.0,
        catch_up_after_db_up_s=t_done - t_up,
        wall_s=time.monotonic() - t_begin,
    )
