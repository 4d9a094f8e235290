"""Seeded generators of fuzzed messages for both topics, each labelled with what the pipeline
must do with it.

- ``good``: a valid message on a "good" symbol: its effect must be exact in the tables.
- ``bad``: breaks the contract (finpipe_core/contracts.py): truncated or malformed JSON, wrong
  types, unknown or missing fields, another schema version, unicode and other invalid
  symbols, impossible or out-of-range dates, NaN/Infinity/overflowing/negative/zero prices,
  negative volumes, low above high, unsorted dates, ragged or oversized (> 5,000 bars)
  arrays, inconsistent status/chunk fields, a key that is not the symbol. It must land in
  the DLQ, with a reason, exactly once.
- ``edge``: valid by the contract but extreme (years 1 and 9999, prices of 1e300 or 1e-300,
  open above high, huge split ratios, ranges without a session, far-future task ends). Each
  uses a symbol of its own; it must either be stored or dead-lettered (nothing silent).

Keys of bad messages never name a good or edge symbol: a dead letter parks its key's symbol,
and later messages of a parked symbol wait in ``parked_bars``.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass

from finpipe_core.calendar import trading_days
from finpipe_core.contracts import SCHEMA_VERSION, make_task_id
from workers.sources.synthetic import SyntheticSource


@dataclass(frozen=True)
class Fuzzed:
    key: bytes | None
    value: bytes | None
    label: str  # good | bad | edge
    kind: str  # what was done to it
    symbol: str | None = None  # good/edge: the symbol whose effect is checked
    task: tuple[str, dt.date, dt.date] | None = None  # good tasks: the range asked for


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=True).encode()


BAD_SYMBOLS = (
    "ÄPPL",
    "株式会社",
    "AAPL🚀",
    "aapl",
    "AAPL'; DROP TABLE prices;--",
    "A" * 40,
    "",
    " AAPL",
    "AAPL\x00",
    "BRK/B",
    "^^GSPC",
    "\u202eLPPA",
    "ＡＡＰＬ",
)
BAD_DATES = (
    "2019-02-30",
    "2019-13-01",
    "0000-01-01",
    "10000-01-01",
    "1969-12-31",
    "2019-1-1",
    "20190101",
    "2019-01-01T00:00:00",
    "",
    "yesterday",
    "1900-01-01",
)


class Generator:
    """Seeded: the same seed gives the same messages."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.src = SyntheticSource()
        self._template = None

    # -- keys ---------------------------------------------------------------------------------
    def bad_key(self) -> bytes | None:
        r = self.rng.random()
        if r < 0.5:
            return f"FZB{self.rng.randrange(300):03d}".encode()
        if r < 0.65:
            return None
        if r < 0.85:
            return self.rng.choice(BAD_SYMBOLS).encode("utf-8")
        return self.rng.randbytes(self.rng.randrange(1, 12))

    def _garbage(self) -> bytes:
        kind = self.rng.randrange(4)
        if kind == 0:
            return self.rng.randbytes(self.rng.randrange(0, 64))
        if kind == 1:
            return self.rng.choice(
                [
                    b"",
                    b"{",
                    b"}",
                    b"[",
                    b"null",
                    b"1.5",
                    b"true",
                    b'"x"',
                    b"[]",
                    b"{}",
                    b"\xef\xbb\xbf{}",
                    b"\xff\xfe{\x00}\x00",
                ]
            )
        if kind == 2:
            return "".join(
                chr(self.rng.randrange(32, 0x2FFF)) for _ in range(self.rng.randrange(1, 40))
            ).encode("utf-8")
        return b'{"schema_version":1,' * self.rng.randrange(1, 5)

    # -- tasks --------------------------------------------------------------------------------
    def task_dict(self, symbol: str, start: dt.date, end: dt.date) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "task_id": make_task_id(symbol, start, end),
            "symbol": symbol,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "requested_by": "fuzz",
        }

    def bad_task(self) -> Fuzzed:
        rng = self.rng
        sym = f"FZB{rng.randrange(300):03d}"
        start = dt.date(2010, 1, 4) + dt.timedelta(days=rng.randrange(3000))
        base = self.task_dict(sym, start, start + dt.timedelta(days=rng.randrange(1, 30)))
        kind = rng.choice(
            [
                "truncated",
                "garbage",
                "wrong_type",
                "unknown_field",
                "missing",
                "version",
                "bad_symbol",
                "bad_date",
                "reversed",
                "huge_array",
                "long_id",
                "non_object",
            ]
        )
        value: bytes
        if kind == "truncated":
            raw = _dumps(base)
            value = raw[: rng.randrange(0, len(raw) - 1)]
        elif kind == "garbage":
            value = self._garbage()
            if value in (b"",):
                kind = "empty"
        elif kind == "wrong_type":
            field = rng.choice(
                ["schema_version", "task_id", "symbol", "start", "end", "requested_by", "force"]
            )
            base[field] = (
                rng.choice([123, 1.5, None, [], {}, "yes", True])
                if field != "force"
                else rng.choice(["yes", 1, None, []])
            )
            if field in ("task_id", "requested_by") and isinstance(base[field], str):
                base[field] = 7
            if field == "schema_version" and base[field] is True:
                base[field] = "1"
            value = _dumps(base)
        elif kind == "unknown_field":
            base[rng.choice(["extra", "Symbol", "priority", "__proto__"])] = 1
            value = _dumps(base)
        elif kind == "missing":
            del base[rng.choice(["schema_version", "task_id", "symbol", "start", "end"])]
            value = _dumps(base)
        elif kind == "version":
            base["schema_version"] = rng.choice([0, 2, 99, -1, 2**40])
            value = _dumps(base)
        elif kind == "bad_symbol":
            base["symbol"] = rng.choice(BAD_SYMBOLS)
            value = _dumps(base)
        elif kind == "bad_date":
            base[rng.choice(["start", "end"])] = rng.choice(BAD_DATES)
            value = _dumps(base)
        elif kind == "reversed":
            base["start"], base["end"] = base["end"], base["start"]
            value = _dumps(base)
        elif kind == "huge_array":
            base[rng.choice(["symbol", "start", "task_id"])] = [0] * rng.randrange(1000, 20000)
            value = _dumps(base)
        elif kind == "long_id":
            field = rng.choice(["task_id", "requested_by"])
            base[field] = "x" * (rng.choice([101, 201, 5000]) if field == "task_id" else 201)
            if field == "task_id" and rng.random() < 0.3:
                base[field] = ""
            value = _dumps(base)
        else:
            value = _dumps(rng.choice([[base], base["symbol"], 42, None, True, [1, 2, 3]]))
        return Fuzzed(self.bad_key(), value, "bad", kind)

    def good_tasks(self, symbols: list[str], weeks: int, first: dt.date) -> list[Fuzzed]:
        """Consecutive one-week tasks per symbol (chronological per symbol)."""
        out = []
        for w in range(weeks):
            lo = first + dt.timedelta(weeks=w)
            hi = lo + dt.timedelta(days=6)
            for s in symbols:
                out.append(
                    Fuzzed(
                        s.encode(),
                        _dumps(self.task_dict(s, lo, hi)),
                        "good",
                        "task",
                        s,
                        (s, lo, hi),
                    )
                )
        return out

    def edge_tasks(self, n: int) -> list[Fuzzed]:
        out = []
        for i in range(n):
            sym = f"FZET{i:03d}"
            kind = ["weekend", "before_source", "far_future", "padded", "force"][i % 5]
            if kind == "weekend":
                lo = dt.date(2015, 1, 3)
                d = self.task_dict(sym, lo, lo + dt.timedelta(days=1))
            elif kind == "before_source":
                d = self.task_dict(sym, dt.date(1970, 1, 1), dt.date(1994, 12, 30))
            elif kind == "far_future":
                d = self.task_dict(sym, dt.date(2030, 12, 20), dt.date(9999, 12, 31))
            else:
                lo = dt.date(2012, 3, 5)
                d = self.task_dict(sym, lo, lo + dt.timedelta(days=9))
                if kind == "force":
                    d["force"] = True
                    d["requested_by"] = "fuzz forced re-fetch #42"
            raw = _dumps(d)
            if kind == "padded":
                raw = b" \n\t" + raw + b"\r\n "
            out.append(Fuzzed(sym.encode(), raw, "edge", kind, sym))
        return out

    # -- bars ---------------------------------------------------------------------------------
    def bars_dict(self, symbol: str, days: list[dt.date], task_id: str) -> dict:
        if symbol == "FZTEMPLATE":  # bad and edge messages: slices of one cached series
            if self._template is None:
                self._template = self.src.fetch(symbol, dt.date(2000, 1, 1), dt.date(2025, 12, 31))
            lo = self._template.dates.index(days[0])
            raw = self._template.slice(lo, lo + len(days))
        else:
            raw = self.src.fetch(symbol, days[0], days[-1])
        assert raw.dates == days
        cols = {
            c: [float(x) for x in getattr(raw, c)]
            for c in ("open", "high", "low", "close", "adj_close", "volume", "dividends", "splits")
        }
        return {
            "schema_version": SCHEMA_VERSION,
            "task_id": task_id,
            "symbol": symbol,
            "start": days[0].isoformat(),
            "end": days[-1].isoformat(),
            "status": "ok",
            "source": "fuzz",
            "chunk": 0,
            "chunks": 1,
            "dates": [d.isoformat() for d in days],
            **cols,
        }

    def good_bars(
        self, symbols: list[str], messages: int, per: int, first: dt.date
    ) -> list[Fuzzed]:
        sessions = trading_days(first, first + dt.timedelta(days=messages * per * 2 + 30))
        out = []
        for m in range(messages):
            days = sessions[m * per : (m + 1) * per]
            for s in symbols:
                task = f"fz-{s}-{m}"
                out.append(
                    Fuzzed(
                        s.encode(),
                        _dumps(self.bars_dict(s, days, task)),
                        "good",
                        "bars",
                        s,
                        (s, days[0], days[-1]),
                    )
                )
        return out

    def bad_bars(self, base_days: list[dt.date]) -> Fuzzed:
        rng = self.rng
        key = self.bad_key()
        sym = key.decode() if key and key.startswith(b"FZB") else f"FZB{rng.randrange(300):03d}"
        i = rng.randrange(0, len(base_days) - 8)
        days = base_days[i : i + rng.randrange(2, 8)]
        base = self.bars_dict("FZTEMPLATE", days, f"fzb-{rng.randrange(10**6)}")
        base["symbol"] = sym
        n = len(days)
        col = rng.choice(["open", "high", "low", "close", "adj_close"])
        j = rng.randrange(n)
        kind = rng.choice(
            [
                "truncated",
                "garbage",
                "wrong_type",
                "nan",
                "infinity",
                "overflow",
                "negative_price",
                "zero_price",
                "negative_volume",
                "low_above_high",
                "unsorted",
                "ragged",
                "huge_array",
                "status",
                "chunk",
                "version",
                "unknown_field",
                "bad_symbol",
                "bad_date",
                "outside_range",
                "key_mismatch",
                "non_object",
                "missing",
            ]
        )
        value: bytes | None = None
        if kind == "truncated":
            raw = _dumps(base)
            value = raw[: rng.randrange(0, len(raw) - 1)]
        elif kind == "garbage":
            if rng.random() < 0.05:  # a tombstone: no value at all
                return Fuzzed(key, None, "bad", "tombstone")
            value = self._garbage()
        elif kind == "wrong_type":
            field = rng.choice(["dates", "close", "volume", "chunk", "status", "task_id"])
            if field in ("dates", "close", "volume"):
                base[field][j] = rng.choice(["1.0", None, [], {}, True])
            else:
                base[field] = rng.choice(
                    [[], {}, None, 1.5, "0"] if field == "chunk" else [[], {}, None, 1.5, 3]
                )
        elif kind == "nan":
            base[col][j] = float("nan")  # json: NaN (not JSON; msgspec refuses it)
        elif kind == "infinity":
            base[col][j] = rng.choice([float("inf"), float("-inf")])
        elif kind == "overflow":
            value = _dumps(base).replace(
                b'"' + col.encode() + b'":[', b'"' + col.encode() + b'":[1e400,', 1
            )
            base = None
        elif kind == "negative_price":
            base[col][j] = -abs(base[col][j])
        elif kind == "zero_price":
            base[col][j] = 0.0
        elif kind == "negative_volume":
            base["volume"][j] = -1.0 - rng.random()
        elif kind == "low_above_high":
            base["low"][j] = base["high"][j] * 1.5
        elif kind == "unsorted":
            if n < 2:
                base["dates"].append(base["dates"][0])
                kind = "ragged"
            else:
                base["dates"][0], base["dates"][1] = base["dates"][1], base["dates"][0]
        elif kind == "ragged":
            base[rng.choice(["open", "volume", "splits", "dates"])].append(1.0)
        elif kind == "huge_array":
            m = rng.choice([5001, 6000])
            sessions = trading_days(dt.date(1990, 1, 1), dt.date(2030, 12, 31))[:m]
            base.update(
                start=sessions[0].isoformat(),
                end=sessions[-1].isoformat(),
                dates=[d.isoformat() for d in sessions],
                **{c: [1.0] * m for c in ("open", "high", "low", "close", "adj_close", "volume")},
                dividends=[0.0] * m,
                splits=[0.0] * m,
            )
        elif kind == "status":
            choice = rng.randrange(3)
            if choice == 0:  # ok without bars
                base.update(
                    dates=[],
                    open=[],
                    high=[],
                    low=[],
                    close=[],
                    adj_close=[],
                    volume=[],
                    dividends=[],
                    splits=[],
                )
            elif choice == 1:  # failed without a reason
                base.update(
                    status="failed",
                    dates=[],
                    open=[],
                    high=[],
                    low=[],
                    close=[],
                    adj_close=[],
                    volume=[],
                    dividends=[],
                    splits=[],
                )
            else:  # no_data with bars
                base.update(status="no_data", reason="none")
        elif kind == "chunk":
            base.update(chunk=rng.choice([1, 5]), chunks=1) if rng.random() < 0.5 else base.update(
                chunk=-1
            )
        elif kind == "version":
            base["schema_version"] = rng.choice([0, 2, 99])
        elif kind == "unknown_field":
            base[rng.choice(["extra", "Close", "vwap"])] = [1.0] * n
        elif kind == "bad_symbol":
            base["symbol"] = rng.choice(BAD_SYMBOLS)
        elif kind == "bad_date":
            base["dates"][j] = rng.choice(BAD_DATES[:6])
        elif kind == "outside_range":
            base["start"] = (days[-1] + dt.timedelta(days=1)).isoformat()
            base["end"] = (days[-1] + dt.timedelta(days=10)).isoformat()
        elif kind == "key_mismatch":
            key = f"FZB{rng.randrange(300):03d}".encode()
            base["symbol"] = "FZX" + key.decode()[3:]
        elif kind == "missing":
            del base[rng.choice(["schema_version", "task_id", "symbol", "status", "source"])]
        else:
            value = _dumps(rng.choice([[base["close"]], 1, None, "FZB001", True]))
            base = None
        if value is None and base is not None:
            value = _dumps(base)
        return Fuzzed(key, value, "bad", kind)

    def edge_bars(self, n: int, base_days: list[dt.date]) -> list[Fuzzed]:
        out = []
        kinds = [
            "year1",
            "year9999",
            "huge_price",
            "tiny_price",
            "open_above_high",
            "huge_split",
            "int_values",
            "huge_volume",
        ]
        for i in range(n):
            sym = f"FZEB{i:03d}"
            kind = kinds[i % len(kinds)]
            days = base_days[:5]
            d = self.bars_dict("FZTEMPLATE", days, f"fze-{sym}")
            d["symbol"] = sym
            if kind in ("year1", "year9999"):
                y0 = dt.date(1, 1, 1) if kind == "year1" else dt.date(9999, 12, 24)
                dd = [y0 + dt.timedelta(days=k) for k in range(5)]
                d.update(
                    dates=[x.isoformat() for x in dd],
                    start=dd[0].isoformat(),
                    end=dd[-1].isoformat(),
                )
            elif kind in ("huge_price", "tiny_price"):
                f = 1e300 if kind == "huge_price" else 1e-300
                for c in ("open", "high", "low", "close", "adj_close"):
                    d[c] = [v * f for v in d[c]]
            elif kind == "open_above_high":
                d["open"] = [h * 1.01 for h in d["high"]]
            elif kind == "huge_split":
                d["splits"][2] = 1e300
            elif kind == "int_values":
                raw = _dumps(d)
                for c in ("volume", "dividends", "splits"):
                    raw = raw.replace(
                        f'"{c}":['.encode(), f'"{c}":[{7 if c == "volume" else 0},'.encode(), 1
                    )
                d = json.loads(raw)
                d["dates"].insert(0, (days[0] - dt.timedelta(days=3)).isoformat())
                for c in ("open", "high", "low", "close", "adj_close"):
                    d[c].insert(0, 10)
                d["start"] = d["dates"][0]
            else:
                d["volume"] = [1e300] * 5
            out.append(Fuzzed(sym.encode(), _dumps(d), "edge", kind, sym))
        return out
