"""Bad input on both topics: dead letters with reasons, symbols parked, the rest processed."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import msgspec
import pytest
from confluent_kafka import Consumer

from finpipe_core import contracts
from finpipe_core.contracts import BarBatch
from finpipe_core.kafka import consumer_config
from tests.fixtures.pipeline import assert_indicators_exact
from workers.processor.parking import parked_symbols, unpark

pytestmark = pytest.mark.integration

D = dt.date


def _bars(symbol: str, days: list[dt.date], close: list[float], task: str = "t") -> BarBatch:
    n = len(days)
    return BarBatch(
        schema_version=1,
        task_id=f"{task}-{symbol}",
        symbol=symbol,
        start=days[0],
        end=days[-1],
        status="ok",
        source="test",
        dates=days,
        open=close,
        high=[c + 1 for c in close],
        low=[c - 1 for c in close],
        close=close,
        adj_close=close,
        volume=[1000.0] * n,
        dividends=[0.0] * n,
        splits=[0.0] * n,
    )


def _dead_letters(settings, expected: int, timeout: float = 60) -> list:
    consumer = Consumer(consumer_config(settings, f"dlq-reader-{uuid.uuid4().hex[:6]}"))
    consumer.subscribe([settings.dlq_topic])
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append((msg.key(), msg.value(), contracts.parse_dlq_headers(msg.headers())))
    finally:
        consumer.close()
    return got


def test_bad_messages_go_to_the_dlq_and_park_only_their_symbol(pipeline_factory):
    pipe = pipeline_factory(source="sample")
    s = pipe.settings
    pipe.start("agent")
    pipe.start("processor")

    # Tasks topic: garbage, an unknown schema version, a symbol the source does not know.
    pipe.produce_raw(s.tasks_topic, b"AAPL", b"\x00\xffnot json")
    bad_version = msgspec.json.encode(
        {
            "schema_version": 7,
            "task_id": "x",
            "symbol": "IBM",
            "start": "2001-01-01",
            "end": "2001-02-01",
        }
    )
    pipe.produce_raw(s.tasks_topic, b"IBM", bad_version)
    unknown = pipe.send_tasks([("ZZZZ", D(2001, 1, 1), D(2001, 3, 1))])

    # Data topic: garbage with an unusable key, a wrong version, a NaN and a negative price.
    days = [D(2001, 1, 2), D(2001, 1, 3), D(2001, 1, 4)]
    pipe.produce_raw(s.data_topic, b"\xfe\xff", b"{{{{")
    wrong_version = msgspec.json.decode(contracts.encode(_bars("BADV", days, [5.0, 6.0, 7.0])))
    wrong_version["schema_version"] = 99
    pipe.produce_raw(s.data_topic, b"BADV", msgspec.json.encode(wrong_version))
    pipe.produce_raw(
        s.data_topic, b"BADN", contracts.encode(_bars("BADN", days, [5.0, float("nan"), 7.0]))
    )
    negative = msgspec.json.decode(contracts.encode(_bars("NEG", days, [5.0, 6.0, 7.0])))
    negative["close"][1] = -6.0
    pipe.produce_raw(s.data_topic, b"NEG", msgspec.json.encode(negative))
    # NEG is parked now: its next (valid) message must wait, not be applied out of order.
    later = [D(2001, 1, 5), D(2001, 1, 8)]
    pipe.produce_raw(
        s.data_topic, b"NEG", contracts.encode(_bars("NEG", later, [8.0, 9.0], task="later"))
    )

    # Good work around them is processed.
    good = pipe.send_tasks(
        [("MSFT", D(2001, 1, 1), D(2001, 12, 31)), ("IBM", D(2001, 1, 1), D(2001, 12, 31))]
    )
    pipe.wait_tasks(good + unknown)

    dead = _dead_letters(s, expected=6)
    by_source = sorted((h["finpipe.source.topic"], h["finpipe.error.class"]) for _, _, h in dead)
    assert by_source == sorted(
        [(s.tasks_topic, "ContractError")] * 2 + [(s.data_topic, "ContractError")] * 4
    )
    reasons = " | ".join(h["finpipe.error.message"] for _, _, h in dead)
    for fragment in ("malformed", "schema_version 7", "schema_version 99", "$.close[1]"):
        assert fragment in reasons
    assert {k for k, _, _ in dead} >= {b"AAPL", b"IBM", b"BADV", b"BADN", b"NEG"}

    conn = pipe.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT status, error FROM tasks WHERE task_id = %s", (unknown[0],))
        status, error = cur.fetchone()
        assert status == "no_data" and "ZZZZ" in error
        cur.execute("SELECT symbol FROM symbol_state WHERE status = 'parked' ORDER BY 1")
        assert [r[0] for r in cur.fetchall()] == ["BADN", "BADV", "NEG"]
        cur.execute("SELECT count(*) FROM prices WHERE symbol = 'NEG'")
        assert cur.fetchone()[0] == 0
    for symbol in ("MSFT", "IBM"):
        assert assert_indicators_exact(conn, symbol) > 200
    assert {p.symbol: p.held_messages for p in parked_symbols(s)} == {
        "BADN": 0,
        "BADV": 0,
        "NEG": 1,
    }

    # Unparking NEG skips the bad message and applies the held one.
    assert unpark(s, "NEG") == 1
    with conn.cursor() as cur:
        cur.execute("SELECT date FROM prices WHERE symbol = 'NEG' ORDER BY date")
        assert [r[0] for r in cur.fetchall()] == later
        cur.execute("SELECT status FROM symbol_state WHERE symbol = 'NEG'")
        assert cur.fetchone()[0] == "ok"
    assert assert_indicators_exact(conn, "NEG") == 2
    for worker in pipe.workers:
        worker.assert_alive_or_stopped()
