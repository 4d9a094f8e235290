"""``dagster dev`` for ``finpipe dev`` (``make dev``), next to the local stack and workers.

It runs as the managed process ``dagster-dev`` (pid file and log under the state
dir, like the workers), so ``finpipe down`` stops it with everything else: SIGTERM to its
process group (the dev process, the webserver, the daemon, the code server and any run
worker), SIGKILL after the timeout. Dagster's instance is ``<repo>/dagster_home``; its
``dagster.yaml`` reads the ``FINPIPE_PG_*`` variables, which are exported from the settings
(``finpipe.stack.dagster_env``), so the UI, the daemon and every run see exactly the settings
of this command.

The browser test starts ``dagster dev`` with ``start_dagster_dev`` on a free port with its own
state dir, ``DAGSTER_HOME`` and private topic and databases.
"""

from __future__ import annotations

import contextlib
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from finpipe.stack import paths
from finpipe.stack.dagster_env import DAGSTER_HOME, dagster_env
from finpipe.stack.processes import ManagedProcess, port_open, wait_until
from finpipe.stack.settings import StackSettings
from finpipe.stack.stack import STOP_TIMEOUT_S, StackDownError

DAGSTER_DEV = "dagster-dev"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = StackSettings.model_fields["dagster_port"].default
PORT_ENV_VAR = StackSettings.model_construct().env_var_names()["dagster_port"]
# First start imports Dagster and the code location and creates the storage schema: on the
# shared 2-core machine this took 20-40 s.
READY_TIMEOUT_S = 180.0


class DevServerError(StackDownError):
    """``dagster dev`` could not be started or did not answer (printed in plain words)."""


@dataclass(frozen=True)
class DevServer:
    """A running ``dagster dev``: where it answers, its pid (= process group) and its log."""

    url: str
    pid: int
    log_file: Path
    started: bool  # False when it was already running


def dagster_process(settings: StackSettings) -> ManagedProcess:
    """The managed process ``dagster-dev`` (pid file and log under the state dir)."""
    return ManagedProcess(DAGSTER_DEV, paths.run_dir(settings), paths.log_dir(settings))


def dagster_dev_argv(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "dagster", "dev", "-h", host, "-p", str(port)]


def ui_url(host: str, port: int) -> str:
    return f"http://{host}:{port}"


def ui_ready(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when the Dagster webserver answers ``GET /server_info`` with 200."""
    try:
        with urllib.request.urlopen(f"{ui_url(host, port)}/server_info", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def running_port(proc: ManagedProcess) -> int | None:
    """The ``-p`` port of a running ``dagster dev`` (from its command line), if any."""
    pid = proc.pid()
    if pid is None:
        return None
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return None
    with contextlib.suppress(ValueError, IndexError):
        return int(argv[argv.index("-p") + 1])
    return None


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def start_dagster_dev(
    settings: StackSettings,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    dagster_home: Path = DAGSTER_HOME,
    env: dict[str, str] | None = None,
    timeout: float = READY_TIMEOUT_S,
) -> DevServer:
    """Start ``dagster dev`` (unless it runs already) and wait until the UI answers.

    :param env: base environment (default: this process's); the settings and DAGSTER_HOME
        are applied on top of it.
    :raises DevServerError: the port is taken by another program, or ``dagster dev`` exited
        or did not answer within ``timeout`` (the message ends with its log).
    """
    proc = dagster_process(settings)
    if proc.running():
        current = running_port(proc) or port
        if current != port:
            raise DevServerError(
                f"dagster dev already runs on port {current} (pid {proc.pid()}), not {port}; "
                f"open {ui_url(host, current)} or stop it first: finpipe down"
            )
        _wait_ready(proc, host, port, timeout)
        return DevServer(ui_url(host, port), proc.pid() or 0, proc.log_file, started=False)
    if port_open(host, port):
        raise DevServerError(
            f"port {port} on {host} is taken by another program; choose another with "
            f"--port or {PORT_ENV_VAR}"
        )
    home = Path(dagster_home).resolve()
    if not (home / "dagster.yaml").exists():
        raise DevServerError(f"no dagster.yaml in DAGSTER_HOME {home}")
    pid = proc.start(
        dagster_dev_argv(host, port), env=dagster_env(settings, home, env), cwd=paths.REPO_ROOT
    )
    try:
        _wait_ready(proc, host, port, timeout)
    except DevServerError:
        proc.stop(timeout=STOP_TIMEOUT_S)
        raise
    return DevServer(ui_url(host, port), pid, proc.log_file, started=True)


def _wait_ready(proc: ManagedProcess, host: str, port: int, timeout: float) -> None:
    try:
        wait_until(
            lambda: not proc.running() or ui_ready(host, port),
            timeout,
            interval=0.5,
            what=f"Dagster UI on {ui_url(host, port)}",
        )
    except TimeoutError as exc:
        raise DevServerError(f"{exc}; log {proc.log_file}:\n{log_tail(proc.log_file)}") from exc
    if not proc.running():
        raise DevServerError(
            f"dagster dev exited during start-up; log {proc.log_file}:\n{log_tail(proc.log_file)}"
        )
