"""The symbol universe: the committed file is valid, and malicious symbols never reach SQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dagster as dg
import psycopg2.extensions
import pytest

from finpipe_core.contracts import SYMBOL_PATTERN
from finpipe_dagster.assets import stock_tasks
from finpipe_dagster.resources import default_resources
from finpipe_manager.universe import (
    DEFAULT_UNIVERSE_PATH,
    UniverseEntry,
    UniverseError,
    active_symbols,
    load_universe,
    parse_universe,
    sync_universe,
)

MALICIOUS = [
    "A'; DROP TABLE x;--",
    "AAPL'--",
    '"MSFT"',
    "IBM; DELETE FROM tasks",
    "GOOG OR 1=1",
    "aapl",
    " AAPL",
    "AAPL\x00",
    "../../etc/passwd",
    "$(reboot)",
    "A" * 30,
    "",
]


class TestLoad:
    def test_default_universe(self) -> None:
        entries = load_universe("default")
        symbols = [e.symbol for e in entries]
        assert 25 <= len(symbols) <= 100
        assert len(set(symbols)) == len(symbols)
        assert {"AAPL", "MSFT", "JPM", "BRK-B"} <= set(symbols)
        assert all(e.name for e in entries)

    def test_default_file_is_committed_next_to_the_code(self) -> None:
        assert DEFAULT_UNIVERSE_PATH.is_file()
        assert DEFAULT_UNIVERSE_PATH.read_text().splitlines()[0] == "symbol,name"

    def test_sample_universe_matches_the_sample_source(self) -> None:
        symbols = {e.symbol for e in load_universe("sample")}
        assert symbols == {"AAPL", "IBM", "MSFT", "GOOG", "FB"}
        sample = pytest.importorskip("workers.sources.sample")
        assert symbols == set(sample.SAMPLE_SYMBOLS)

    def test_csv_path(self, tmp_path: Path) -> None:
        path = tmp_path / "u.csv"
        path.write_text('symbol,name\nBRK-B,"Berkshire, B"\n^GSPC,S&P 500\n')
        assert load_universe(str(path)) == [
            UniverseEntry("BRK-B", "Berkshire, B"),
            UniverseEntry("^GSPC", "S&P 500"),
        ]

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(UniverseError, match="cannot read universe"):
            load_universe(str(tmp_path / "nope.csv"))

    @pytest.mark.parametrize("symbol", MALICIOUS)
    def test_malicious_symbol_is_rejected_with_its_line(self, symbol: str) -> None:
        text = f'symbol,name\nAAPL,Apple\n"{symbol.replace(chr(34), chr(34) * 2)}",Evil\n'
        with pytest.raises(UniverseError) as info:
            parse_universe(text, source="evil.csv")
        assert "evil.csv:3" in str(info.value)
        assert SYMBOL_PATTERN in str(info.value) or "2 columns" in str(info.value)

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("sym,name\nAAPL,Apple\n", "header"),
            ("symbol,name\nAAPL,Apple\nAAPL,Again\n", "duplicate"),
            ("symbol,name\n", "no symbols"),
            ("symbol,name\nAAPL,Apple,extra\n", "2 columns"),
            ("symbol,name\nAAPL,Bad\x07name\n", "unusable name"),
        ],
    )
    def test_bad_files(self, text: str, message: str) -> None:
        with pytest.raises(UniverseError, match=message):
            parse_universe(text)


@pytest.mark.integration
class TestSync:
    def test_sync_upserts_and_deactivates(self, clean_db: psycopg2.extensions.connection) -> None:
        sync_universe(clean_db, load_universe("default"))
        result = sync_universe(clean_db, load_universe("sample"))
        assert result.active == 5
        assert result.added == 2  # FB and GOOG are not in the default list
        assert result.deactivated == len(load_universe("default")) - 3
        assert active_symbols(clean_db) == ["AAPL", "FB", "GOOG", "IBM", "MSFT"]
        known = {"FB", "GOOG"} | {e.symbol for e in load_universe("default")}
        with clean_db, clean_db.cursor() as cur:
            cur.execute("SELECT count(*) FROM symbol_state")
            assert cur.fetchone()[0] == len(known)

    def test_sync_rechecks_symbols_before_sql(
        self, clean_db: psycopg2.extensions.connection
    ) -> None:
        with pytest.raises(UniverseError):
            sync_universe(clean_db, [UniverseEntry("A'; DROP TABLE x;--", "evil")])
        assert active_symbols(clean_db) == []

    def test_asset_rejects_a_malicious_universe_before_sql_or_kafka(
        self,
        clean_db: psycopg2.extensions.connection,
        tasks_topic: str,
        read_topic: Callable[[str], list],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        path = tmp_path / "universe.csv"
        path.write_text('symbol,name\nAAPL,Apple\n"A\'; DROP TABLE x;--",Evil\n')
        monkeypatch.setenv("FINPIPE_UNIVERSE", str(path))
        result = dg.materialize(
            [stock_tasks],
            partition_key="2010-03-03",
            resources=default_resources(),
            raise_on_error=False,
        )
        assert not result.success
        failure = result.get_step_failure_events()[0]
        assert "UniverseError" in str(failure.event_specific_data.error)
        assert "DROP TABLE" in str(failure.event_specific_data.error)
        assert active_symbols(clean_db) == []  # nothing, not even AAPL, was written
        with clean_db, clean_db.cursor() as cur:
            cur.execute("SELECT count(*) FROM tasks")
            assert cur.fetchone()[0] == 0
        assert read_topic(tasks_topic) == []
