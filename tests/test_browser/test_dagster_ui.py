"""The Dagster UI as a person uses it: headless Chromium drives ``dagster dev``.

Opens the asset catalog, dismisses the "Join the Dagster community" dialog, finds the finpipe
assets, opens ``stock_tasks``, materialises one partition (the last completed trading day)
through the launch dialog and follows the run to "Success". GraphQL, PostgreSQL and Kafka are
only read afterwards to confirm what the UI did: one run for that one partition, five tasks
(the sample universe) in the private database and on the private topic.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, TopicPartition
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

from finpipe_core.calendar import last_completed_session
from finpipe_core.db import connection
from finpipe_core.kafka import consumer_config

if TYPE_CHECKING:  # the fixture's type, for readers; conftest is not imported at run time
    from tests.test_browser.conftest import DagsterUI

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FINPIPE_ASSETS = ("stock_tasks", "stock_prices", "stock_indicators")
SAMPLE_SYMBOLS = {"AAPL", "FB", "GOOG", "IBM", "MSFT"}
# The code location loads in the background after the webserver answers.
CATALOG_TIMEOUT_MS = 90_000
# Queued -> launched by the daemon -> a run worker process imports the code and runs the step.
RUN_TIMEOUT_MS = 120_000
RUN_STATUS = re.compile(r"^(Success|Failure|Canceled|Canceling)$")

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
                timeout=CATALOG_TIMEOUT_MS)
        # The partitioned assets' status column: "6,766 partitions" once it has loaded.
        expect(page.get_by_text(re.compile(r"^[\d,]+ partitions$")).first).to_be_visible()
        page.screenshot(path=str(tmp_path / "1-catalog.png"))

    with step(page, tmp_path, "open stock_tasks"):
        page.locator('a[href="/assets/stock_tasks"]').first.click()
        expect(page).to_have_url(re.compile(r"/assets/stock_tasks$"))
        expect(page.get_by_text("Fetch tasks for every active symbol").first).to_be_visible()

    with step(page, tmp_path, f"choose partition {partition} in the launch dialog"):
        page.locator("button", has_text="Materialize…").click()
        launch = page.get_by_role("dialog").filter(
            has_text="Launch runs to materialize stock_tasks")
        expect(launch).to_be_visible()
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
        cur.execute("SELECT symbol, status, start_date, end_date FROM tasks "
                    "WHERE requested_by = %s", (run_id,))
        rows = cur.fetchall()
    day = dt.date.fromisoformat(partition)
    assert {r[0] for r in rows} == SAMPLE_SYMBOLS, (rows, final)
    assert all(r[1] == "published" and r[2] <= day <= r[3] for r in rows), (rows, final)

    consumer = Consumer(consumer_config(settings, "browser-test-reader"))
    try:
        topic = settings.tasks_topic
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        on_topic = sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                       for p in parts)
    finally:
        consumer.close()
    assert on_topic == len(SAMPLE_SYMBOLS), f"{on_topic} messages on {topic}; {final}"
    print(f"run {run_id} for partition {partition}: Success; community dialog dismissed on "
          f"{dialog_seen or 'never shown'}; screenshots in {tmp_path}")
