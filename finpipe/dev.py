"""``finpipe dev`` (``make dev``): the local stack, one agent, one processor and ``dagster dev``.

``dagster dev`` runs as the managed process ``dagster-dev`` (pid file and log under the state
dir, like the workers), so ``finpipe down`` stops it with everything else: SIGTERM to its
process group (the dev process, the webserver, the daemon, the code server and any run
worker), SIGKILL after the timeout. Dagster's instance is ``<repo>/dagster_home``; its
``dagster.yaml`` reads the ``FINPIPE_PG_*`` variables, which are exported here from the
settings (so the UI, the daemon and every run see exactly the settings of this command).

The functions are also used by the browser test, which starts ``dagster dev`` on a free port
with its own state dir, ``DAGSTER_HOME`` and private topic and databases.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import typer

from finpipe import stack
from finpipe.cli import StackDownError, app, console, start_workers, worker_names
from finpipe.stack import paths
from finpipe.stack.processes import ManagedProcess, port_open, wait_until
from finpipe_core.settings import Settings, get_settings
from finpipe_dagster.constants import DAGSTER_EVENT_ENV

DAGSTER_DEV = "dagster-dev"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = Settings.model_fields["dagster_port"].default
PORT_ENV_VAR = Settings().env_var_names()["dagster_port"]
DAGSTER_HOME = paths.REPO_ROOT / "dagster_home"
# First start imports Dagster and the code location and creates the storage schema: on the
# shared 2-core machine this took 20-40 s.
READY_TIMEOUT_S = 180.0
# ``finpipe down`` (stack.down) stops every managed process with this timeout.
DOWN_TIMEOUT_S = 30.0


class DevServerError(StackDownError):
    """``dagster dev`` could not be started or did not answer (printed in plain words)."""


@dataclass(frozen=True)
class DevServer:
    """A running ``dagster dev``: where it answers, its pid (= process group) and its log."""

    url: str
    pid: int
    log_file: Path
    started: bool  # False when it was already running


def dagster_process(settings: Settings) -> ManagedProcess:
    """The managed process ``dagster-dev`` (pid file and log under the state dir)."""
    return ManagedProcess(DAGSTER_DEV, paths.run_dir(settings), paths.log_dir(settings))


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as its ``FINPIPE_*`` variable (unset ones left out)."""
    env: dict[str, str] = {}
    for field, var in settings.env_var_names().items():
        value = getattr(settings, field)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[var] = str(value)
    return env


def dagster_env(
    settings: Settings, dagster_home: Path = DAGSTER_HOME, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of ``dagster dev``: ``base`` (default: ours), the settings, DAGSTER_HOME.

    Settings variables in ``base`` are replaced by the values of ``settings``, so a test can
    pass a ``model_copy`` pointing at private topics and databases.
    """
    names = set(settings.env_var_names().values())
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in names}
    env.update(settings_env(settings))
    env["DAGSTER_HOME"] = str(Path(dagster_home).resolve())
    env["PYTHONUNBUFFERED"] = "1"
    # The daemon and webserver launch UI backfills: batch their events as the runs do.
    env.update(DAGSTER_EVENT_ENV)
    return env


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
    settings: Settings,
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
    pid = proc.start(dagster_dev_argv(host, port), env=dagster_env(settings, home, env),
                     cwd=paths.REPO_ROOT)
    try:
        _wait_ready(proc, host, port, timeout)
    except DevServerError:
        proc.stop(timeout=DOWN_TIMEOUT_S)
        raise
    return DevServer(ui_url(host, port), pid, proc.log_file, started=True)


def _wait_ready(proc: ManagedProcess, host: str, port: int, timeout: float) -> None:
    try:
        wait_until(lambda: not proc.running() or ui_ready(host, port), timeout, interval=0.5,
                   what=f"Dagster UI on {ui_url(host, port)}")
    except TimeoutError as exc:
        raise DevServerError(
            f"{exc}; log {proc.log_file}:\n{log_tail(proc.log_file)}"
        ) from exc
    if not proc.running():
        raise DevServerError(
            f"dagster dev exited during start-up; log {proc.log_file}:\n{log_tail(proc.log_file)}"
        )


def process_group_alive(pgid: int) -> bool:
    """True while any process (not a zombie) of process group ``pgid`` is left."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields[0] is the state, fields[2] the process group id.
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def wait_stopped(pgid: int, host: str, port: int, timeout: float = 10.0) -> float:
    """Wait until the process group is gone and the port is free; seconds waited."""
    return wait_until(lambda: not process_group_alive(pgid) and not port_open(host, port),
                      timeout, what=f"process group {pgid} gone and port {port} free")


# --- the command ---------------------------------------------------------------------------
@app.command()
def dev(
    port: int = typer.Option(DEFAULT_PORT, envvar=PORT_ENV_VAR, min=1, max=65535,
                             help="Port of the Dagster UI."),
    host: str = typer.Option(DEFAULT_HOST, help="Interface the Dagster UI listens on."),
    timeout: float = typer.Option(READY_TIMEOUT_S, help="Seconds to wait for the UI."),
) -> None:
    """Kafka, PostgreSQL, one agent, one processor and `dagster dev` (the UI), in the background.

    Stop everything with `finpipe down` (or `make down`).
    """
    settings = get_settings()
    t0 = time.monotonic()
    result = stack.up(settings)
    for change in result.changes:
        console.print(f"  {change}")
    workers = [*worker_names(settings, "agent", 1), *worker_names(settings, "processor", 1)]
    started = start_workers(settings, 1, 1)
    console.print(f"  workers: started {', '.join(started)}" if started
                  else f"  workers: {' and '.join(workers)} already running")
    console.print(f"  starting dagster dev on {ui_url(host, port)} ...")
    server = start_dagster_dev(settings, host=host, port=port, timeout=timeout)
    log_dir = paths.log_dir(settings)
    console.print(
        f"\nDagster UI: [bold]{server.url}[/bold]"
        f"{'' if server.started else ' (already running)'}  "
        f"(ready after {time.monotonic() - t0:.0f} s)\n"
        f"  DAGSTER_HOME: {DAGSTER_HOME}\n"
        f"  logs: {log_dir}/ ({', '.join(f'{n}.log' for n in [DAGSTER_DEV, *workers])}, "
        "kafka.log, postgres.log)\n"
        "  backfill: Catalog > stock_tasks > Materialize…; schedules and sensors: Automation\n"
        "  stop everything: finpipe down (or make down)",
        soft_wrap=True,
    )
