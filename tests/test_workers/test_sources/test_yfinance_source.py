"""YFinanceSource offline: yfinance's own parsing on Yahoo-shaped v8 chart documents.

``YfData.get``/``cache_get`` (or, for the HTTP-status tests, the HTTP session underneath) are
replaced by a fake Yahoo built from known *raw* bars and splits; it answers split-adjusted
prices the way Yahoo does (float32 values, every split applied to earlier bars), and the tests
check that the source gives the raw bars back. A guard fails any test that opens a connection
to a non-loopback address.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import socket
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import curl_cffi.curl
import curl_cffi.requests
import curl_cffi.requests.exceptions as curl_errors
import numpy as np
import pytest
import requests
import yfinance as yf
from pandas.errors import Pandas4Warning
from yfinance.data import YfData
from yfinance.exceptions import (
    YFDataException,
    YFPricesMissingError,
    YFRateLimitError,
    YFTzMissingError,
)

from finpipe_core.exceptions import ContractError
from workers.sources.base import NoDataError, SourceError, SourceUnavailableError
from workers.sources.yfinance_source import (
    YFinanceSource,
    install_warning_filters,
    translate_error,
)

# exchange-calendars (the trading calendar) trips this pandas 3 deprecation inside pandas.
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*returning an ndarray that drops timezone:pandas.errors.Pandas4Warning"
)

NEW_YORK = ZoneInfo("America/New_York")
CHART = "/v8/finance/chart/"


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    """A New York wall-clock time as an aware datetime."""
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=NEW_YORK)


def session_open(day: dt.date) -> int:
    """Yahoo stamps a daily bar (and its split/dividend events) with the session's open."""
    return int(at(day, 9, 30).timestamp())


def f32(x: float) -> float:
    """Yahoo's numbers are float32 values printed as doubles."""
    return float(np.float32(x))


# --- the network guard ---------------------------------------------------------------------


def _is_loopback(host: Any) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail the test if anything connects (or resolves a name) beyond the loopback address.

    Python sockets are checked by address; libcurl (curl_cffi, yfinance's HTTP client) does its
    own networking in C, so every curl_cffi request is refused outright.
    """
    attempts: list[str] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            attempts.append(f"socket connect to {address!r}")
            raise OSError(f"test guard: no network ({address!r})")

    def connect(sock: socket.socket, address: Any) -> None:
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        check(sock, address)
        return real_connect_ex(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_loopback(host if not isinstance(host, bytes) else host.decode()):
            attempts.append(f"name lookup of {host!r}")
            raise socket.gaierror(f"test guard: no network ({host!r})")
        return real_getaddrinfo(host, *args, **kwargs)

    def curl_request(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        attempts.append(f"curl_cffi {method} {url}")
        raise curl_errors.ConnectionError(f"test guard: no network ({url})")

    def curl_perform(self: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append("libcurl perform")
        raise curl_errors.ConnectionError("test guard: no network (libcurl)")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(curl_cffi.requests.Session, "request", curl_request)
    monkeypatch.setattr(curl_cffi.curl.Curl, "perform", curl_perform)
    yield attempts
    assert not attempts, f"the test tried to reach the network: {attempts}"


# --- a fake Yahoo ----------------------------------------------------------------------------


class FakeResponse:
    """The parts of a curl_cffi/requests response yfinance reads."""

    def __init__(self, status: int, body: Any, url: str = "https://query2.finance.yahoo.com/"):
        self.status_code = status
        self.text = body if isinstance(body, str) else json.dumps(body)
        self.content = self.text.encode()
        self.url = url
        self.ok = status < 400
        self.reason = "fake"

    def json(self) -> Any:
        return json.loads(self.text)

    def raise_for_status(self) -> None:
        if not self.ok:
            raise curl_errors.HTTPError(f"HTTP Error {self.status_code}", 0, self)


@dataclass
class FakeYahoo:
    """Raw daily bars of one symbol and its splits, served the way Yahoo's chart API does."""

    symbol: str
    raw_close: dict[dt.date, float]
    splits: dict[dt.date, float] = field(default_factory=dict)
    dividends: dict[dt.date, float] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Set to make every request fail: a callable (url, params) -> FakeResponse, or raising.
    failure: Callable[[str, dict[str, Any]], FakeResponse] | None = None

    # Raw OHLCV derived from the close, with few enough digits to compare exactly.
    def raw(self, day: dt.date) -> dict[str, float]:
        close = self.raw_close[day]
        return {
            "open": close - 0.5,
            "high": close + 1.25,
            "low": close - 1.5,
            "close": close,
            "volume": 1000.0 + 10 * day.day,
        }

    def factor(self, day: dt.date) -> float:
        """Yahoo divides a bar by every split dated after it, whatever range was asked."""
        return float(np.prod([r for d, r in self.splits.items() if d > day]))

    def adjusted(self, day: dt.date) -> dict[str, float]:
        raw, f = self.raw(day), self.factor(day)
        out = {k: f32(raw[k] / f) for k in ("open", "high", "low", "close")}
        out["volume"] = raw["volume"] * f
        out["adjclose"] = f32(raw["close"] / f * 0.995)
        return out

    def chart(self, params: dict[str, Any]) -> dict[str, Any]:
        def wanted(day: dt.date) -> bool:
            if "period1" in params:
                return params["period1"] <= session_open(day) < params["period2"]
            return True

        days = [d for d in sorted(self.raw_close) if wanted(d)]
        if params.get("range") == "1d":
            days = days[-1:]
        result: dict[str, Any] = {
            "meta": {
                "currency": "USD",
                "symbol": self.symbol,
                "exchangeName": "NMS",
                "fullExchangeName": "NasdaqGS",
                "instrumentType": "EQUITY",
                "firstTradeDate": session_open(min(self.raw_close)),
                "regularMarketTime": session_open(max(self.raw_close)),
                "hasPrePostMarketData": True,
                "gmtoffset": -14400,
                "timezone": "EDT",
                "exchangeTimezoneName": "America/New_York",
                "priceHint": 2,
                "dataGranularity": "1d",
                "range": params.get("range", ""),
                "validRanges": [
                    "1d",
                    "5d",
                    "1mo",
                    "3mo",
                    "6mo",
                    "1y",
                    "2y",
                    "5y",
                    "10y",
                    "ytd",
                    "max",
                ],
            },
            "indicators": {"quote": [{}], "adjclose": [{}]},
        }
        if days:
            adj = [self.adjusted(d) for d in days]
            result["timestamp"] = [session_open(d) for d in days]
            result["indicators"] = {
                "quote": [
                    {k: [a[k] for a in adj] for k in ("open", "high", "low", "close", "volume")}
                ],
                "adjclose": [{"adjclose": [a["adjclose"] for a in adj]}],
            }
            result["events"] = {
                "splits": {
                    str(session_open(d)): {
                        "date": session_open(d),
                        "numerator": r,
                        "denominator": 1.0,
                        "splitRatio": f"{r:g}:1",
                    }
                    for d, r in self.splits.items()
                    if wanted(d)
                },
                "dividends": {
                    str(session_open(d)): {
                        "amount": f32(v / self.factor(d)),
                        "date": session_open(d),
                    }
                    for d, v in self.dividends.items()
                    if wanted(d)
                },
            }
        return {"chart": {"result": [result], "error": None}}

    def answer(self, url: str, params: dict[str, Any]) -> FakeResponse:
        self.calls.append((url, dict(params)))
        if self.failure is not None:
            return self.failure(url, params)
        if CHART in url:
            symbol = url.rsplit("/", 1)[-1]
            if symbol == self.symbol:
                return FakeResponse(200, self.chart(params), url)
            return FakeResponse(
                404,
                {
                    "chart": {
                        "result": None,
                        "error": {
                            "code": "Not Found",
                            "description": "No data found, symbol may be delisted",
                        },
                    }
                },
            )
        if "quoteSummary" in url:
            return FakeResponse(
                404,
                {
                    "quoteSummary": {
                        "result": None,
                        "error": {"code": "Not Found", "description": "Quote not found for symbol"},
                    }
                },
            )
        return FakeResponse(404, "Not Found", url)

    def chart_calls(self) -> list[dict[str, Any]]:
        """Parameters of the price requests (not the timezone lookups)."""
        return [p for u, p in self.calls if CHART in u and "range" not in p]


def install(monkeypatch: pytest.MonkeyPatch, yahoo: FakeYahoo) -> FakeYahoo:
    def get(_self: Any, url: str, params: Any = None, timeout: Any = 30) -> FakeResponse:
        return yahoo.answer(url, dict(params or {}))

    monkeypatch.setattr(YfData, "get", get)
    monkeypatch.setattr(YfData, "cache_get", get)
    return yahoo


# --- fixtures ----------------------------------------------------------------------------------

# Ten sessions, Monday 4 to Friday 15 March 2024.
MARCH = [dt.date(2024, 3, d) for d in (4, 5, 6, 7, 8, 11, 12, 13, 14, 15)]
CLOSES = [100.0, 101.0, 102.5, 103.0, 104.25, 52.5, 53.0, 54.75, 55.0, 56.5]
AFTER_CLOSE_15TH = at(dt.date(2024, 3, 15), 18)  # 15 March's session is complete
MONTHS_LATER = at(dt.date(2024, 6, 3), 18)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("yfinance-cache"))


@pytest.fixture
def make_source(cache_dir: str) -> Callable[..., YFinanceSource]:
    def make(now: dt.datetime = AFTER_CLOSE_15TH, **kwargs: Any) -> YFinanceSource:
        return YFinanceSource(clock=lambda: now, cache_dir=cache_dir, **kwargs)

    return make


@pytest.fixture
def yahoo_factory(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeYahoo]:
    def make(symbol: str, closes: list[float] = CLOSES, **kwargs: Any) -> FakeYahoo:
        return install(
            monkeypatch, FakeYahoo(symbol, dict(zip(MARCH, closes, strict=True)), **kwargs)
        )

    return make


@pytest.fixture(autouse=True)
def quiet_pandas() -> Iterator[None]:
    """pytest turns DeprecationWarnings back on per test; keep yfinance's own ones quiet."""
    with warnings.catch_warnings():
        install_warning_filters()
        yield


def expect_raw(yahoo: FakeYahoo, days: list[dt.date], bars: Any) -> None:
    assert bars.dates == days
    raw = [yahoo.raw(d) for d in days]
    for key, column in (
        ("open", bars.open),
        ("high", bars.high),
        ("low", bars.low),
        ("close", bars.close),
        ("volume", bars.volume),
    ):
        assert column.tolist() == [r[key] for r in raw], key
    assert bars.adj_close.tolist() == [yahoo.adjusted(d)["adjclose"] for d in days]
    assert bars.splits.tolist() == [yahoo.splits.get(d, 0.0) for d in days]


# --- tests ---------------------------------------------------------------------------------


class TestRawPrices:
    def test_normal_range_without_splits(self, make_source, yahoo_factory) -> None:
        yahoo = yahoo_factory("PLAIN")
        bars = make_source().fetch("PLAIN", MARCH[0], MARCH[-1])
        expect_raw(yahoo, MARCH, bars)
        assert bars.source == "yfinance" and bars.symbol == "PLAIN"
        assert bars.dividends.tolist() == [0.0] * len(MARCH)

    def test_split_inside_range_gives_raw_prices_back(self, make_source, yahoo_factory) -> None:
        # 2:1 on 11 March: Yahoo answers the five earlier days halved, volume doubled.
        yahoo = yahoo_factory("SPLIT", splits={MARCH[5]: 2.0})
        assert yahoo.adjusted(MARCH[0])["close"] == 50.0
        bars = make_source().fetch("SPLIT", MARCH[0], MARCH[-1])
        expect_raw(yahoo, MARCH, bars)
        assert bars.close.tolist()[4:6] == [104.25, 52.5]
        assert bars.volume[0] == 1040.0 and bars.splits[5] == 2.0

    def test_split_after_old_range_comes_from_split_history(
        self, make_source, yahoo_factory
    ) -> None:
        # A 3:1 split after the range: nothing in the range's answer says so, and the
        # answer is divided by 3 (with float32 noise). Months later the source asks for the
        # symbol's split history once, and then uses its cache.
        yahoo = yahoo_factory("LATER", splits={MARCH[7]: 3.0}, dividends={MARCH[1]: 0.75})
        source = make_source(MONTHS_LATER)
        bars = source.fetch("LATER", MARCH[0], MARCH[4])
        expect_raw(yahoo, MARCH[:5], bars)
        assert bars.dividends.tolist() == [0.0, 0.75, 0.0, 0.0, 0.0]  # raw dividend too
        periods = [p.get("period1") for p in yahoo.chart_calls()]
        assert len(periods) == 2 and periods[1] < 0  # the range, then the whole history
        source.fetch("LATER", MARCH[0], MARCH[2])
        assert len(yahoo.chart_calls()) == 3  # split history reused

    def test_split_history_is_read_again_on_a_new_day(self, make_source, yahoo_factory) -> None:
        yahoo = yahoo_factory("DAILY", splits={MARCH[7]: 2.0})
        now = [MONTHS_LATER]
        source = YFinanceSource(clock=lambda: now[0], cache_dir=make_source().cache_dir)
        source.fetch("DAILY", MARCH[0], MARCH[4])
        source.fetch("DAILY", MARCH[0], MARCH[4])
        assert len(yahoo.chart_calls()) == 3
        now[0] += dt.timedelta(days=1)
        source.fetch("DAILY", MARCH[0], MARCH[4])
        assert len(yahoo.chart_calls()) == 5

    def test_recent_range_needs_one_request(self, make_source, yahoo_factory) -> None:
        # The range ends two sessions before "now": fetched through tomorrow, one request.
        yahoo = yahoo_factory("RECENT", splits={MARCH[9]: 2.0, MARCH[2]: 1.5})
        bars = make_source(AFTER_CLOSE_15TH).fetch("RECENT", MARCH[0], MARCH[7])
        expect_raw(yahoo, MARCH[:8], bars)
        (params,) = yahoo.chart_calls()
        assert params["period2"] == int(at(dt.date(2024, 3, 16), 0).timestamp())

    def test_split_on_today_before_todays_bar(self, make_source, yahoo_factory) -> None:
        # Monday 18 March, before the open: Yahoo has applied a 2:1 split dated today to every
        # earlier bar but has no bar for today yet. The split reaches yfinance as an event
        # without a bar; it still rescales every returned bar.
        monday = dt.date(2024, 3, 18)
        yahoo = yahoo_factory("TODAY", splits={monday: 2.0})
        assert yahoo.adjusted(MARCH[-1])["close"] == CLOSES[-1] / 2
        bars = make_source(at(monday, 8)).fetch("TODAY", MARCH[0], MARCH[-1])
        expect_raw(yahoo, MARCH, bars)
        assert len(yahoo.chart_calls()) == 1

    def test_split_dated_on_a_day_without_bar_in_an_old_range(
        self, make_source, yahoo_factory
    ) -> None:
        # Yahoo dates a 2:1 split on Saturday 9 March. yfinance's frame puts it on Friday's
        # bar; the split history has the real date: Friday is pre-split, Monday the ex-date.
        saturday = dt.date(2024, 3, 9)
        yahoo = yahoo_factory("WKEND", splits={saturday: 2.0})
        assert yahoo.adjusted(MARCH[4])["close"] == CLOSES[4] / 2
        bars = make_source(MONTHS_LATER).fetch("WKEND", MARCH[0], MARCH[-1])
        assert bars.dates == MARCH
        assert bars.close.tolist() == CLOSES
        assert bars.splits.tolist() == [0, 0, 0, 0, 0, 2.0, 0, 0, 0, 0]


class TestCompletedSessions:
    def test_in_progress_session_is_dropped(self, make_source, yahoo_factory) -> None:
        yahoo = yahoo_factory("LIVE")
        now = at(MARCH[-1], 11)  # Friday 15 March, market open
        bars = make_source(now).fetch("LIVE", MARCH[0], MARCH[-1])
        expect_raw(yahoo, MARCH[:-1], bars)

    def test_range_with_no_completed_session_asks_nobody(self, make_source, yahoo_factory) -> None:
        yahoo = yahoo_factory("EARLY")
        with pytest.raises(NoDataError, match="no completed session"):
            make_source(at(MARCH[-1], 11)).fetch("EARLY", MARCH[-1], MARCH[-1])
        assert yahoo.calls == []


class TestErrors:
    def test_unknown_symbol_is_no_data(self, make_source, yahoo_factory) -> None:
        yahoo_factory("KNOWN")
        source = make_source()
        for _ in range(3):  # yfinance's info fallback answers the first two differently
            with pytest.raises(NoDataError, match="NOPE"):
                source.fetch("NOPE", MARCH[0], MARCH[-1])

    def test_range_before_listing_is_no_data(self, make_source, yahoo_factory) -> None:
        yahoo_factory("NEWCO")
        with pytest.raises(NoDataError, match="NEWCO"):
            make_source().fetch("NEWCO", dt.date(2020, 1, 2), dt.date(2020, 1, 31))

    def test_rate_limit_is_retriable(self, make_source, yahoo_factory) -> None:
        # YfData raises YFRateLimitError when Yahoo answers 429 (after its cookie retry).
        yahoo = yahoo_factory("BUSY")
        yahoo.failure = lambda url, params: (_ for _ in ()).throw(YFRateLimitError())
        with pytest.raises(SourceUnavailableError, match="429") as info:
            make_source().fetch("BUSY", MARCH[0], MARCH[-1])
        assert isinstance(info.value.__cause__, YFRateLimitError)

    def test_429_text_answer_is_retriable(self, make_source, yahoo_factory) -> None:
        yahoo = yahoo_factory("BUSY2")
        yahoo.failure = lambda url, params: FakeResponse(429, "Too Many Requests\r\n")
        with pytest.raises(SourceUnavailableError):
            make_source().fetch("BUSY2", MARCH[0], MARCH[-1])

    @pytest.mark.parametrize(
        "error",
        [curl_errors.ConnectionError, requests.ConnectionError, curl_errors.Timeout, TimeoutError],
    )
    def test_network_error_is_retriable(self, make_source, yahoo_factory, error) -> None:
        yahoo = yahoo_factory("NET")

        def fail(url: str, params: Any) -> FakeResponse:
            raise error("connection refused")

        yahoo.failure = fail
        with pytest.raises(SourceUnavailableError, match="network error") as info:
            make_source().fetch("NET", MARCH[0], MARCH[-1])
        assert isinstance(info.value.__cause__, error)

    def test_maintenance_page_is_retriable(self, make_source, yahoo_factory) -> None:
        yahoo = yahoo_factory("DOWN")
        yahoo.failure = lambda url, params: FakeResponse(503, "<html>Will be right back</html>")
        with pytest.raises(SourceUnavailableError):
            make_source().fetch("DOWN", MARCH[0], MARCH[-1])

    def test_invalid_symbol_is_a_contract_error(self, make_source, yahoo_factory) -> None:
        yahoo = yahoo_factory("OK")
        with pytest.raises(ContractError):
            make_source().fetch("../etc", MARCH[0], MARCH[-1])
        assert yahoo.calls == []

    def test_server_error_with_json_body_is_retriable(
        self, make_source, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Through yfinance's real request path (cookie, crumb, retry with the other cookie
        # strategy) down to the HTTP session, which records the status: a 503 whose body is
        # Yahoo's JSON error document must not read as "no data".
        requests_seen: list[str] = []

        def transport(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            requests_seen.append(url)
            if "getcrumb" in url:
                return FakeResponse(200, "crumb-1", url)
            if CHART in url:
                return FakeResponse(
                    503,
                    {
                        "chart": {
                            "result": None,
                            "error": {
                                "code": "Internal Server Error",
                                "description": "backend timeout",
                            },
                        }
                    },
                    url,
                )
            return FakeResponse(200, "<html></html>", url)

        monkeypatch.setattr(curl_cffi.requests.Session, "request", transport)
        source = make_source()
        yf.cache.get_tz_cache().store("FIVEOH", "America/New_York")
        with pytest.raises(SourceUnavailableError, match="HTTP 503"):
            source.fetch("FIVEOH", MARCH[0], MARCH[-1])
        assert any(CHART in url for url in requests_seen), requests_seen


@pytest.mark.parametrize(
    ("error", "status", "expected"),
    [
        (YFRateLimitError(), None, SourceUnavailableError),
        (YFPricesMissingError("X", "", yahoo_reason="boom"), 503, SourceUnavailableError),
        (YFPricesMissingError("X", "", yahoo_reason="boom"), 403, SourceUnavailableError),
        (YFPricesMissingError("X", ""), None, NoDataError),
        (YFPricesMissingError("X", ""), 200, NoDataError),
        (YFTzMissingError("X"), None, NoDataError),
        (curl_errors.HTTPError("HTTP 404", 0, FakeResponse(404, "")), None, NoDataError),
        (curl_errors.HTTPError("HTTP 502", 0, FakeResponse(502, "")), None, SourceUnavailableError),
        (json.JSONDecodeError("Expecting value", "<html>", 0), None, SourceUnavailableError),
        (
            YFDataException("*** YAHOO! FINANCE IS CURRENTLY DOWN! ***"),
            None,
            SourceUnavailableError,
        ),
        (YFDataException("something else"), None, SourceError),
        (KeyError("exchangeTimezoneName"), None, SourceError),
        (ConnectionResetError("reset"), None, SourceUnavailableError),
    ],
)
def test_translate_error(error: Exception, status: int | None, expected: type) -> None:
    assert type(translate_error(error, "X", status)) is expected


def test_pandas4_warnings_from_yfinance_are_filtered(make_source, yahoo_factory) -> None:
    yahoo_factory("WARN", splits={MARCH[5]: 2.0}, dividends={MARCH[1]: 0.5})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        install_warning_filters()
        make_source().fetch("WARN", MARCH[0], MARCH[-1])
        warnings.warn("ours", Pandas4Warning, stacklevel=1)  # not from yfinance: still shown
    shown = [w for w in seen if issubclass(w.category, Pandas4Warning)]
    assert [str(w.message) for w in shown] == ["ours"]


def test_timezone_cache_in_the_process_directory(make_source, yahoo_factory, cache_dir) -> None:
    # yfinance's cache location is set once per process: the first source configures it (this
    # test's directory when it runs first, another test's or the default one otherwise), and
    # every later source must use that same, writable directory.
    from workers.sources.yfinance_source import configure_yfinance

    yahoo_factory("TZC")
    source = make_source()
    source.fetch("TZC", MARCH[0], MARCH[-1])
    assert source.cache_dir == configure_yfinance(cache_dir)
    assert os.path.isdir(source.cache_dir) and os.access(source.cache_dir, os.W_OK)
    assert yf.cache.get_tz_cache().lookup("TZC") == "America/New_York"
