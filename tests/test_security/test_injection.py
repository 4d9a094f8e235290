"""Hostile symbols through every place a symbol enters finpipe: the universe file, the message
contracts, the CSV and yfinance sources, the outbox, the processor (Kafka key and value) and
the ``finpipe`` CLI. Each is refused with an error naming the symbol, before it reaches SQL,
Kafka, a file path or the network, and the tables are left as they were.

Holes these tests found (a trailing newline passing msgspec's pattern, NUL bytes in keys and
task ids reaching SQL, a source's ContractError escaping the agent, the CLI writing a bad
universe row) are fixed; the tests below keep them fixed.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql
from typer.testing import CliRunner

from finpipe_core import contracts
from finpipe_core.contracts import BarBatch, FetchTask
from finpipe_core.exceptions import ContractError
from finpipe_manager.outbox import emit_tasks, enqueue_tasks, publish_pending
from finpipe_manager.universe import UniverseEntry, UniverseError, parse_universe, sync_universe
from workers.processor.batch import BatchWriter, InputMessage

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*returning an ndarray that drops timezone:pandas.errors.Pandas4Warning"
)

HOSTILE = {
    "sql quote": "AAPL'; DROP TABLE prices;--",
    "sql comment": "AAPL--",
    "double quote": 'A"B',
    "shell": "$(rm -rf /)",
    "backticks": "`id`",
    "path traversal": "../../etc/passwd",
    "absolute path": "/etc/passwd",
    "greek alpha lookalike": "\u0391APL",
    "fullwidth": "\uff21\uff21\uff30\uff2c",
    "zero width space": "AAPL\u200b",
    "cyrillic lookalike": "\u0410\u0410PL",
    "very long": "A" * 100_000,
    "nul byte": "AA\x00PL",
    "lower case": "aapl",
    "space": "AA PL",
    "leading newline": "\nAAPL",
    "crlf": "AAPL\r\nGOOG",
    "format string": "%s%s%n",
    "percent": "AAPL%",
    "empty": "",
    "semicolon": "A;B",
    "json": '{"a":1}',
}
# msgspec matches ``pattern`` with re.search, where ``$`` also matches before a final "\n":
# decode_task/decode_bars accept "AAPL\n", validate_symbol (fullmatch) refuses it.
TRAILING_NEWLINE = "AAPL\n"
CASES = list(HOSTILE.items())
IDS = [name for name, _ in CASES]
D = dt.date


def _task_json(symbol: str) -> bytes:
    return json.dumps(
        {
            "schema_version": 1,
            "task_id": "t1",
            "symbol": symbol,
            "start": "2020-01-02",
            "end": "2020-01-31",
        }
    ).encode()


def _bars_json(symbol: str) -> bytes:
    return json.dumps(
        {
            "schema_version": 1,
            "task_id": "t1",
            "symbol": symbol,
            "start": "2020-01-02",
            "end": "2020-01-03",
            "status": "ok",
            "source": "test",
            "dates": ["2020-01-02"],
            "open": [1.0],
            "high": [2.0],
            "low": [0.5],
            "close": [1.5],
            "adj_close": [1.5],
            "volume": [10.0],
            "dividends": [0.0],
            "splits": [0.0],
        }
    ).encode()


def _valid_bars(symbol: str) -> bytes:
    return contracts.encode(
        BarBatch(
            schema_version=1,
            task_id=f"t-{symbol}",
            symbol=symbol,
            start=D(2020, 1, 2),
            end=D(2020, 1, 3),
            status="ok",
            source="test",
            dates=[D(2020, 1, 2)],
            open=[1.0],
            high=[2.0],
            low=[0.5],
            close=[1.5],
            adj_close=[1.5],
            volume=[10.0],
            dividends=[0.0],
            splits=[0.0],
        )
    )


# --- contracts -------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "symbol"), CASES, ids=IDS)
def test_validate_symbol_refuses(name: str, symbol: str) -> None:
    with pytest.raises(ContractError, match="invalid symbol"):
        contracts.validate_symbol(symbol)


@pytest.mark.parametrize("value", [None, 42, b"AAPL", ["AAPL"]])
def test_validate_symbol_refuses_non_strings(value: Any) -> None:
    with pytest.raises(ContractError):
        contracts.validate_symbol(value)


@pytest.mark.parametrize(("name", "symbol"), CASES, ids=IDS)
def test_decode_task_refuses_symbol(name: str, symbol: str) -> None:
    with pytest.raises(ContractError, match=r"\$\.symbol|payload is"):
        contracts.decode_task(_task_json(symbol))


@pytest.mark.parametrize(("name", "symbol"), CASES, ids=IDS)
def test_decode_bars_refuses_symbol(name: str, symbol: str) -> None:
    with pytest.raises(ContractError, match=r"\$\.symbol|payload is"):
        contracts.decode_bars(_bars_json(symbol))


@pytest.mark.parametrize("decode", [contracts.decode_task, contracts.decode_bars])
def test_contracts_refuse_a_trailing_newline(decode) -> None:
    payload = (_task_json if decode is contracts.decode_task else _bars_json)(TRAILING_NEWLINE)
    with pytest.raises(ContractError):
        decode(payload)


def test_validate_symbol_refuses_a_trailing_newline() -> None:
    with pytest.raises(ContractError):
        contracts.validate_symbol(TRAILING_NEWLINE)


def test_injection_in_other_task_fields_is_only_data() -> None:
    """task_id and requested_by are free text bounded in length: they only ever travel as
    JSON values and SQL parameters, never into SQL text or paths."""
    task = contracts.decode_task(
        json.dumps(
            {
                "schema_version": 1,
                "task_id": "x');DROP/**/TABLE/**/tasks;--",
                "symbol": "AAPL",
                "start": "2020-01-02",
                "end": "2020-01-03",
                "requested_by": "$(reboot)",
            }
        ).encode()
    )
    assert isinstance(task, FetchTask) and task.symbol == "AAPL"
    for bad_id in ("x" * 101, "with space", "nul\x00byte", "line\nbreak"):
        with pytest.raises(ContractError, match="task_id"):
            contracts.decode_task(
                json.dumps(
                    {
                        "schema_version": 1,
                        "task_id": bad_id,
                        "symbol": "AAPL",
                        "start": "2020-01-02",
                        "end": "2020-01-03",
                    }
                ).encode()
            )


# --- universe file ---------------------------------------------------------------------------
def _csv_field(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@pytest.mark.parametrize(
    ("name", "symbol"),
    [*CASES, ("trailing newline", TRAILING_NEWLINE)],
    ids=[*IDS, "trailing newline"],
)
def test_universe_file_refuses_symbol_with_file_and_line(name: str, symbol: str) -> None:
    text = f"symbol,name\nMSFT,Microsoft\n{_csv_field(symbol)},Evil\n"
    with pytest.raises(UniverseError, match=r"universe\.csv:\d+: invalid symbol"):
        parse_universe(text, source="universe.csv")


@pytest.mark.parametrize("name", ["Evil\x00Corp", "two\nlines", "bell\x07", "x" * 201])
def test_universe_file_refuses_unusable_names(name: str) -> None:
    with pytest.raises(UniverseError, match="unusable name"):
        parse_universe(f"symbol,name\nMSFT,{_csv_field(name)}\n", source="u.csv")


def test_universe_names_with_sql_are_kept_as_text() -> None:
    """A printable name is data: stored through parameters, never interpreted."""
    [entry] = parse_universe('symbol,name\nMSFT,"Robert\'); DROP TABLE symbols;--"\n')
    assert entry.name == "Robert'); DROP TABLE symbols;--"


# --- sources ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "symbol"),
    [*CASES, ("trailing newline", TRAILING_NEWLINE)],
    ids=[*IDS, "trailing newline"],
)
def test_csv_source_refuses_symbol_before_touching_files(
    tmp_path: Path, name: str, symbol: str
) -> None:
    from workers.sources.csv_source import CsvSource

    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "passwd.csv").write_text("Date,Open\n")  # a file next to the directory
    with pytest.raises(ContractError, match="invalid symbol"):
        CsvSource(data).fetch(symbol, D(2020, 1, 1), D(2020, 12, 31))


def test_yfinance_source_refuses_symbol_before_the_network() -> None:
    from workers.sources.yfinance_source import YFinanceSource

    source = YFinanceSource()
    for symbol in (*HOSTILE.values(), TRAILING_NEWLINE):
        with pytest.raises(ContractError, match="invalid symbol"):
            source.fetch(symbol, D(2020, 1, 1), D(2020, 12, 31))


# --- database entry points -------------------------------------------------------------------
TABLES = (
    "symbols",
    "symbol_state",
    "tasks",
    "prices",
    "indicators",
    "indicator_state",
    "consumer_offsets",
    "parked_bars",
)


def _snapshot(conn: psycopg2.extensions.connection) -> dict[str, Any]:
    """Every finpipe table exists, with its row count and symbols."""
    out: dict[str, Any] = {}
    with conn.cursor() as cur:
        for table in TABLES:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{table}",))
            assert cur.fetchone()[0], f"table {table} is gone"
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            out[table] = cur.fetchone()[0]
        cur.execute("SELECT array_agg(symbol ORDER BY symbol) FROM symbols")
        out["symbols list"] = cur.fetchone()[0]
    conn.rollback()
    return out


class _Producer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        self.sent.append(key)
        on_delivery(None, None)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


@pytest.fixture(scope="module")
def seeded(secure_db):
    """The scratch database with one valid symbol, as the manager would leave it."""
    conn = secure_db.connect("manager")
    sync_universe(conn, [UniverseEntry("MSFT", "Microsoft")])
    return secure_db


@pytest.mark.integration
def test_outbox_and_universe_sync_refuse_hostile_symbols(seeded) -> None:
    conn = seeded.connect("manager")
    owner = seeded.connect("owner")
    before = _snapshot(owner)
    producer = _Producer()
    for symbol in (*HOSTILE.values(), TRAILING_NEWLINE):
        with pytest.raises(ContractError, match="invalid symbol"):
            enqueue_tasks(
                conn, ["MSFT", symbol], D(2021, 1, 4), D(2021, 1, 29), requested_by="injection-test"
            )
        with pytest.raises(ContractError, match="invalid symbol"):
            emit_tasks(
                conn,
                producer,
                "tasks",
                [symbol],
                D(2021, 1, 4),
                D(2021, 1, 29),
                requested_by="injection-test",
            )
        with pytest.raises(UniverseError, match="invalid symbol"):
            sync_universe(conn, [UniverseEntry("MSFT", "Microsoft"), UniverseEntry(symbol, "x")])
    assert producer.sent == []
    assert _snapshot(owner) == before


@pytest.mark.integration
def test_outbox_refuses_to_publish_a_tampered_row(seeded) -> None:
    """A task row whose symbol was changed in the database behind the outbox's back is not
    sent: publishing stops with ContractError and the row stays pending."""
    owner = seeded.connect("owner")
    with owner.cursor() as cur:
        cur.execute(
            "INSERT INTO tasks (task_id, symbol, start_date, end_date) "
            "VALUES ('tampered', %s, '2021-01-04', '2021-01-05')",
            (HOSTILE["sql quote"],),
        )
    owner.commit()
    try:
        producer = _Producer()
        with pytest.raises(ContractError, match="invalid symbol"):
            publish_pending(seeded.connect("manager"), producer, "tasks")
        assert producer.sent == []
        with owner.cursor() as cur:
            cur.execute("SELECT status FROM tasks WHERE task_id = 'tampered'")
            assert cur.fetchone() == ("pending",)
    finally:
        with owner.cursor() as cur:
            cur.execute("DELETE FROM tasks WHERE task_id = 'tampered'")
        owner.commit()


@pytest.mark.integration
def test_database_check_refuses_hostile_symbols(seeded) -> None:
    """The last line of defence: symbols.symbol has the same pattern as a CHECK constraint
    (PostgreSQL's '$' is the end of the string, so it also refuses a trailing newline)."""
    owner = seeded.connect("owner")
    for symbol in (*HOSTILE.values(), TRAILING_NEWLINE):
        if "\x00" in symbol:
            continue  # PostgreSQL text cannot hold NUL at all (psycopg2 refuses it first)
        with pytest.raises(psycopg2.errors.CheckViolation), owner.cursor() as cur:
            cur.execute("INSERT INTO symbols (symbol) VALUES (%s)", (symbol,))
        owner.rollback()


def _hostile_messages() -> list[tuple[str, bytes | None, bytes]]:
    """(case, key, value) of bar messages with a hostile key and/or symbol."""
    out: list[tuple[str, bytes | None, bytes]] = []
    for name, symbol in CASES:
        raw = symbol.encode()
        out += [
            (f"value {name}", b"MSFT", _bars_json(symbol)),
            (f"no key, value {name}", None, _bars_json(symbol)),
        ]
        if "\x00" not in symbol:  # a NUL in the key: see test_processor_survives_a_nul_key
            out += [
                (f"key {name}", raw, _valid_bars("MSFT")),
                (f"both {name}", raw, _bars_json(symbol)),
            ]
    out.append(("key not utf-8", b"\xff\xfe'--", _valid_bars("MSFT")))
    return out


@pytest.mark.integration
def test_processor_dead_letters_hostile_keys_and_symbols(seeded) -> None:
    """Each hostile message becomes a dead letter with a ContractError naming the problem;
    nothing is stored for it, only its valid key's symbol is parked."""
    conn = seeded.connect("processor")
    owner = seeded.connect("owner")
    before = _snapshot(owner)
    messages = _hostile_messages()
    batch = [InputMessage("data", 0, i, key, value) for i, (_, key, value) in enumerate(messages)]
    result = BatchWriter(conn, "injection-test", 900_000).apply(batch)
    conn.commit()
    assert len(result.dead_letters) == len(messages)
    for dead, (case, _, _) in zip(result.dead_letters, messages, strict=True):
        assert isinstance(dead.error, ContractError), case
        assert (
            "symbol" in str(dead.error) or "key" in str(dead.error) or "payload" in str(dead.error)
        ), (case, str(dead.error))
    after = _snapshot(owner)
    assert after["prices"] == before["prices"] == 0
    assert after["indicators"] == 0 and after["tasks"] == before["tasks"]
    assert after["symbols list"] == ["MSFT"]  # no hostile symbol made it into the universe
    with owner.cursor() as cur:
        cur.execute("SELECT symbol, status FROM symbol_state WHERE status = 'parked'")
        assert cur.fetchall() == [("MSFT", "parked")]  # the valid key of the bad values
        cur.execute("UPDATE symbol_state SET status = 'ok', error = NULL")
    owner.commit()


@pytest.mark.integration
def test_processor_never_stores_a_trailing_newline_symbol(seeded) -> None:
    """'AAPL\\n' passes the message contract (see TRAILING_NEWLINE) but not the database's
    CHECK: the batch fails as a whole, which the processor turns into a dead letter by
    retrying message by message; nothing of it is stored."""
    conn = seeded.connect("processor")
    owner = seeded.connect("owner")
    before = _snapshot(owner)
    symbol = TRAILING_NEWLINE
    msg = InputMessage("data", 1, 0, symbol.encode(), _bars_json(symbol))
    try:
        result = BatchWriter(conn, "injection-test", 900_000).apply([msg])
    except psycopg2.IntegrityError:
        conn.rollback()
    else:  # once the contract refuses it, it is a plain dead letter
        conn.commit()
        assert [type(d.error) for d in result.dead_letters] == [ContractError]
    after = _snapshot(owner)
    for table in ("prices", "indicators", "indicator_state", "tasks", "symbols list"):
        assert after[table] == before[table], table


@pytest.mark.integration
def test_processor_survives_a_nul_key(seeded) -> None:
    conn = seeded.connect("processor")
    msg = InputMessage("data", 2, 0, b"AA\x00PL", _valid_bars("MSFT"))
    try:
        result = BatchWriter(conn, "injection-test", 900_000).apply([msg])
    finally:
        conn.rollback()
    assert [type(d.error) for d in result.dead_letters] == [ContractError]


@pytest.mark.integration
def test_processor_survives_a_nul_in_task_id(seeded) -> None:
    conn = seeded.connect("processor")
    value = _bars_json("MSFT").replace(b'"task_id": "t1"', b'"task_id": "t\\u0000x"')
    with pytest.raises(ContractError, match=r"\$\.task_id"):
        contracts.decode_bars(value)
    msg = InputMessage("data", 3, 0, b"MSFT", value)
    try:
        result = BatchWriter(conn, "injection-test", 900_000).apply([msg])
    finally:
        conn.rollback()
    assert [type(d.error) for d in result.dead_letters] == [ContractError]


def test_agent_answers_a_task_its_source_refuses(tmp_path: Path) -> None:
    import types

    from finpipe_core.settings import Settings
    from workers.agent.main import Agent
    from workers.sources.csv_source import CsvSource

    # Built in code, past the contract (which now refuses it), as a producer bug could.
    task = contracts.FetchTask(
        schema_version=1,
        task_id="t1",
        symbol=TRAILING_NEWLINE,
        start=dt.date(2020, 1, 2),
        end=dt.date(2020, 1, 31),
    )
    agent = types.SimpleNamespace(
        source=CsvSource(tmp_path),
        settings=Settings(),
        _wait_for_budget=lambda: None,
        _wait_polling=lambda _s: None,
    )
    [result] = Agent._results(agent, task)  # the agent's per-task logic, without Kafka
    assert result.status == "failed"


# --- the finpipe CLI -------------------------------------------------------------------------
CLI_COMMANDS = [
    ["symbols", "add", "{}"],
    ["symbols", "remove", "{}"],
    ["unpark", "{}"],
    ["chart", "{}"],
    ["dlq", "replay", "--symbol", "{}"],
]


@pytest.fixture
def universe_file(tmp_path: Path, monkeypatch):
    """A universe file the CLI edits (FINPIPE_UNIVERSE), with the settings cache reset."""
    from finpipe_core.settings import get_settings

    path = tmp_path / "universe.csv"
    path.write_text("symbol,name\nMSFT,Microsoft\n")
    monkeypatch.setenv("FINPIPE_UNIVERSE", str(path))
    monkeypatch.setenv("FINPIPE_PG_PORT", "1")  # nothing may reach a database
    monkeypatch.setenv("FINPIPE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


@pytest.mark.parametrize("command", CLI_COMMANDS, ids=lambda c: " ".join(c[:-1]))
@pytest.mark.parametrize(
    ("name", "symbol"),
    [c for c in CASES if "\x00" not in c[1]],
    ids=[n for n, s in CASES if "\x00" not in s],
)
def test_cli_refuses_hostile_symbols(
    universe_file: Path, command: list[str], name: str, symbol: str
) -> None:
    from finpipe.cli import app

    args = [a.replace("{}", symbol) for a in command]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert isinstance(result.exception, ContractError), repr(result.exception)
    assert "invalid symbol" in str(result.exception)
    assert universe_file.read_text() == "symbol,name\nMSFT,Microsoft\n"


def test_cli_prints_a_plain_error(universe_file: Path, monkeypatch, capsys) -> None:
    """Through the real entry point: one line naming the symbol, exit 1, no traceback."""
    from finpipe import cli

    monkeypatch.setattr("sys.argv", ["finpipe", "symbols", "add", HOSTILE["sql quote"]])
    with pytest.raises(SystemExit) as exited:
        cli.run()
    assert exited.value.code == 1
    out = capsys.readouterr().out
    assert "invalid symbol" in out and "DROP TABLE" in out and "Traceback" not in out


def test_cli_symbols_add_keeps_the_file_valid_on_a_bad_name(universe_file: Path) -> None:
    from finpipe.cli import app

    result = CliRunner().invoke(app, ["symbols", "add", "IBM", "--name", "two\nlines"])
    assert result.exit_code != 0
    assert universe_file.read_text() == "symbol,name\nMSFT,Microsoft\n"
