"""What every long-running worker shares: logging, stop flag, health endpoint, metrics.

Liveness follows the poll loop: the loop calls ``Health.beat()`` each iteration, and
``/healthz`` answers 503 once no beat came for ``stale_after`` seconds (a stuck loop gets its
pod restarted). ``/readyz`` answers 200 once the worker has joined its group.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from finpipe_core.exceptions import FatalError
from finpipe_core.settings import Settings, get_settings

logger = logging.getLogger(__name__)

MESSAGES = Counter("finpipe_messages_total", "Messages handled", ["worker", "outcome"])
BARS = Counter("finpipe_bars_total", "Bars published (agent) or stored (processor)", ["worker"])
ERRORS = Counter("finpipe_errors_total", "Errors by class", ["worker", "error"])
BATCH_SECONDS = Histogram("finpipe_batch_seconds", "Time to handle one poll batch", ["worker"])
LAG = Gauge("finpipe_consumer_lag", "Messages behind the high watermark", ["worker", "partition"])


# How often a worker refreshes its lag gauge (cached watermarks: no broker round trip).
LAG_REPORT_SECONDS = 5.0


class LagReporter:
    """Sets ``finpipe_consumer_lag`` for the partitions a consumer holds now, at most every
    ``LAG_REPORT_SECONDS``: high watermark minus position, both as the client last saw them.
    The alert rules read it; KEDA reads the group's committed lag from the broker instead."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self._next = 0.0
        self._reported: set[str] = set()

    def maybe_report(self, consumer: _Consumer) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + LAG_REPORT_SECONDS
        try:
            positions = consumer.position(consumer.assignment())
        except Exception:
            return
        seen = set()
        for tp in positions:
            try:
                _low, high = consumer.get_watermark_offsets(tp, cached=True)
            except Exception:
                continue
            if high < 0 or tp.offset < 0:
                continue  # nothing fetched yet: unknown, not zero
            label = str(tp.partition)
            LAG.labels(self.worker, label).set(max(0, high - tp.offset))
            seen.add(label)
        for gone in self._reported - seen:  # revoked partitions stop being reported
            LAG.remove(self.worker, gone)
        self._reported = seen


class _Consumer(Protocol):
    def assignment(self) -> list: ...

    def position(self, partitions: list) -> list: ...

    def get_watermark_offsets(self, partition: object, cached: bool = ...) -> tuple[int, int]: ...


def configure_logging(level: str | None = None) -> None:
    """key=value logs on stderr, configured once per entry point (FINPIPE_LOG_LEVEL)."""
    level = level or get_settings().log_level
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("yfinance").setLevel(logging.WARNING)


def install_stop_handlers() -> threading.Event:
    """An event set by SIGTERM or SIGINT: the loop finishes its batch and exits."""
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        logger.info("signal=%s stopping after the current batch", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


class Health:
    """Liveness and readiness state, served over HTTP by ``serve``."""

    def __init__(self, stale_after: float = 120.0) -> None:
        self.stale_after = stale_after
        self._last_beat = time.monotonic()
        self.ready = False

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self._last_beat < self.stale_after

    def serve(self, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
        """Serve /healthz and /readyz on ``port`` (0: any free port) in a daemon thread."""
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                checks = {"/healthz": health.alive, "/readyz": lambda: health.ready}
                check = checks.get(self.path)
                ok = check is not None and check()
                self.send_response(200 if ok else (404 if check is None else 503))
                self.end_headers()
                self.wfile.write(b"ok\n" if ok else b"not ok\n")

            def log_message(self, *args: object) -> None:  # quiet: probes hit this often
                pass

        server = ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True, name="health").start()
        logger.info("health endpoint port=%d", server.server_address[1])
        return server


def start_metrics(port: int) -> None:
    """Prometheus metrics on ``port``; 0 disables them (tests run many workers)."""
    if port:
        start_http_server(port)
        logger.info("metrics endpoint port=%d", port)


class Worker(Protocol):
    stop: threading.Event

    def run(self) -> None: ...


def run_worker(name: str, build: Callable[[Settings, Health], Worker]) -> int:
    """The entry point both workers share: logging, health, metrics, signals, exit code."""
    configure_logging()
    settings = get_settings()
    health = Health()
    health.serve(settings.health_port)
    start_metrics(settings.metrics_port)
    stop = install_stop_handlers()
    worker = build(settings, health)
    threading.Thread(target=lambda: (stop.wait(), worker.stop.set()), daemon=True).start()
    logger.info("%s started", name)
    try:
        worker.run()
    except FatalError:
        logger.exception("fatal error; exiting")
        return 1
    return 0
