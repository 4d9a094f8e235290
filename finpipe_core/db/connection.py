"""Opening PostgreSQL connections from settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions

from finpipe_core.settings import Settings, get_settings


def connect(
    settings: Settings | None = None, *, database: str | None = None, **overrides: object
) -> psycopg2.extensions.connection:
    """A new psycopg2 connection to finpipe's database (or ``database``).

    :param overrides: extra ``psycopg2.connect`` arguments, e.g. ``connect_timeout``.
    """
    kwargs = (settings or get_settings()).pg_connect_kwargs(database)
    kwargs.setdefault("connect_timeout", 10)
    kwargs.update(overrides)
    return psycopg2.connect(**kwargs)


@contextmanager
def connection(
    settings: Settings | None = None, *, database: str | None = None, **overrides: object
) -> Iterator[psycopg2.extensions.connection]:
    """``connect`` as a context manager that closes the connection on exit.

    psycopg2's own ``with conn:`` ends a transaction but leaves the connection open; this is
    the one place that closes it, so callers never write try/finally around a connection.
    """
    conn = connect(settings, database=database, **overrides)
    try:
        yield conn
    finally:
        conn.close()
