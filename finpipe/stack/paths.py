"""Where the local stack keeps its data, logs and pid files, and the Kafka jar cache."""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
from pathlib import Path

from finpipe.stack.settings import StackSettings
from finpipe_core.settings import Settings

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
POSTGRES_OS_USER = "postgres"


def postgres_can_enter(path: Path) -> bool:
    """True when the ``postgres`` OS user can traverse every parent of ``path``.

    PostgreSQL refuses to run as root, so as root we run it as ``postgres``, and its data
    directory must be reachable by that user.
    """
    if os.geteuid() != 0:
        return True
    pw = pwd.getpwnam(POSTGRES_OS_USER)
    for parent in [path, *path.parents]:
        if not parent.exists():
            continue
        st = parent.stat()
        if st.st_uid == pw.pw_uid:
            continue
        if st.st_gid == pw.pw_gid and st.st_mode & 0o010:
            continue
        if not st.st_mode & 0o001:
            return False
    return True


def state_dir(settings: StackSettings) -> Path:
    """``FINPIPE_STATE_DIR``, else ``<repo>/.state`` when the postgres user can reach it,
    else a per-checkout directory under /var/tmp."""
    if settings.state_dir:
        return Path(settings.state_dir).expanduser().resolve()
    default = REPO_ROOT / ".state"
    if postgres_can_enter(default):
        return default
    tag = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:10]
    fallback = Path("/var/tmp") / f"finpipe-{tag}"
    logger.info("state dir %s is not reachable by the postgres user; using %s", default, fallback)
    return fallback


def cache_dir(settings: Settings) -> Path:
    """Downloads kept across checkouts (Kafka jars)."""
    return Path(settings.cache_dir).expanduser().resolve()


def run_dir(settings: StackSettings) -> Path:
    return state_dir(settings) / "run"


def log_dir(settings: StackSettings) -> Path:
    return state_dir(settings) / "logs"
