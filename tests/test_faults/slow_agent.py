"""The agent (``workers.agent.main.main``) with a slow or flaky synthetic source, for
test_fault_slow_source.py. Nothing in ``workers/`` changes: this entry point patches the
source and, optionally, the consumer's poll interval before the agent starts.

Environment (besides the FINPIPE_* settings):

- FAULT_SLOW_SYMBOLS / FAULT_SLOW_SECONDS: a fetch of one of these symbols sleeps this long
  (inside ``fetch``, i.e. without polling Kafka, like a hung HTTP request).
- FAULT_MARKER_DIR: with it, each (symbol, start) is slow only the first time any agent
  fetches it (a marker file per task, created atomically), i.e. a transient slowness.
- FAULT_UNAVAILABLE_SYMBOLS / FAULT_UNAVAILABLE_SECONDS: fetches of these symbols raise
  SourceUnavailableError until this long after their first attempt (the agent then waits in
  its backoff path, polling with its partitions paused).
- FAULT_BACKOFF_SECONDS: a fixed backoff instead of the random one (deterministic waits).
- FAULT_FETCH_SECONDS: every fetch takes this long (a source's latency, e.g. Yahoo's), so
  the agents always have work in flight.

Consumer timing comes from the settings (FINPIPE_KAFKA_MAX_POLL_INTERVAL_MS, ...).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import workers.agent.main as agent_main
from workers.sources.base import SourceUnavailableError
from workers.sources.synthetic import SyntheticSource

logger = logging.getLogger("slow_agent")


def _symbols(name: str) -> set[str]:
    return {s for s in os.environ.get(name, "").split(",") if s}


SLOW = _symbols("FAULT_SLOW_SYMBOLS")
SLOW_SECONDS = float(os.environ.get("FAULT_SLOW_SECONDS", "0"))
MARKERS = os.environ.get("FAULT_MARKER_DIR")
UNAVAILABLE = _symbols("FAULT_UNAVAILABLE_SYMBOLS")
UNAVAILABLE_SECONDS = float(os.environ.get("FAULT_UNAVAILABLE_SECONDS", "0"))
FETCH_SECONDS = float(os.environ.get("FAULT_FETCH_SECONDS", "0"))

_real_fetch = SyntheticSource.fetch


def _first_time(tag: str) -> bool:
    """True for the first caller (of any process) with this tag."""
    try:
        fd = os.open(Path(MARKERS or ".") / tag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, f"{time.time()}\n".encode())
    os.close(fd)
    return True


def _first_attempt_at(tag: str) -> float:
    path = Path(MARKERS or ".") / tag
    _first_time(tag)
    return float(path.read_text().strip() or time.time())


def fetch(self, symbol, start, end):
    if symbol in UNAVAILABLE:
        waited = time.time() - _first_attempt_at(f"unavailable-{symbol}-{start}")
        if waited < UNAVAILABLE_SECONDS:
            logger.warning(
                "fault: %s unavailable (%.1f s of %.1f s)", symbol, waited, UNAVAILABLE_SECONDS
            )
            raise SourceUnavailableError(f"fault injection: {symbol} unavailable")
    if symbol in SLOW and (MARKERS is None or _first_time(f"slow-{symbol}-{start}")):
        logger.warning(
            "fault: slow fetch start symbol=%s start=%s seconds=%.1f", symbol, start, SLOW_SECONDS
        )
        time.sleep(SLOW_SECONDS)
        logger.warning("fault: slow fetch end symbol=%s start=%s", symbol, start)
    time.sleep(FETCH_SECONDS)
    return _real_fetch(self, symbol, start, end)


def main() -> int:
    SyntheticSource.fetch = fetch
    if os.environ.get("FAULT_BACKOFF_SECONDS"):
        fixed = float(os.environ["FAULT_BACKOFF_SECONDS"])
        agent_main.backoff_delay = lambda attempt, *a, **k: fixed
    return agent_main.main()


if __name__ == "__main__":
    sys.exit(main())
