"""Fixtures for the browser test: ``dagster dev`` on private resources, headless Chromium.

``dagster dev`` is started with finpipe's own functions (``finpipe.dev``) but with a state dir,
a ``DAGSTER_HOME`` (a copy of the repo's ``dagster.yaml``), a finpipe database, a Dagster
storage database and a tasks topic of its own, so the test neither disturbs nor is disturbed
by the shared stack, a developer's ``make dev`` or the repo's ``dagster_home``. It is stopped
with the real ``finpipe down`` pointed at that state dir, and the teardown checks that the
whole process group is gone and the port is free.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright
from psycopg2 import sql

from finpipe.stack import paths
from finpipe.stack.local_workers import start_workers, worker_process
from finpipe.stack.postgres import PostgresCluster
from finpipe_core.db import apply_migrations
from finpipe_core.settings import Settings
from tests.fixtures import dagster_dev as dev

CHROMIUM = Path("/usr/bin/chromium")
# The flags that work for Debian's chromium here. Playwright adds --headless and
# takes the profile directory (--user-data-dir) as launch_persistent_context's argument.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 900}
# Seconds for ``finpipe down`` to return (its 30 s SIGTERM deadline, then SIGKILL, plus the
# CLI's start-up on a loaded machine; dagster dev took 3-21 s to exit here), and then for
# every process of the group to be gone and the port to be free.
DOWN_LIMIT_S = dev.DOWN_TIMEOUT_S + 30
GONE_LIMIT_S = 10.0


@dataclass(frozen=True)
class DagsterUI:
    """``dagster dev`` serving the UI for one test."""

    url: str
    host: str
    port: int
    pid: int
    settings: Settings
    log_file: Path

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        """POST a query to the webserver's GraphQL endpoint; the ``data`` of the answer."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.load(response)
        assert "errors" not in answer, answer
        return answer["data"]


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium: fail (never skip) with what to run when it is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: the browser test drives Debian's chromium. Install it with "
            "`make system-deps` (or `scripts/ensure-system-deps.sh`, as root).",
            pytrace=False,
        )
    return CHROMIUM


def free_port(host: str = dev.DEFAULT_HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@pytest.fixture
def private_settings(
    local_stack: Settings, topic_factory: Callable[..., str], tmp_path: Path
) -> Iterator[Settings]:
    """Settings with a private state dir, tasks topic, finpipe database (migrated) and Dagster
    storage database; the five-symbol sample universe. Databases dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    finpipe_db, dagster_db = f"finpipe_browser_{tag}", f"dagster_browser_{tag}"
    admin = PostgresCluster(local_stack).admin_connection()
    try:
        with admin.cursor() as cur:
            for db in (finpipe_db, dagster_db):
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(db), sql.Identifier(local_stack.pg_user)
                    )
                )
        settings = local_stack.model_copy(
            update={
                "state_dir": str(tmp_path / "state"),
                "tasks_topic": topic_factory("browser-tasks", partitions=3),
                "pg_database": finpipe_db,
                "pg_dagster_database": dagster_db,
                "universe": "sample",
            }
        )
        apply_migrations(settings)
        yield settings
    finally:
        with admin.cursor() as cur:
            for db in (finpipe_db, dagster_db):
                cur.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
                )
        admin.close()


@pytest.fixture
def dagster_ui(private_settings: Settings, tmp_path: Path) -> Iterator[DagsterUI]:
    """``dagster dev`` on a free port; stopped by ``finpipe down``, which must leave nothing."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(dev.DAGSTER_HOME / "dagster.yaml", home / "dagster.yaml")
    host, port = dev.DEFAULT_HOST, free_port()
    server = dev.start_dagster_dev(private_settings, host=host, port=port, dagster_home=home)
    ui = DagsterUI(server.url, host, port, server.pid, private_settings, server.log_file)
    try:
        yield ui
    finally:
        _down_and_check(ui, tmp_path)


def _down_and_check(ui: DagsterUI, tmp_path: Path) -> None:
    """``finpipe down`` on the test's state dir; then the group must be gone, the port free."""
    state = paths.state_dir(ui.settings)
    run_dir = paths.run_dir(ui.settings)
    # Never let this touch the shared stack: only our own dagster-dev may be listed.
    assert state.is_relative_to(tmp_path), state
    assert sorted(p.name for p in run_dir.glob("*.pid")) == [f"{dev.DAGSTER_DEV}.pid"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINPIPE_")}
    env["FINPIPE_STATE_DIR"] = str(state)
    finpipe = Path(sys.executable).with_name("finpipe")
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            [str(finpipe), "down"],
            env=env,
            capture_output=True,
            text=True,
            timeout=DOWN_LIMIT_S,
            cwd=paths.REPO_ROOT,
        )
        took = time.monotonic() - t0
        assert done.returncode == 0, f"finpipe down failed:\n{done.stdout}\n{done.stderr}"
        assert dev.DAGSTER_DEV in done.stdout, done.stdout
        try:
            dev.wait_stopped(ui.pid, ui.host, ui.port, timeout=GONE_LIMIT_S)
        except TimeoutError as exc:
            raise AssertionError(
                f"finpipe down returned after {took:.1f} s but left dagster behind ({exc}); "
                f"log {ui.log_file}"
            ) from exc
        print(f"finpipe down stopped dagster dev in {took:.1f} s")
    finally:
        # Whatever happened above, leave nothing running.
        if dev.process_group_alive(ui.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(ui.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(ui.pid, os.WNOHANG)  # reap the leader (our child) if it is a zombie


@pytest.fixture
def ui_workers(dagster_ui: DagsterUI, topic_factory: Callable[..., str]) -> Iterator[Settings]:
    """One agent and one processor serving the UI's database and tasks topic.

    They read the offline sample source and have data and dead-letter topics and consumer
    groups of their own. Their pid files are in the test's state dir, so they are stopped here,
    before ``dagster_ui``'s teardown checks that ``dagster-dev`` is the only process left.
    """
    tag = uuid.uuid4().hex[:8]
    settings = dagster_ui.settings.model_copy(
        update={
            "source": "sample",
            "data_topic": topic_factory("browser-data", partitions=3),
            "dlq_topic": topic_factory("browser-dlq", partitions=1),
            "agent_group": f"browser-agents-{tag}",
            "processor_group": f"browser-processors-{tag}",
        }
    )
    started = start_workers(settings, agents=1, processors=1)
    assert len(started) == 2, f"workers already running for these private topics: {started}"
    try:
        yield settings
    finally:
        for name in started:
            worker_process(settings, name).stop(timeout=30)


@pytest.fixture
def browser_page(chromium: Path, tmp_path: Path) -> Iterator[Page]:
    """A page in headless Chromium with a new profile directory under tmp_path."""
    with sync_playwright() as pw:
        context: BrowserContext = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            context.close()
