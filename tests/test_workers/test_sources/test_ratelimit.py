"""The shared request budget against the real local PostgreSQL, and backoff_delay."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg2.extensions
import pytest
from pyrate_limiter import Duration, Rate

from finpipe_core.retry import backoff_delay
from finpipe_core.settings import Settings
from workers.sources.ratelimit import (
    InMemoryRateLimiter,
    PostgresRateLimiter,
    RateLimitUnavailableError,
    make_rates,
)


@pytest.fixture
def limiter_factory(
    local_stack: Settings, db: psycopg2.extensions.connection
) -> Iterator[Callable[..., PostgresRateLimiter]]:
    """Limiters on finpipe's database, as separate agents would make them; tables dropped."""
    made: list[PostgresRateLimiter] = []

    def make(**kwargs: object) -> PostgresRateLimiter:
        limiter = PostgresRateLimiter(**kwargs)  # type: ignore[arg-type]
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        limiter.close()
    with db.cursor() as cur:
        cur.execute(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE %s",
            (r"ratelimit\_\_\_finpipe\_test\_%",),
        )
        for (table,) in cur.fetchall():
            cur.execute(f'DROP TABLE IF EXISTS "{table}"')
    db.commit()


@pytest.fixture
def budget() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.mark.integration
class TestPostgresRateLimiter:
    def test_two_agents_share_one_limit(self, limiter_factory, budget: str) -> None:
        rates = [Rate(3, Duration.MINUTE)]
        agent_a, agent_b = limiter_factory(rates=rates), limiter_factory(rates=rates)
        assert [
            agent_a.try_acquire(budget),
            agent_b.try_acquire(budget),
            agent_a.try_acquire(budget),
        ] == [0.0, 0.0, 0.0]
        wait_b, wait_a = agent_b.try_acquire(budget), agent_a.try_acquire(budget)
        # The oldest admission leaves the one-minute window in just under 60 s.
        assert 55.0 < wait_b <= 60.01 and 55.0 < wait_a <= 60.01
        # Another name is another budget.
        assert agent_b.try_acquire(f"{budget}_other") == 0.0

    def test_window_reopens(self, limiter_factory, budget: str) -> None:
        rates = [Rate(2, 1000)]  # two per second
        agent_a, agent_b = limiter_factory(rates=rates), limiter_factory(rates=rates)
        assert agent_a.try_acquire(budget) == 0.0
        assert agent_b.try_acquire(budget) == 0.0
        wait = agent_a.try_acquire(budget)
        assert 0.0 < wait <= 1.01
        time.sleep(wait + 0.05)
        assert agent_b.try_acquire(budget) == 0.0

    def test_concurrent_agents_never_exceed_the_limit(self, limiter_factory, budget) -> None:
        rates = [Rate(8, Duration.MINUTE)]
        agents = [limiter_factory(rates=rates) for _ in range(3)]
        admitted: list[int] = []

        def run(limiter: PostgresRateLimiter) -> None:
            for _ in range(200):
                wait = limiter.try_acquire(budget)
                if wait == 0.0:
                    admitted.append(1)
                elif wait > 1.0:  # the window is full
                    return
                else:  # another agent held the lock: look again shortly
                    time.sleep(wait)

        threads = [threading.Thread(target=run, args=(a,)) for a in agents for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(admitted) == 8

    def test_weight_and_name_are_checked(self, limiter_factory, budget: str) -> None:
        limiter = limiter_factory(requests_per_minute=5, requests_per_hour=100)
        assert limiter.try_acquire(budget, weight=5) == 0.0
        assert limiter.try_acquire(budget, weight=1) > 0.0
        with pytest.raises(ValueError, match="weight 6"):
            limiter.try_acquire(budget, weight=6)
        with pytest.raises(ValueError, match="must match"):
            limiter.try_acquire("Robert'); DROP TABLE prices;--")

    def test_unreachable_database_is_retriable(self) -> None:
        limiter = PostgresRateLimiter(
            "host=127.0.0.1 port=1 dbname=x user=x connect_timeout=1", pool_timeout=0.5
        )
        try:
            with pytest.raises(RateLimitUnavailableError):
                limiter.try_acquire("test_unreachable")
        finally:
            limiter.close()


def test_in_memory_limiter_has_the_same_interface() -> None:
    limiter = InMemoryRateLimiter(rates=[Rate(2, Duration.MINUTE)])
    assert [limiter.try_acquire("yfinance") for _ in range(2)] == [0.0, 0.0]
    assert 59.0 < limiter.try_acquire("yfinance") <= 60.01


def test_make_rates() -> None:
    assert [(r.limit, r.interval) for r in make_rates(60, 1500)] == [
        (60, 60_000),
        (1500, 3_600_000),
    ]
    assert [(r.limit, r.interval) for r in make_rates(None, 100)] == [(100, 3_600_000)]
    with pytest.raises(ValueError):
        make_rates(None, None)


class TestBackoffDelay:
    def test_full_jitter_bounds(self) -> None:
        rng = random.Random(7)
        for attempt in range(12):
            ceiling = min(30.0, 0.5 * 2**attempt)
            delays = [backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(200)]
            assert all(0.0 <= d <= ceiling for d in delays)
            # Spread over the whole interval, not clustered at the top.
            assert min(delays) < 0.1 * ceiling and max(delays) > 0.9 * ceiling

    def test_reproducible_with_a_seeded_rng(self) -> None:
        first = [backoff_delay(a, 1.0, 60.0, random.Random(1)) for a in range(5)]
        assert first == [backoff_delay(a, 1.0, 60.0, random.Random(1)) for a in range(5)]

    def test_huge_attempt_is_capped(self) -> None:
        assert 0.0 <= backoff_delay(10_000, 1.0, 300.0, random.Random(3)) <= 300.0

    def test_rejects_negative_input(self) -> None:
        with pytest.raises(ValueError):
            backoff_delay(-1)
