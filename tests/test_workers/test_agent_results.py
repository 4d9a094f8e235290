"""What the agent publishes for a task: bars in checked chunks, or a result whose reason
passes the contract, never an exception out of its loop (no Kafka needed here)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from finpipe_core import contracts
from finpipe_core.exceptions import ContractError
from workers.agent.main import checked_messages, result_message
from workers.sources.synthetic import SyntheticSource

D = dt.date
TASK = contracts.FetchTask(
    schema_version=1, task_id="t-AGT", symbol="AGT", start=D(2015, 1, 1), end=D(2015, 12, 31)
)


def _bars():
    return SyntheticSource().fetch("AGT", TASK.start, TASK.end)


def test_good_bars_are_published_in_checked_chunks():
    messages = checked_messages(TASK, _bars(), 100)
    assert [m.chunk for m in messages] == list(range(len(messages)))
    for m in messages:
        assert contracts.decode_bars(contracts.encode(m)) == m


@pytest.mark.parametrize(
    "breakage", ["low_above_high", "repeated_date", "negative_price", "nan_close"]
)
def test_source_bars_that_break_the_contract_raise_a_contract_error(breakage):
    bars = _bars()
    if breakage == "low_above_high":
        bars.low[3] = bars.high[3] * 2
    elif breakage == "repeated_date":
        bars.dates[4] = bars.dates[3]
    elif breakage == "negative_price":
        bars.open[5] = -1.0
    else:
        bars.close[6] = np.nan
    with pytest.raises(ContractError, match="source bars break the contract"):
        checked_messages(TASK, bars, 100)


def test_reasons_built_in_code_pass_the_contract():
    reason = "HTTP 502 from upstream\x00\x1b[31m" + "x" * 5000 + "\ud800"
    message = result_message(TASK, "failed", reason, "yfinance")
    decoded = contracts.decode_bars(contracts.encode(message))
    assert decoded.status == "failed"
    assert len(decoded.reason) == contracts.MAX_REASON_LENGTH
    assert "\x00" not in decoded.reason and "\x1b" not in decoded.reason
    # An empty reason still says something (the contract needs one).
    assert contracts.decode_bars(contracts.encode(result_message(TASK, "no_data", "", "csv")))
