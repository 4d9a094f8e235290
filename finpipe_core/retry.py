"""Backoff for retries: exponential with full jitter.

Hand-written (a few lines): retry libraries (tenacity, backoff) offer full jitter only inside
their own blocking retry loops, and the workers must keep polling Kafka while they wait.
"""

from __future__ import annotations

import random

_MAX_EXPONENT = 62  # 2.0 ** 63 still fits a float; larger attempts just hit the cap


def backoff_delay(
    attempt: int,
    base: float = 1.0,
    cap: float = 300.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first): full jitter.

    Uniform in ``[0, min(cap, base * 2**attempt)]``, so workers that failed together do not
    retry together.
    """
    if attempt < 0 or base < 0 or cap < 0:
        raise ValueError("attempt, base and cap must not be negative")
    ceiling = min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))
    return (rng or random).uniform(0.0, ceiling)
