"""The Dagster UI as a person uses it: headless Chromium drives ``dagster dev``.

Opens the asset catalog, dismisses the "Join the Dagster community" dialog, finds the finpipe
assets, opens ``stock_tasks``, materialises one partition (the last completed trading day)
through the launch dialog and follows the run to "Success". GraphQL, PostgreSQL and Kafka are
only read afterwards to confirm what the UI did: one run for that one partition, five tasks
(the sample universe) in the private database and on the private topic.

The second test launches a backfill of nine days from the same dialog, with an agent and a
processor running, and checks in the partitions view of ``stock_prices`` that exactly those
days show as materialised once the workers are done (the completion sensor reports them).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, TopicPartition
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, expect

from finpipe.stack.processes import wait_until
from finpipe_core import tasks
from finpipe_core.calendar import last_completed_session, trading_days
from finpipe_core.db import connection
from finpipe_core.kafka import consumer_config
from finpipe_core.settings import Settings
from finpipe_manager.completion import SETTLE_SECONDS

if TYPE_CHECKING:  # the fixture's type, for readers; conftest is not imported at run time
    from tests.test_browser.conftest import DagsterUI

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

FINPIPE_ASSETS = ("stock_tasks", "stock_prices", "stock_indicators")
SAMPLE_SYMBOLS = {"AAPL", "FB", "GOOG", "IBM", "MSFT"}
# The code location loads in the background after the webserver answers.
CATALOG_TIMEOUT_MS = 90_000
# Queued -> launched by the daemon -> a run worker process imports the code and runs the step.
RUN_TIMEOUT_MS = 120_000
RUN_STATUS = re.compile(r"^(Success|Failure|Canceled|Canceling)$")
# Every other wait on the page: Playwright's default of 5 s was too short on the shared 2 cores
# (a page already loaded took longer than that to render the asset's description).
expect.set_options(timeout=20_000)

RUN_QUERY = """
query ($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status tags { key value } }
  }
}
"""


class UIFailure(AssertionError):
    """A step in the browser failed; the message names the step and the screenshot."""


@contextmanager
def step(page: Page, tmp_path: Path, name: str) -> Iterator[None]:
    """Run one UI step; on failure save a screenshot and say which step and where it is."""
    try:
        yield
    except (AssertionError, PlaywrightError) as exc:
        shot = tmp_path / f"failed-{re.sub(r'[^a-z0-9]+', '-', name.lower())}.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
            where = f"screenshot {shot}"
        except PlaywrightError as shot_exc:
            where = f"no screenshot ({shot_exc})"
        raise UIFailure(f"step '{name}' failed at {page.url}: {exc}\n{where}") from exc


def dismiss_community_dialog(page: Page) -> list[str]:
    """Press "Skip" on the "Join the Dagster community" dialog whenever it shows up.

    It appears once per Dagster instance, some time after the first page load; a locator
    handler dismisses it before any later action, whenever it comes.
    """
    seen: list[str] = []
    dialog = page.get_by_role("dialog").filter(has_text="Join the Dagster community")

    def skip() -> None:
        seen.append(page.url)
        dialog.get_by_role("button", name="Skip", exact=True).click()
        expect(dialog).to_be_hidden()

    page.add_locator_handler(dialog, skip)
    return seen


def open_launch_dialog(page: Page) -> Locator:
    """Press "Materialize…" on the stock_tasks page once it has loaded; the launch dialog.

    The button shows a spinner (and ignores clicks) while the UI loads the asset's partitions.
    """
    button = page.locator("button", has_text="Materialize…")
    expect(button.get_by_role("progressbar")).to_have_count(0, timeout=CATALOG_TIMEOUT_MS)
    button.click()
    launch = page.get_by_role("dialog").filter(has_text="Launch runs to materialize stock_tasks")
    expect(launch).to_be_visible()
    return launch


def test_materialise_one_stock_tasks_partition_from_the_ui(
    dagster_ui: DagsterUI, browser_page: Page, tmp_path: Path
) -> None:
    page = browser_page
    partition = last_completed_session(dt.datetime.now(dt.UTC)).isoformat()
    dialog_seen = dismiss_community_dialog(page)

    with step(page, tmp_path, "asset catalog lists the finpipe assets"):
        page.goto(f"{dagster_ui.url}/assets")
        for asset in FINPIPE_ASSETS:
            expect(page.locator(f'a[href="/assets/{asset}"]').first).to_be_visible(
                timeout=CATALOG_TIMEOUT_MS
            )
        # The partitioned assets' status column: "6,766 partitions" once it has loaded.
        expect(page.get_by_text(re.compile(r"^[\d,]+ partitions$")).first).to_be_visible()
        page.screenshot(path=str(tmp_path / "1-catalog.png"))

    with step(page, tmp_path, "open stock_tasks"):
        page.locator('a[href="/assets/stock_tasks"]').first.click()
        expect(page).to_have_url(re.compile(r"/assets/stock_tasks$"))
        expect(page.get_by_text("Fetch tasks for every active symbol").first).to_be_visible()

    with step(page, tmp_path, f"choose partition {partition} in the launch dialog"):
        launch = open_launch_dialog(page)
        selection = launch.get_by_role("textbox").first
        selection.fill(partition)
        selection.press("Enter")
        expect(launch.get_by_text("1 partition", exact=True)).to_be_visible()
        launch_button = launch.get_by_role("button", name="Launch 1 run", exact=True)
        expect(launch_button).to_be_enabled()
        page.screenshot(path=str(tmp_path / "2-launch-dialog.png"))

    with step(page, tmp_path, "launch the run and open it"):
        launch_button.click()
        expect(launch).to_be_hidden()
        # The toast "Launched run <id>" links to the run page.
        view = page.locator('a[href^="/runs/"]', has_text="View").first
        expect(view).to_be_visible()
        run_id = (view.get_attribute("href") or "").rsplit("/", 1)[-1]
        assert re.fullmatch(r"[0-9a-f-]{36}", run_id), f"no run id in the toast link: {run_id!r}"
        view.click()
        expect(page).to_have_url(re.compile(rf"/runs/{run_id}"))

    with step(page, tmp_path, f"run {run_id} succeeds"):
        expect(page.get_by_text(f"partition: {partition}").first).to_be_visible()
        status = page.get_by_text(RUN_STATUS).first
        expect(status).to_be_visible(timeout=RUN_TIMEOUT_MS)
        ended = status.inner_text()
        if ended == "Success":  # let the step list settle for the screenshot
            expect(page.get_by_text("Succeeded (1)").first).to_be_visible()
        final = tmp_path / "3-run-success.png"
        page.screenshot(path=str(final))
        assert ended == "Success", (
            f"run {run_id} ended {ended!r}; screenshot {final}, log {dagster_ui.log_file}"
        )
        expect(page.get_by_text("RUN_SUCCESS").first).to_be_visible()

    # What the UI did, read from the back end.
    run = dagster_ui.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]
    assert run["__typename"] == "Run" and run["status"] == "SUCCESS", (run, final)
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags.get("dagster/partition") == partition, (tags, final)

    settings = dagster_ui.settings
    with connection(settings) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT symbol, status, start_date, end_date FROM tasks WHERE requested_by = %s",
            (run_id,),
        )
        rows = cur.fetchall()
    day = dt.date.fromisoformat(partition)
    assert {r[0] for r in rows} == SAMPLE_SYMBOLS, (rows, final)
    assert all(r[1] == "published" and r[2] <= day <= r[3] for r in rows), (rows, final)

    consumer = Consumer(consumer_config(settings, "browser-test-reader"))
    try:
        topic = settings.tasks_topic
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        on_topic = sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts
        )
    finally:
        consumer.close()
    assert on_topic == len(SAMPLE_SYMBOLS), f"{on_topic} messages on {topic}; {final}"
    print(
        f"run {run_id} for partition {partition}: Success; community dialog dismissed on "
        f"{dialog_seen or 'never shown'}; screenshots in {tmp_path}"
    )


# A range inside the sample source's history (2000-03-01..2013-03-01) spanning a holiday
# (Presidents' Day, 2013-02-18): nine trading days.
BACKFILL_START, BACKFILL_END = dt.date(2013, 2, 11), dt.date(2013, 2, 22)
# The backfill daemon's tick, the queued run's launch and its one step took 35-55 s here.
BACKFILL_TIMEOUT_MS = 120_000
BACKFILL_ENDED = re.compile(r"^Status\s*(Succeeded|Failed|Canceled|Completed.*)$")
# Agent and processor for five symbols and nine days of the sample source.
WORKERS_TIMEOUT_S = 90.0
# The completion sensor reads tasks finished at least SETTLE_SECONDS ago, every 30 s: the days
# show within two ticks after the settle time, plus the tick itself and the UI's refresh.
COMPLETION_TIMEOUT_S = SETTLE_SECONDS + 2 * 30 + 30
REFRESH_EVERY_MS = 10_000

PARTITION_STATUS_QUERY = """
query ($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    __typename
    ... on AssetNode {
      assetPartitionStatuses {
        __typename
        ... on TimePartitionStatuses { ranges { status startKey endKey } }
      }
    }
  }
}
"""


def all_tasks_finished(settings: Settings) -> bool:
    """True when the database has tasks and every one is done or no_data."""
    with connection(settings) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*), count(*) FILTER (WHERE status <> ALL(%s)) FROM tasks",
            ([str(status) for status in tasks.FINISHED],),
        )
        total, unfinished = cur.fetchone()
    return total > 0 and unfinished == 0


def test_backfill_a_range_from_the_ui_and_see_stock_prices_materialised(
    dagster_ui: DagsterUI, ui_workers: Settings, browser_page: Page, tmp_path: Path
) -> None:
    """Launch a backfill of stock_tasks over nine days in the launch dialog; once the workers
    have stored the bars, the stock_prices partitions view shows exactly those days
    materialised (by the completion sensor), and nothing else."""
    page = browser_page
    days = [d.isoformat() for d in trading_days(BACKFILL_START, BACKFILL_END)]
    selection_text = f"[{days[0]}...{days[-1]}]"
    dismiss_community_dialog(page)

    with step(page, tmp_path, "open stock_tasks"):
        page.goto(f"{dagster_ui.url}/assets/stock_tasks")
        expect(page.get_by_text("Fetch tasks for every active symbol").first).to_be_visible(
            timeout=CATALOG_TIMEOUT_MS
        )

    with step(page, tmp_path, f"choose {selection_text} in the launch dialog"):
        launch = open_launch_dialog(page)
        # The dialog starts on the last 90 days; the range is older.
        launch.get_by_text("Show all partitions").click()
        expect(launch.get_by_text("Showing the last 90 days")).to_be_hidden()
        expect(launch.get_by_role("button", name="All time")).to_be_visible()
        selection = launch.get_by_role("textbox").first
        selection.fill(selection_text)
        selection.press("Enter")
        expect(launch.get_by_text(f"{len(days)} partitions", exact=True)).to_be_visible()
        # stock_tasks' BackfillPolicy.single_run: one run for the whole range.
        expect(launch.get_by_text("Backfills all partitions in a single run.")).to_be_visible()
        launch_button = launch.get_by_role("button", name="Launch backfill", exact=True)
        expect(launch_button).to_be_enabled()
        page.screenshot(path=str(tmp_path / "b1-backfill-dialog.png"))

    with step(page, tmp_path, "launch the backfill and open it"):
        launch_button.click()
        launched = time.monotonic()
        expect(launch).to_be_hidden()
        # The toast "Created backfill <id>" links to the backfill's page.
        view = page.locator('a[href^="/runs/b/"]', has_text="View").first
        expect(view).to_be_visible()
        backfill_id = (view.get_attribute("href") or "").rsplit("/", 1)[-1]
        assert re.fullmatch(r"[a-z]{8}", backfill_id), f"no backfill id in the toast: {view}"
        view.click()
        expect(page).to_have_url(re.compile(rf"/runs/b/{backfill_id}"))
        expect(page.get_by_text(f"{days[0]}...{days[-1]}", exact=True)).to_be_visible()

    with step(page, tmp_path, f"backfill {backfill_id} succeeds"):
        # The "Status" field of the overview (the table's "Succeeded" column header is not it).
        status = page.get_by_text("Status", exact=True).locator("xpath=..")
        expect(status).to_have_text(BACKFILL_ENDED, timeout=BACKFILL_TIMEOUT_MS)
        ended = status.inner_text()
        shot = tmp_path / "b2-backfill-done.png"
        page.screenshot(path=str(shot))
        assert BACKFILL_ENDED.match(ended).group(1) == "Succeeded", (
            f"backfill {backfill_id} ended {ended!r}; {shot}, log {dagster_ui.log_file}"
        )
        expect(page.get_by_text("100% completed")).to_be_visible()
        backfill_s = time.monotonic() - launched

    # The workers' side, read from the database: every task the run emitted is finished.
    wait_until(
        lambda: all_tasks_finished(ui_workers),
        WORKERS_TIMEOUT_S,
        interval=1.0,
        what="the workers to finish the backfill's tasks",
    )
    workers_done_s = time.monotonic() - launched

    with step(page, tmp_path, f"stock_prices shows the {len(days)} days materialised"):
        page.goto(f"{dagster_ui.url}/assets/stock_prices?view=partitions")
        range_box = page.get_by_placeholder(re.compile(r"^ex: "))
        expect(range_box).to_be_visible(timeout=CATALOG_TIMEOUT_MS)
        range_box.fill(selection_text)
        range_box.press("Enter")
        expect(page.get_by_text(f"{len(days)} Partitions Selected", exact=True)).to_be_visible()
        materialised = page.get_by_text(f"Materialized ({len(days)})", exact=True)
        deadline = time.monotonic() + COMPLETION_TIMEOUT_S
        while True:  # the sensor reports within two ticks; the refresh button reloads the view
            try:
                expect(materialised).to_be_visible(timeout=REFRESH_EVERY_MS)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                page.get_by_role("button", name="refresh").first.click()
        shown_s = time.monotonic() - launched
        expect(page.get_by_text("Missing (0)", exact=True)).to_be_visible()
        page.screenshot(path=str(tmp_path / "b3-stock-prices-range.png"))
        # Only these days: over all partitions, still exactly nine materialised.
        page.get_by_role("button", name="All", exact=True).click()
        expect(page.get_by_text(f"{len(days)} Partitions Selected", exact=True)).to_be_hidden()
        expect(materialised).to_be_visible()
        # One day's detail: the sensor's materialisation, with its metadata.
        page.get_by_placeholder("Filter by name…").fill(days[-1])
        page.get_by_text(days[-1], exact=True).first.click()
        expect(page.get_by_text("Materialized", exact=True).first).to_be_visible()
        expect(page.get_by_text("completed_at", exact=True)).to_be_visible()
        page.screenshot(path=str(tmp_path / "b4-stock-prices-day.png"))

    # What the UI showed, read from the back end: one materialised range, exactly the days.
    node = dagster_ui.graphql(PARTITION_STATUS_QUERY, {"assetKey": {"path": ["stock_prices"]}})
    ranges = node["assetNodeOrError"]["assetPartitionStatuses"]["ranges"]
    assert [(r["status"], r["startKey"], r["endKey"]) for r in ranges] == [
        ("MATERIALIZED", days[0], days[-1])
    ], ranges
    print(
        f"backfill {backfill_id} of {len(days)} days: succeeded after {backfill_s:.0f} s, "
        f"workers done after {workers_done_s:.0f} s, stock_prices shown materialised in the "
        f"UI after {shown_s:.0f} s; screenshots in {tmp_path}"
    )
