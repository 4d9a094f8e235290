"""A request budget shared by every agent, and backoff with full jitter.

Yahoo limits requests per outbound IP, so all agents behind one IP draw on one budget. The
budget lives in PostgreSQL (pyrate-limiter's ``PostgresBucket``: a sliding-window log, one row
per admitted request, checked and written under a table lock, timestamps from the database's
clock), so any number of agent processes on any number of hosts share it exactly.

The interface never blocks: ``try_acquire(name)`` returns 0 when the request may go now, or
the seconds to wait. The agent pauses its partitions for that long and keeps polling::

    wait = limiter.try_acquire("yfinance")
    if wait:
        consumer.pause(partitions); resume_at = time.monotonic() + wait
    else:
        bars = source.fetch(...)

``name`` selects the budget: every distinct name is its own limit (its own table,
``ratelimit___<prefix><name>``), all with the same rates; one name per outbound IP.

``backoff_delay`` is the wait after a 429 or a network error: full jitter, as in the AWS
architecture blog's "Exponential Backoff And Jitter". It is hand-written (one line) because the
libraries that have it (tenacity's ``wait_random_exponential``, backoff's ``full_jitter``) come
with their own blocking retry loops, which a poll loop cannot use, and take no injectable RNG.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from pyrate_limiter import AbstractBucket, Duration, InMemoryBucket, Rate, RateItem

from finpipe_core.exceptions import RetriableError

logger = logging.getLogger(__name__)

DEFAULT_REQUESTS_PER_MINUTE = 60
# Yahoo's unofficial limit is about 2,000 requests per hour per IP; stay under it.
DEFAULT_REQUESTS_PER_HOUR = 1500
DEFAULT_LIMIT_NAME = "yfinance"
# Prefix of the budget tables, so finpipe's are recognisable among pyrate's.
TABLE_PREFIX = "finpipe_"
# Another agent holds the bucket's table lock for a few milliseconds: look again this soon.
LOCK_BUSY_WAIT_S = 0.05
# Old rows are deleted at most this often per budget (and only rows outside every window).
LEAK_INTERVAL_S = 30.0
# Waiting this long for a pooled database connection means the database is in trouble.
POOL_TIMEOUT_S = 5.0
POOL_MAX_SIZE = 2
# Backoff defaults: 1 s, 2 s, 4 s ... capped at 5 min (all scaled by the jitter).
# 2**attempt stops growing here; min(cap, ...) has long taken over.
_NAME_RE = re.compile(r"^[a-z0-9_]{1,40}$")


class RateLimitUnavailableError(RetriableError):
    """The shared budget cannot be consulted (database down); try again later."""


class RateLimiter(Protocol):
    """What the agent uses: admission without blocking."""

    def try_acquire(self, name: str = DEFAULT_LIMIT_NAME, weight: int = 1) -> float:
        """0 when ``weight`` requests may go now (and are counted), else seconds to wait."""
        ...

    def close(self) -> None: ...


def make_rates(
    requests_per_minute: int | None = DEFAULT_REQUESTS_PER_MINUTE,
    requests_per_hour: int | None = DEFAULT_REQUESTS_PER_HOUR,
) -> list[Rate]:
    """pyrate-limiter rates for a per-minute and a per-hour limit (None leaves one out)."""
    rates = []
    if requests_per_minute:
        rates.append(Rate(requests_per_minute, Duration.MINUTE))
    if requests_per_hour:
        rates.append(Rate(requests_per_hour, Duration.HOUR))
    if not rates:
        raise ValueError("a rate limiter needs at least one rate")
    return rates


class BucketRateLimiter:
    """Non-blocking admission on pyrate-limiter buckets, one bucket per budget name.

    :param bucket_factory: makes the bucket of a budget name.
    :param rates: the rates every bucket enforces (to check weights up front).
    """

    def __init__(
        self,
        bucket_factory: Callable[[str], AbstractBucket],
        rates: Sequence[Rate],
        *,
        leak_interval: float = LEAK_INTERVAL_S,
    ) -> None:
        self._factory = bucket_factory
        self._max_weight = min(rate.limit for rate in rates)
        self._leak_interval = leak_interval
        self._buckets: dict[str, AbstractBucket] = {}
        self._leaked_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def try_acquire(self, name: str = DEFAULT_LIMIT_NAME, weight: int = 1) -> float:
        """0.0 when ``weight`` requests are admitted (and counted), else seconds to wait.

        :raises ValueError: a bad name, or a weight larger than the smallest limit.
        :raises RateLimitUnavailableError: the budget's store cannot be reached.
        """
        if not 1 <= weight <= self._max_weight:
            raise ValueError(f"weight {weight} must be between 1 and {self._max_weight}")
        with self._lock:  # buckets keep the last verdict in instance state
            try:
                bucket = self._bucket(name)
                now = bucket.now()
                decision = bucket.put_decision(RateItem(name, now, weight))
                self._maybe_leak(name, bucket, now)
            except (ValueError, RateLimitUnavailableError):
                raise
            except Exception as exc:
                raise RateLimitUnavailableError(
                    f"rate limit {name!r} unavailable: {type(exc).__name__}: {exc}"
                ) from exc
        if decision.allowed:
            return 0.0
        if decision.retry_after_ms is None:  # lock contention, not a full window
            return LOCK_BUSY_WAIT_S
        return max(decision.retry_after_ms / 1000.0, 0.001)

    def _bucket(self, name: str) -> AbstractBucket:
        bucket = self._buckets.get(name)
        if bucket is None:
            if not _NAME_RE.fullmatch(name):
                raise ValueError(f"rate limit name {name!r} must match {_NAME_RE.pattern}")
            bucket = self._buckets[name] = self._factory(name)
        return bucket

    def _maybe_leak(self, name: str, bucket: AbstractBucket, now: int) -> None:
        mono = time.monotonic()
        if mono - self._leaked_at.get(name, -self._leak_interval) >= self._leak_interval:
            self._leaked_at[name] = mono
            bucket.leak(now)

    def close(self) -> None:
        with self._lock:
            self._buckets.clear()


class InMemoryRateLimiter(BucketRateLimiter):
    """The same interface for one process only (tests, the offline demo)."""

    def __init__(
        self,
        requests_per_minute: int | None = DEFAULT_REQUESTS_PER_MINUTE,
        requests_per_hour: int | None = DEFAULT_REQUESTS_PER_HOUR,
        *,
        rates: Sequence[Rate] | None = None,
    ) -> None:
        chosen = list(rates) if rates else make_rates(requests_per_minute, requests_per_hour)
        super().__init__(lambda _name: InMemoryBucket(list(chosen)), chosen)


class PostgresRateLimiter(BucketRateLimiter):
    """A budget shared by every process that uses the same database and name.

    :param conninfo: libpq connection string; default: finpipe's database from settings.
    :param requests_per_minute: limit per rolling minute (None: none).
    :param requests_per_hour: limit per rolling hour (None: none).
    :param rates: explicit pyrate-limiter rates instead of the two above.
    :param pool_max_size: database connections this limiter may hold.
    :param pool_timeout: seconds to wait for a connection before giving up on this attempt.
    :param leak_interval: seconds between deletions of rows outside every window.
    """

    def __init__(
        self,
        conninfo: str | None = None,
        *,
        requests_per_minute: int | None = DEFAULT_REQUESTS_PER_MINUTE,
        requests_per_hour: int | None = DEFAULT_REQUESTS_PER_HOUR,
        rates: Sequence[Rate] | None = None,
        pool_max_size: int = POOL_MAX_SIZE,
        pool_timeout: float = POOL_TIMEOUT_S,
        leak_interval: float = LEAK_INTERVAL_S,
    ) -> None:
        from psycopg_pool import ConnectionPool
        from pyrate_limiter import PostgresBucket

        chosen = list(rates) if rates else make_rates(requests_per_minute, requests_per_hour)
        self._pool = ConnectionPool(
            conninfo if conninfo is not None else default_conninfo(),
            min_size=1,
            max_size=pool_max_size,
            timeout=pool_timeout,
            name="finpipe-ratelimit",
            open=True,
        )

        def factory(name: str) -> AbstractBucket:
            return PostgresBucket(self._pool, f"{TABLE_PREFIX}{name}", list(chosen))

        super().__init__(factory, chosen, leak_interval=leak_interval)

    @staticmethod
    def table_name(name: str) -> str:
        """The table holding budget ``name`` (pyrate-limiter's naming)."""
        return f"ratelimit___{TABLE_PREFIX}{name}"

    def close(self) -> None:
        super().close()
        self._pool.close()


def default_conninfo() -> str:
    """finpipe's database (settings ``pg_*``) as a libpq connection string."""
    from psycopg.conninfo import make_conninfo

    from finpipe_core.settings import get_settings

    return make_conninfo("", **get_settings().pg_connect_kwargs())
