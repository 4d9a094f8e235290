"""Bulk upserts: COPY rows into a temporary staging table, then one INSERT ... ON CONFLICT.

Measured here: COPY alone 390k rows/s, COPY + upsert 130k-205k rows/s, ``execute_values``
upserts 37k-40k rows/s. Rows are formatted as COPY text by joining ``repr`` of floats
(shortest round-trip form, so values are stored exactly); NaN becomes NULL.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import numpy as np
from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

NULL = "\\N"


def copy_text(rows: Iterable[Sequence[str]]) -> str:
    """COPY text of already formatted fields (tab-separated, one row per line)."""
    return "".join("\t".join(row) + "\n" for row in rows)


def format_columns(symbol: str, dates: Sequence[object], columns: Sequence[np.ndarray]) -> str:
    """COPY text for rows (symbol, date, *columns) of one symbol; NaN as NULL."""
    if not len(dates):
        return ""
    fields = [[symbol] * len(dates), [str(d) for d in dates]]
    fields += [list(map(repr, np.asarray(c, dtype=np.float64).tolist())) for c in columns]
    text = "".join("\t".join(row) + "\n" for row in zip(*fields, strict=True))
    # repr(nan) is 'nan'; no other field can start with it (symbols are upper case).
    return text.replace("\tnan", "\t" + NULL)


def upsert_copy(
    cur: Cursor, table: str, columns: Sequence[str], key: Sequence[str], text: str
) -> None:
    """Upsert COPY ``text`` into ``table``: new keys inserted, existing ones overwritten."""
    if not text:
        return
    staging = f"staging_{table}"
    cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        ).format(sql.Identifier(staging), sql.Identifier(table))
    )
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    cur.copy_expert(
        sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(staging), cols).as_string(cur),
        io.StringIO(text),
    )
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in columns if c not in key
    )
    cur.execute(
        sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) DO UPDATE SET {}").format(
            sql.Identifier(table), cols, cols, sql.Identifier(staging),
            sql.SQL(", ").join(map(sql.Identifier, key)), updates,
        )
    )
    cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(staging)))
