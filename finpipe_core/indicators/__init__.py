"""finpipe's indicator engine: TA-Lib in batch, and an incremental twin that matches it.

Pure computation (numpy, TA-Lib, numba-compiled kernels): no Kafka, database or Dagster, so the
processor, the Dagster asset checks and the tests all import the same numbers.

- ``compute_batch(bars)``: TA-Lib over a whole history (the reference).
- ``compute_incremental(bars, state)``: the same numbers for new bars only, continuing from a
  small msgpack-able state saved with the symbol (any chunking gives the batch result).
- ``split_adjust(...)``: put raw bars on the split-adjusted basis the indicators run on.
"""

from finpipe_core.indicators.bars import PRICE_MAX, PRICE_MIN, VOLUME_MAX, Bars, InvalidBarsError
from finpipe_core.indicators.engine import (
    INDICATOR_COLUMNS,
    LOOKBACK,
    STATE_VERSION,
    InvalidStateError,
    can_resume,
    compute_batch,
    compute_incremental,
    initial_state,
    state_vectors,
)
from finpipe_core.indicators.registry import INDICATORS, Indicator
from finpipe_core.indicators.splits import is_split, split_adjust, split_events, split_factors

__all__ = [
    "INDICATORS",
    "INDICATOR_COLUMNS",
    "LOOKBACK",
    "PRICE_MAX",
    "PRICE_MIN",
    "STATE_VERSION",
    "VOLUME_MAX",
    "Bars",
    "Indicator",
    "InvalidBarsError",
    "InvalidStateError",
    "can_resume",
    "compute_batch",
    "compute_incremental",
    "initial_state",
    "is_split",
    "split_adjust",
    "split_events",
    "split_factors",
    "state_vectors",
]
