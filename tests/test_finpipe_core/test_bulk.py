"""Binary COPY packing and writes on the real PostgreSQL: values bit for bit, NaN as NULL
where asked, plain COPY refusing an existing key, upserts overwriting."""

from __future__ import annotations

import datetime as dt

import numpy as np
import psycopg2
import psycopg2.extensions
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finpipe_core.db.bulk import FEW_ROWS, copy_rows, pack_rows, read_rows, upsert_rows

pytestmark = pytest.mark.integration

COLUMNS = ("a", "b", "c", "d")
DAYS = [dt.date(2020, 1, 1) + dt.timedelta(days=i) for i in range(40)]


@pytest.fixture
def cur(db: psycopg2.extensions.connection):
    with db.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE bulk_t (symbol text, date date, a float8, b float8, c float8, "
            "d float8, PRIMARY KEY (symbol, date))"
        )
        yield cur
    db.rollback()


def _read(cur) -> dict[dt.date, tuple]:
    cur.execute("SELECT date, a, b, c, d FROM bulk_t ORDER BY date")
    return {row[0]: row[1:] for row in cur.fetchall()}


def _expected(values: np.ndarray, nan_as_null: bool) -> dict[dt.date, tuple]:
    def cell(v: float):
        return None if (nan_as_null and np.isnan(v)) else float(v)

    return {DAYS[i]: tuple(cell(v) for v in row) for i, row in enumerate(values)}


def _same(stored: dict, expected: dict) -> bool:
    """Equal bit for bit, NaN equal to NaN."""

    def key(v):
        return None if v is None else np.float64(v).tobytes()

    return {d: tuple(map(key, r)) for d, r in stored.items()} == {
        d: tuple(map(key, r)) for d, r in expected.items()
    }


cells = st.one_of(
    st.just(float("nan")),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.lists(cells, min_size=4, max_size=4), min_size=1, max_size=len(DAYS)),
    nan_as_null=st.booleans(),
)
def test_packed_rows_read_back_exactly(cur, rows, nan_as_null) -> None:
    """Any mix of NULL patterns (grouped into one array per pattern) reads back as written."""
    cur.execute("TRUNCATE bulk_t")
    values = np.array(rows, dtype=np.float64)
    dates = DAYS[: len(values)]
    copy_rows(
        cur,
        "bulk_t",
        ("symbol", "date", *COLUMNS),
        [pack_rows("SYM.X", dates, list(values.T), nan_as_null=nan_as_null)],
    )
    assert _same(_read(cur), _expected(values, nan_as_null))


def test_warm_up_rows_become_null_and_match_the_plain_packer_after(cur) -> None:
    values = np.arange(40 * 4, dtype=np.float64).reshape(40, 4)
    for column, warm_up in enumerate((0, 3, 13, 33)):
        values[:warm_up, column] = np.nan
    packed = pack_rows("AAPL", DAYS, list(values.T), nan_as_null=True)
    # Rows past every warm-up are packed as the plain packer packs them.
    assert pack_rows("AAPL", DAYS[33:], list(values[33:].T)) in packed
    copy_rows(cur, "bulk_t", ("symbol", "date", *COLUMNS), [packed])
    cur.execute("SELECT count(*) FROM bulk_t WHERE d IS NULL")
    assert cur.fetchone()[0] == 33


def test_copy_refuses_an_existing_key_and_upsert_overwrites_it(cur) -> None:
    one = np.ones((2, 4))
    columns = ("symbol", "date", *COLUMNS)
    copy_rows(cur, "bulk_t", columns, [pack_rows("AAPL", DAYS[:2], list(one.T))])
    cur.execute("SAVEPOINT s")
    with pytest.raises(psycopg2.errors.UniqueViolation):
        copy_rows(cur, "bulk_t", columns, [pack_rows("AAPL", DAYS[1:3], list((2 * one).T))])
    cur.execute("ROLLBACK TO SAVEPOINT s")
    upsert_rows(
        cur,
        "bulk_t",
        columns,
        ("symbol", "date"),
        [pack_rows("AAPL", DAYS[1:3], list((2 * one).T))],
    )
    assert [r[0] for r in _read(cur).values()] == [1.0, 2.0, 2.0]


def test_few_rows_are_packed_as_the_array_packer_packs_them() -> None:
    """Short messages take a per-row packer; its bytes must be the array packer's."""
    values = np.random.default_rng(7).standard_normal((FEW_ROWS + 1, 4)) * 1e6
    many = pack_rows("BRK-B", DAYS[: FEW_ROWS + 1], list(values.T), nan_as_null=True)
    few = pack_rows("BRK-B", DAYS[:FEW_ROWS], list(values[:FEW_ROWS].T), nan_as_null=True)
    assert many.startswith(few) and len(few) == len(many) * FEW_ROWS // (FEW_ROWS + 1)


def test_read_rows_returns_what_was_written(cur) -> None:
    values = np.random.default_rng(3).standard_normal((len(DAYS), 4)) * 1e3
    copy_rows(
        cur, "bulk_t", ("symbol", "date", *COLUMNS), [pack_rows("AAPL", DAYS, list(values.T))]
    )
    copy_rows(
        cur, "bulk_t", ("symbol", "date", *COLUMNS), [pack_rows("IBM", DAYS, list(-values.T))]
    )
    dates, columns = read_rows(
        cur, "SELECT date, a, b, c, d FROM bulk_t WHERE symbol = %s ORDER BY date", ("AAPL",), 4
    )
    assert dates == DAYS
    assert np.array_equal(columns, values.T)
