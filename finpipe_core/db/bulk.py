"""Bulk upserts: binary COPY into a temporary staging table, then one INSERT ... ON CONFLICT.

Measured here: COPY alone 390k rows/s, COPY + upsert 130k-205k rows/s, ``execute_values``
upserts 37k-40k rows/s; formatting rows as text in Python cost more than the COPY itself, so
rows are packed with numpy straight into PostgreSQL's binary COPY format (a structured array
per symbol, no per-value Python work). Values are float8 bit for bit; NaN is stored as NULL.
"""

from __future__ import annotations

import datetime as dt
import io
import struct
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)
_PG_EPOCH_ORDINAL = dt.date(2000, 1, 1).toordinal()


@lru_cache(maxsize=256)
def _row_dtype(symbol_bytes: int, n_columns: int) -> np.dtype:
    """One binary COPY row: field count, symbol, date, then (length, float8) per column.

    Built once per shape: a structured dtype costs ~100 us to build, more than packing a
    one-row message, and a daily update packs thousands of them.
    """
    value = np.dtype([("len", ">i4"), ("val", ">f8")])
    return np.dtype(
        [
            ("count", ">i2"),
            ("sym_len", ">i4"),
            ("sym", f"S{symbol_bytes}"),
            ("date_len", ">i4"),
            ("date", ">i4"),
            ("values", value, (n_columns,)),
        ]
    )


def pack_rows(symbol: str, dates: Sequence[dt.date], columns: Sequence[np.ndarray]) -> bytes:
    """Binary COPY rows (symbol text, date, float8 * len(columns)) of one symbol."""
    n = len(dates)
    if n == 0:
        return b""
    sym = symbol.encode()
    rows = np.empty(n, dtype=_row_dtype(len(sym), len(columns)))
    rows["count"] = 2 + len(columns)
    rows["sym_len"] = len(sym)
    rows["sym"] = sym
    rows["date_len"] = 4
    rows["date"] = [d.toordinal() - _PG_EPOCH_ORDINAL for d in dates]
    values = rows["values"]
    values["len"] = 8
    values["val"] = np.column_stack(columns)
    return rows.tobytes()


def upsert_rows(
    cur: Cursor,
    table: str,
    columns: Sequence[str],
    key: Sequence[str],
    packed: Sequence[bytes],
    nan_as_null: Sequence[str] = (),
) -> None:
    """Upsert ``packed`` rows (from ``pack_rows``) into ``table``: new keys inserted, existing
    ones overwritten; NaN in the ``nan_as_null`` columns becomes NULL."""
    if not any(packed):
        return
    staging = f"staging_{table}"
    cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        ).format(sql.Identifier(staging), sql.Identifier(table))
    )
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    data = io.BytesIO(b"".join([_HEADER, *packed, _TRAILER]))
    cur.copy_expert(
        sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT binary)")
        .format(sql.Identifier(staging), cols)
        .as_string(cur),
        data,
    )
    selected = sql.SQL(", ").join(
        sql.SQL("NULLIF({0}, 'NaN')").format(sql.Identifier(c))
        if c in nan_as_null
        else sql.Identifier(c)
        for c in columns
    )
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in columns if c not in key
    )
    cur.execute(
        sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) DO UPDATE SET {}").format(
            sql.Identifier(table),
            cols,
            selected,
            sql.Identifier(staging),
            sql.SQL(", ").join(map(sql.Identifier, key)),
            updates,
        )
    )
    cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(staging)))
