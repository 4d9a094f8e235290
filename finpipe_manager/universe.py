"""The symbol universe: which symbols the manager requests, and its copy in ``symbols``.

A universe is a CSV file with the columns ``symbol,name`` (the committed default is
``finpipe_manager/data/universe.csv``), or the built-in ``sample`` set: the symbols of the offline
bokeh sample data. Every symbol is checked against ``contracts.SYMBOL_PATTERN`` while the file
is read, so a symbol with quotes, spaces or semicolons stops the load with the file and line
in the message, before anything reaches SQL, Kafka or a source.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psycopg2.extensions
from psycopg2.extras import execute_values

from finpipe_core.contracts import validate_symbol
from finpipe_core.exceptions import ContractError, FatalError

logger = logging.getLogger(__name__)

DATA_DIR: Final = Path(__file__).parent / "data"
DEFAULT_UNIVERSE_PATH: Final = DATA_DIR / "universe.csv"
COLUMNS: Final = ("symbol", "name")
MAX_NAME_LENGTH: Final = 200
# A universe larger than this is almost certainly the wrong file.
MAX_SYMBOLS: Final = 20_000

# The offline sample data (bokeh_sampledata): AAPL, IBM and MSFT 2000-2013, GOOG from 2004,
# FB 2012-2013 (listed as META today; the sample data keeps the old ticker).
SAMPLE_UNIVERSE: Final = (
    ("AAPL", "Apple Inc."),
    ("FB", "Meta Platforms, Inc. (as FB)"),
    ("GOOG", "Alphabet Inc. Class C"),
    ("IBM", "International Business Machines Corporation"),
    ("MSFT", "Microsoft Corporation"),
)


class UniverseError(FatalError, ValueError):
    """The universe file is unusable; fix the named line (or FINPIPE_UNIVERSE) and rerun."""


@dataclass(frozen=True, slots=True)
class UniverseEntry:
    """One symbol of the universe."""

    symbol: str
    name: str


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What ``sync_universe`` changed in ``symbols``."""

    active: int
    added: int
    deactivated: int


def parse_universe(text: str, source: str = "<string>") -> list[UniverseEntry]:
    """Parse and validate universe CSV text (header ``symbol,name``).

    :param source: file name used in error messages.
    :raises UniverseError: on a bad header, an invalid or duplicate symbol, or no symbols.
    """
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(h.strip().lower() for h in header) != COLUMNS:
        raise UniverseError(f"{source}: the header must be {','.join(COLUMNS)}, got {header!r}")
    entries: list[UniverseEntry] = []
    seen: set[str] = set()
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(COLUMNS):
            raise UniverseError(f"{source}:{line}: expected 2 columns (symbol,name), got {row!r}")
        symbol, name = row
        try:
            validate_symbol(symbol)
        except ContractError as exc:
            raise UniverseError(f"{source}:{line}: {exc}") from exc
        if symbol in seen:
            raise UniverseError(f"{source}:{line}: duplicate symbol {symbol!r}")
        if len(name) > MAX_NAME_LENGTH or not name.isprintable():
            raise UniverseError(f"{source}:{line}: unusable name for {symbol}: {name[:50]!r}")
        seen.add(symbol)
        entries.append(UniverseEntry(symbol, name.strip()))
    if not entries:
        raise UniverseError(f"{source}: no symbols")
    if len(entries) > MAX_SYMBOLS:
        raise UniverseError(f"{source}: {len(entries)} symbols, more than {MAX_SYMBOLS}")
    return entries


def load_universe(name: str = "default") -> list[UniverseEntry]:
    """The universe called ``name``: ``default``, ``sample``, or the path of a CSV file.

    :raises UniverseError: if the file is missing or invalid.
    """
    if name == "sample":
        return [UniverseEntry(symbol, label) for symbol, label in SAMPLE_UNIVERSE]
    path = DEFAULT_UNIVERSE_PATH if name == "default" else Path(name).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UniverseError(
            f"cannot read universe {name!r} ({path}): {exc}; use 'default', 'sample' or a CSV path"
        ) from exc
    return parse_universe(text, source=str(path))


def sync_universe(
    conn: psycopg2.extensions.connection,
    entries: Sequence[UniverseEntry],
    *,
    deactivate_missing: bool = True,
) -> SyncResult:
    """Upsert ``entries`` into ``symbols`` (active) with a ``symbol_state`` row each, in one
    transaction.

    :param deactivate_missing: mark symbols not in ``entries`` inactive, so the universe file
        stays the one list of what is requested and awaited.
    :raises UniverseError: if an entry's symbol is invalid (checked again here, before SQL).
    """
    for entry in entries:
        try:
            validate_symbol(entry.symbol)
        except ContractError as exc:
            raise UniverseError(str(exc)) from exc
    if not entries:
        raise UniverseError("refusing to sync an empty universe")
    symbols = [e.symbol for e in entries]
    with conn, conn.cursor() as cur:
        cur.execute("SELECT symbol FROM symbols WHERE symbol = ANY(%s)", (symbols,))
        known = {row[0] for row in cur.fetchall()}
        execute_values(
            cur,
            "INSERT INTO symbols (symbol, name, active) VALUES %s "
            "ON CONFLICT (symbol) DO UPDATE SET name = EXCLUDED.name, active = true",
            [(e.symbol, e.name, True) for e in entries],
        )
        execute_values(
            cur,
            "INSERT INTO symbol_state (symbol) VALUES %s ON CONFLICT (symbol) DO NOTHING",
            [(s,) for s in symbols],
        )
        deactivated = 0
        if deactivate_missing:
            cur.execute(
                "UPDATE symbols SET active = false WHERE active AND NOT (symbol = ANY(%s))",
                (symbols,),
            )
            deactivated = cur.rowcount
    result = SyncResult(
        active=len(symbols), added=len(set(symbols) - known), deactivated=deactivated
    )
    logger.info(
        "universe synced active=%d added=%d deactivated=%d",
        result.active,
        result.added,
        result.deactivated,
    )
    return result


def active_symbols(conn: psycopg2.extensions.connection) -> list[str]:
    """Active symbols in ``symbols``, sorted."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT symbol FROM symbols WHERE active ORDER BY symbol")
        return [row[0] for row in cur.fetchall()]


def symbols_of(entries: Iterable[UniverseEntry]) -> list[str]:
    """The symbols of ``entries``, in order."""
    return [e.symbol for e in entries]
