"""The report asset shows the latest indicators of the active symbols as a table and a chart."""

from __future__ import annotations

import base64
import datetime as dt
import re

import dagster as dg
import pytest

from finpipe_core import contracts
from finpipe_dagster.assets import indicator_report
from finpipe_dagster.resources import PostgresResource
from finpipe_manager.universe import UniverseEntry, sync_universe
from workers.agent.main import chunk_messages
from workers.processor.batch import BatchWriter, InputMessage
from workers.sources.synthetic import SyntheticSource

pytestmark = pytest.mark.integration


def test_report_lists_each_symbol_with_its_latest_values(clean_db, local_stack):
    # Fill the tables through the processor's own code path.
    symbols = ["REPA", "REPB"]
    sync_universe(clean_db, [UniverseEntry(s, s) for s in symbols])
    start, end = dt.date(2012, 1, 1), dt.date(2012, 12, 31)
    messages = []
    for symbol in symbols:
        task = contracts.FetchTask(
            schema_version=1, task_id=f"t-{symbol}", symbol=symbol, start=start, end=end
        )
        bars = SyntheticSource().fetch(symbol, start, end)
        for m in chunk_messages(task, bars, 1000):
            messages.append(
                InputMessage("t", 0, len(messages), symbol.encode(), contracts.encode(m))
            )
    BatchWriter(clean_db, "report-test", 900_000).apply(messages)
    clean_db.commit()

    result = dg.materialize([indicator_report], resources={"postgres": PostgresResource()})
    assert result.success
    [event] = result.asset_materializations_for_node("indicator_report")
    metadata = event.metadata
    table = metadata["summary"].value
    with clean_db.cursor() as cur:
        for symbol in symbols:
            cur.execute(
                "SELECT p.close, i.rsi_14 FROM prices p JOIN indicators i "
                "USING (symbol, date) WHERE symbol = %s ORDER BY date DESC LIMIT 1",
                (symbol,),
            )
            close, rsi = cur.fetchone()
            row = next(line for line in table.splitlines() if line.startswith(f"| {symbol} |"))
            assert f"{close:,.2f}" in row and f"{rsi:,.2f}" in row
    assert metadata["symbols"].value == 2
    assert metadata["bars"].value == 2 * len(SyntheticSource().fetch("REPA", start, end))
    image = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", metadata["chart"].value)
    assert image and base64.b64decode(image.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
