"""The message contracts accept what they promise and reject the rest, naming the field."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from finpipe_core import contracts
from finpipe_core.contracts import BarBatch, FetchTask, decode_bars, decode_task, encode
from finpipe_core.exceptions import ContractError, PoisonMessageError

GOOD_TASK = {
    "schema_version": 1,
    "task_id": "AAPL:2024-01-02:2024-01-31:abc",
    "symbol": "AAPL",
    "start": "2024-01-02",
    "end": "2024-01-31",
    "requested_by": "run-1",
}
GOOD_BARS = {
    "schema_version": 1,
    "task_id": "AAPL:2024-01-02:2024-01-03:abc",
    "symbol": "AAPL",
    "start": "2024-01-02",
    "end": "2024-01-05",
    "status": "ok",
    "source": "sample",
    "dates": ["2024-01-02", "2024-01-03"],
    "open": [10.0, 11.0],
    "high": [12.0, 12.5],
    "low": [9.5, 10.5],
    "close": [11.0, 12.0],
    "adj_close": [10.9, 11.9],
    "volume": [1000.0, 1200.0],
    "dividends": [0.0, 0.0],
    "splits": [0.0, 0.0],
}


def _json(obj: dict) -> bytes:
    return msgspec.json.encode(obj)


def _with(base: dict, **changes: object) -> dict:
    out = dict(base)
    for key, value in changes.items():
        if value is _DROP:
            out.pop(key)
        else:
            out[key] = value
    return out


_DROP = object()


class TestFetchTask:
    def test_round_trip(self) -> None:
        task = decode_task(_json(GOOD_TASK))
        assert task.symbol == "AAPL"
        assert task.start == dt.date(2024, 1, 2)
        assert decode_task(encode(task)) == task

    @pytest.mark.parametrize(
        ("change", "names"),
        [
            ({"start": 20240102}, "$.start"),
            ({"schema_version": "1"}, "$.schema_version"),
            ({"symbol": "AAPL'; DROP TABLE prices;--"}, "$.symbol"),
            ({"symbol": "aapl"}, "$.symbol"),
            ({"end": _DROP}, "`end`"),
            ({"task_id": _DROP}, "`task_id`"),
            ({"schema_version": 2}, "schema_version"),
            ({"start": "2024-02-01"}, "after end"),
            ({"start": "1969-12-31"}, "before 1970"),
            ({"surprise": 1}, "surprise"),
        ],
    )
    def test_rejects_malformed(self, change: dict, names: str) -> None:
        with pytest.raises(ContractError) as err:
            decode_task(_json(_with(GOOD_TASK, **change)))
        assert names in str(err.value)

    @pytest.mark.parametrize("raw", [b"", b"garbage", b"\xff\xfe", b"[]", b'{"schema_version": 1'])
    def test_rejects_garbage_bytes(self, raw: bytes) -> None:
        with pytest.raises(ContractError):
            decode_task(raw)

    def test_rejects_oversize_payload_before_parsing(self) -> None:
        payload = _json(_with(GOOD_TASK, requested_by="x" * 2_000))
        with pytest.raises(ContractError, match="over the 1024-byte limit"):
            decode_task(payload, max_bytes=1024)

    def test_contract_errors_are_poison_messages(self) -> None:
        # The workers route PoisonMessageError to the DLQ; a contract error must be one.
        assert issubclass(ContractError, PoisonMessageError)


class TestBarBatch:
    def test_round_trip(self) -> None:
        bars = decode_bars(_json(GOOD_BARS))
        assert bars.dates == [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
        assert decode_bars(encode(bars)) == bars

    @pytest.mark.parametrize(
        ("change", "names"),
        [
            ({"close": [11.0, "12"]}, "$.close[1]"),
            ({"close": [11.0, None]}, "$.close[1]"),  # NaN is encoded as null in JSON
            ({"close": [11.0, -1.0]}, "$.close[1]"),
            ({"open": [0.0, 11.0]}, "$.open[0]"),
            ({"volume": [1000.0, -5.0]}, "$.volume[1]"),
            ({"high": [12.0]}, "high has 1 values"),
            ({"dates": ["2024-01-03", "2024-01-02"]}, "strictly increasing"),
            ({"dates": ["2024-01-02", "not-a-date"]}, "$.dates[1]"),
            ({"status": "maybe"}, "$.status"),
            ({"schema_version": 0}, "schema_version"),
            ({"chunk": 3, "chunks": 2}, "chunk 3"),
            ({"low": [12.5, 10.5]}, "above high"),
            ({"dates": ["2024-01-02", "2024-01-08"]}, "outside the task range"),
            ({"start": "2024-01-06"}, "after end"),
            ({"symbol": "A B"}, "$.symbol"),
        ],
    )
    def test_rejects_malformed(self, change: dict, names: str) -> None:
        with pytest.raises(ContractError) as err:
            decode_bars(_json(_with(GOOD_BARS, **change)))
        assert names in str(err.value)

    def test_no_data_result_needs_reason_and_no_bars(self) -> None:
        empty = {
            k: []
            for k in (
                "dates",
                "open",
                "high",
                "low",
                "close",
                "adj_close",
                "volume",
                "dividends",
                "splits",
            )
        }
        ok = decode_bars(_json(_with(GOOD_BARS, status="no_data", reason="delisted", **empty)))
        assert ok.status == "no_data"
        with pytest.raises(ContractError, match="needs a reason"):
            decode_bars(_json(_with(GOOD_BARS, status="failed", **empty)))
        with pytest.raises(ContractError, match="must carry no bars"):
            decode_bars(_json(_with(GOOD_BARS, status="no_data", reason="x")))

    def test_rejects_too_many_bars(self) -> None:
        n = contracts.MAX_BARS_PER_MESSAGE + 1
        start = dt.date(2000, 1, 1)
        big = _with(
            GOOD_BARS,
            dates=[(start + dt.timedelta(days=i)).isoformat() for i in range(n)],
            start=start.isoformat(),
            end=(start + dt.timedelta(days=n)).isoformat(),
            **{k: [1.0] * n for k in ("open", "high", "low", "close", "adj_close", "volume")},
            dividends=[0.0] * n,
            splits=[0.0] * n,
        )
        with pytest.raises(ContractError, match=r"\$\.dates"):
            decode_bars(_json(big), max_bytes=10_000_000)

    def test_nan_built_in_code_is_caught_on_decode(self) -> None:
        # Building a struct in code skips msgspec's field constraints, and a NaN passes the
        # ordering checks; msgspec writes NaN as null, which the consumer side rejects.
        fields = {**msgspec.json.decode(_json(GOOD_BARS)), "close": [11.0, float("nan")]}
        fields["dates"] = [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
        fields["start"], fields["end"] = dt.date(2024, 1, 2), dt.date(2024, 1, 5)
        with pytest.raises(ContractError, match=r"\$\.close\[1\]"):
            decode_bars(encode(BarBatch(**fields)))


@pytest.mark.parametrize(
    "symbol", ["AAPL", "BRK-B", "RDS.A", "^GSPC", "EURUSD=X", "BTC-USD", "7203.T"]
)
def test_real_ticker_shapes_are_valid(symbol: str) -> None:
    assert contracts.validate_symbol(symbol) == symbol


@pytest.mark.parametrize(
    "symbol", ["", "aapl", "AAPL;", "A'B", 'A"B', "A B", "AAPL--", "X" * 30, "../etc", "Ω"]
)
def test_malicious_or_malformed_symbols_are_rejected(symbol: str) -> None:
    with pytest.raises(ContractError, match="invalid symbol"):
        contracts.validate_symbol(symbol)


def test_task_id_is_deterministic_and_range_specific() -> None:
    a = contracts.make_task_id("AAPL", dt.date(2024, 1, 2), dt.date(2024, 1, 31))
    assert a == contracts.make_task_id("AAPL", dt.date(2024, 1, 2), dt.date(2024, 1, 31))
    assert a != contracts.make_task_id("AAPL", dt.date(2024, 1, 2), dt.date(2024, 2, 1))
    assert a != contracts.make_task_id("MSFT", dt.date(2024, 1, 2), dt.date(2024, 1, 31))
    assert (
        FetchTask(
            schema_version=1,
            task_id=a,
            symbol="AAPL",
            start=dt.date(2024, 1, 2),
            end=dt.date(2024, 1, 31),
        ).task_id
        == a
    )
