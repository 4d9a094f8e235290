"""Opening PostgreSQL connections from settings."""

from __future__ import annotations

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
