"""The messages on finpipe's topics: one home for their schemas, encoding and validation.

Values are JSON encoded with msgspec: strict (no type coercion, unknown fields rejected),
fast, and still readable with any Kafka console tool. Every value carries ``schema_version``;
a consumer rejects versions it does not know rather than guessing. Keys are the symbol, so all
messages of one symbol land in one partition and are processed in order.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Annotated, Final, Literal

import msgspec

from finpipe_core.exceptions import ContractError

SCHEMA_VERSION: Final = 1
# Yahoo-style tickers: AAPL, BRK-B, RDS.A, ^GSPC, EURUSD=X, BTC-USD. Upper case only, no
# quotes, spaces or semicolons, so a symbol is safe in SQL, Kafka keys, file names and URLs.
# \Z, not $: msgspec matches with re.search, and $ also matches before a trailing newline.
SYMBOL_PATTERN: Final = r"^\^?[A-Z0-9]{1,10}(?:[.\-=][A-Z0-9]{1,10})?\Z"
_SYMBOL_RE: Final = re.compile(SYMBOL_PATTERN)
# Oldest date a task may ask for, and the most bars one message may carry.
MIN_DATE: Final = dt.date(1970, 1, 1)
MAX_BARS_PER_MESSAGE: Final = 5000

Symbol = Annotated[str, msgspec.Meta(pattern=SYMBOL_PATTERN, max_length=22)]
PositivePrice = Annotated[float, msgspec.Meta(gt=0.0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0.0)]
# Free text travels as JSON and SQL parameters only; control characters (NUL above all,
# which PostgreSQL text refuses) are rejected at the boundary.
ShortText = Annotated[str, msgspec.Meta(max_length=2000, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*\Z")]
TaskId = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[\x21-\x7e]+\Z")]
BarsStatus = Literal["ok", "no_data", "failed"]


_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
MAX_REASON_LENGTH: Final = 2000


def clean_reason(text: str) -> str:
    """``text`` made fit for a ``ShortText`` reason: control characters become spaces (an
    exception's message may quote raw bytes), cut to ``MAX_REASON_LENGTH`` characters."""
    text = text.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates either
    return _CONTROL_RE.sub(" ", text)[:MAX_REASON_LENGTH]


def validate_symbol(symbol: str) -> str:
    """Return ``symbol`` if it matches SYMBOL_PATTERN, else raise ContractError naming it."""
    if not isinstance(symbol, str) or not _SYMBOL_RE.fullmatch(symbol):
        raise ContractError(f"invalid symbol {symbol!r}: must match {SYMBOL_PATTERN}")
    return symbol


def make_task_id(symbol: str, start: dt.date, end: dt.date, variant: str = "") -> str:
    """Deterministic id of a fetch task, so a re-sent task is recognisable downstream.

    :param variant: distinguishes a deliberate re-fetch of the same range (e.g. the run id of
        a forced correction) from a re-send of the original task.
    """
    key = f"{symbol}|{start.isoformat()}|{end.isoformat()}|{variant}"
    digest = hashlib.sha256(key.encode())
    return f"{symbol}:{start.isoformat()}:{end.isoformat()}:{digest.hexdigest()[:12]}"


class _Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    schema_version: int

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"unknown schema_version {self.schema_version}; this build reads {SCHEMA_VERSION}"
            )


class FetchTask(_Message, frozen=True, kw_only=True):
    """A request on ``Stock_topic``: fetch daily bars of ``symbol`` for ``start..end``."""

    task_id: TaskId
    symbol: Symbol
    start: dt.date
    end: dt.date  # inclusive
    requested_by: Annotated[str, msgspec.Meta(max_length=200, pattern=r"^[\x20-\x7e]*\Z")] = ""
    force: bool = False  # re-fetch even if bars are stored (corrections)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        if self.start < MIN_DATE:
            raise ValueError(f"start {self.start} is before {MIN_DATE}")


class BarBatch(_Message, frozen=True, kw_only=True):
    """Bars for one task chunk on ``Stock_data_topic``, columnar; or a no_data/failed result.

    OHLC and volume are *raw*: as traded, not adjusted for splits, so a stored row never
    changes basis. ``splits`` holds the split ratio on its ex-date (4.0 for 4:1; 0 means no
    split), and the processor derives split-adjusted prices from raw bars and every split it
    knows. Sources that hand out split-adjusted prices (yfinance) un-adjust them first.
    ``adj_close`` is the source's split-and-dividend adjusted close, stored for reference.
    ``start``/``end`` are the task's range; ``chunk`` counts 0 .. ``chunks - 1`` within it.
    """

    task_id: TaskId
    symbol: Symbol
    start: dt.date
    end: dt.date
    status: BarsStatus
    source: Annotated[str, msgspec.Meta(max_length=50)]
    chunk: Annotated[int, msgspec.Meta(ge=0)] = 0
    chunks: Annotated[int, msgspec.Meta(ge=1)] = 1
    reason: ShortText | None = None
    dates: Annotated[list[dt.date], msgspec.Meta(max_length=MAX_BARS_PER_MESSAGE)] = []
    open: list[PositivePrice] = []
    high: list[PositivePrice] = []
    low: list[PositivePrice] = []
    close: list[PositivePrice] = []
    adj_close: list[PositivePrice] = []
    volume: list[NonNegative] = []
    dividends: list[NonNegative] = []
    splits: list[NonNegative] = []

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.chunk >= self.chunks:
            raise ValueError(f"chunk {self.chunk} is not below chunks {self.chunks}")
        n = len(self.dates)
        for name in ("open", "high", "low", "close", "adj_close", "volume", "dividends", "splits"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} values, dates has {n}")
        if self.status == "ok" and n == 0:
            raise ValueError("status 'ok' needs at least one bar")
        if self.status != "ok" and n:
            raise ValueError(f"status {self.status!r} must carry no bars")
        if self.status != "ok" and not self.reason:
            raise ValueError(f"status {self.status!r} needs a reason")
        if any(b <= a for a, b in zip(self.dates, self.dates[1:], strict=False)):
            raise ValueError("dates must be strictly increasing")
        if self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        if n and not (self.start <= self.dates[0] and self.dates[-1] <= self.end):
            raise ValueError(f"dates fall outside the task range {self.start}..{self.end}")
        # Only low <= high: real feeds break low <= open/close <= high by a tick now and then.
        for i in range(n):
            if self.low[i] > self.high[i]:
                raise ValueError(
                    f"bar {self.dates[i]}: low {self.low[i]} above high {self.high[i]}"
                )


_ENCODER: Final = msgspec.json.Encoder()
_TASK_DECODER: Final = msgspec.json.Decoder(FetchTask)
_BARS_DECODER: Final = msgspec.json.Decoder(BarBatch)


def encode(message: FetchTask | BarBatch) -> bytes:
    """Serialise a message to its wire bytes."""
    return _ENCODER.encode(message)


def _decode(decoder: msgspec.json.Decoder, data: bytes, max_bytes: int) -> object:
    if len(data) > max_bytes:
        raise ContractError(f"payload is {len(data)} bytes, over the {max_bytes}-byte limit")
    try:
        return decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        # msgspec names the field, e.g. "Expected `float`, got `str` - at `$.close[3]`".
        raise ContractError(str(exc)) from exc


def decode_task(data: bytes, max_bytes: int = 900_000) -> FetchTask:
    """Parse and validate a ``Stock_topic`` value; ContractError says which field is wrong."""
    result = _decode(_TASK_DECODER, data, max_bytes)
    assert isinstance(result, FetchTask)
    return result


def decode_bars(data: bytes, max_bytes: int = 900_000) -> BarBatch:
    """Parse and validate a ``Stock_data_topic`` value; ContractError says which field is wrong."""
    result = _decode(_BARS_DECODER, data, max_bytes)
    assert isinstance(result, BarBatch)
    return result


# --- Dead-letter topic ----------------------------------------------------------------------
# A DLQ record keeps the original key and value bytes untouched; these headers say where it
# came from and why it could not be processed.
DLQ_HEADER_TOPIC: Final = "finpipe.source.topic"
DLQ_HEADER_PARTITION: Final = "finpipe.source.partition"
DLQ_HEADER_OFFSET: Final = "finpipe.source.offset"
DLQ_HEADER_ERROR_CLASS: Final = "finpipe.error.class"
DLQ_HEADER_ERROR: Final = "finpipe.error.message"
DLQ_HEADER_FAILED_AT: Final = "finpipe.failed_at"


def dlq_headers(
    topic: str, partition: int, offset: int, error: BaseException
) -> list[tuple[str, bytes]]:
    """Headers of a dead-letter record for a message that failed with ``error``."""
    return [
        (DLQ_HEADER_TOPIC, topic.encode()),
        (DLQ_HEADER_PARTITION, str(partition).encode()),
        (DLQ_HEADER_OFFSET, str(offset).encode()),
        (DLQ_HEADER_ERROR_CLASS, type(error).__name__.encode()),
        (DLQ_HEADER_ERROR, clean_reason(str(error)).encode("utf-8", "replace")),
        (DLQ_HEADER_FAILED_AT, dt.datetime.now(dt.UTC).isoformat().encode()),
    ]


def parse_dlq_headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """The finpipe headers of a dead-letter record as text."""
    return {k: v.decode("utf-8", "replace") for k, v in headers or [] if k.startswith("finpipe.")}
