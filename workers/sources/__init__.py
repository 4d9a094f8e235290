"""Bar sources: where the agents get daily bars. Pick one with ``FINPIPE_SOURCE``."""

from __future__ import annotations

from finpipe_core.settings import Settings
from workers.sources.base import (
    BarSource,
    NoDataError,
    RawBars,
    SourceError,
    SourceUnavailableError,
)
from workers.sources.ratelimit import RateLimiter

__all__ = [
    "BarSource",
    "NoDataError",
    "RawBars",
    "SourceError",
    "SourceUnavailableError",
    "make_rate_limiter",
    "make_source",
]


def make_source(settings: Settings) -> BarSource:
    """The source named by ``settings.source`` (imported lazily: yfinance is heavy)."""
    if settings.source == "sample":
        from workers.sources.sample import SampleSource

        return SampleSource()
    if settings.source == "synthetic":
        from workers.sources.synthetic import SyntheticSource

        return SyntheticSource()
    if settings.source == "csv":
        from workers.sources.csv_source import CsvSource

        if not settings.csv_dir:
            raise ValueError("FINPIPE_SOURCE=csv needs FINPIPE_CSV_DIR")
        return CsvSource(settings.csv_dir)
    from workers.sources.yfinance_source import YFinanceSource

    return YFinanceSource()


def make_rate_limiter(settings: Settings) -> RateLimiter | None:
    """The shared request budget for sources that have one (yfinance); None otherwise."""
    if settings.source != "yfinance":
        return None
    from workers.sources.ratelimit import PostgresRateLimiter

    return PostgresRateLimiter(
        requests_per_minute=settings.yf_requests_per_minute,
        requests_per_hour=settings.yf_requests_per_hour,
    )
