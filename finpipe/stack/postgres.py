"""finpipe's own PostgreSQL 15 cluster on a project port, in a directory the project owns.

PostgreSQL refuses to run as root; as root (CI) the cluster runs as the ``postgres`` OS user
through ``runuser``. It listens on 127.0.0.1 only with ``trust`` authentication: a
development cluster on loopback. Deployments get a password from a Kubernetes Secret.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql

from finpipe.stack import paths
from finpipe.stack.processes import port_open
from finpipe.stack.settings import StackSettings

logger = logging.getLogger(__name__)

_CONF = """
# --- finpipe local cluster ---
listen_addresses = '{host}'
port = {port}
unix_socket_directories = '{socket_dir}'
max_connections = 200
shared_buffers = 256MB
logging_collector = off
"""


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise RuntimeError(f"PostgreSQL binary {name!r} not found (apt-get install postgresql-15)")


@dataclass(frozen=True)
class PostgresCluster:
    """The local cluster: data dir, port, and how to run its tools."""

    settings: StackSettings

    @property
    def home(self) -> Path:
        return paths.state_dir(self.settings) / "postgres"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return paths.log_dir(self.settings) / "postgres.log"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", paths.POSTGRES_OS_USER, "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *argv], check=check, capture_output=True, text=True)

    def _own(self, *dirs: Path) -> None:
        if os.geteuid() != 0:
            return
        pw = pwd.getpwnam(paths.POSTGRES_OS_USER)
        for d in dirs:
            os.chown(d, pw.pw_uid, pw.pw_gid)

    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> bool:
        """initdb once; True if it ran now."""
        if self.initialised():
            return False
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self._own(self.home, self.data_dir)
        self._run(
            _pg_bin("initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--auth-local=trust",
            "--auth-host=trust",
        )
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                _CONF.format(
                    host=self.settings.pg_host, port=self.settings.pg_port, socket_dir=self.home
                )
            )
        return True

    def running(self) -> bool:
        if not self.initialised():
            return False
        return (
            self._run(_pg_bin("pg_ctl"), "status", "-D", str(self.data_dir), check=False).returncode
            == 0
        )

    def start(self) -> bool:
        """Start the cluster if it is not running; True if it started now."""
        if self.running():
            return False
        if port_open(self.settings.pg_host, self.settings.pg_port):
            raise RuntimeError(
                f"port {self.settings.pg_port} is taken by a process that is not finpipe's "
                "PostgreSQL; stop it or set FINPIPE_PG_PORT"
            )
        # The log lives in the state dir, which may not be writable by postgres: let the
        # server write into its own home and link it from the logs dir.
        server_log = self.home / "server.log"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if not self.log_file.exists():
            self.log_file.symlink_to(server_log)
        self._run(
            _pg_bin("pg_ctl"),
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data_dir),
            "-l",
            str(server_log),
        )
        return True

    def stop(self, mode: str = "fast") -> bool:
        """Stop the cluster (``fast`` rolls back open transactions); True if it was running."""
        if not self.running():
            return False
        self._run(_pg_bin("pg_ctl"), "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data_dir))
        return True

    def admin_connection(self, database: str = "postgres") -> psycopg2.extensions.connection:
        conn = psycopg2.connect(
            host=self.settings.pg_host,
            port=self.settings.pg_port,
            user="postgres",
            dbname=database,
            connect_timeout=10,
        )
        conn.autocommit = True
        return conn

    def ensure_role_and_databases(self) -> list[str]:
        """Create the finpipe role (LOGIN CREATEROLE) and its databases if missing, and give an
        existing role CREATEROLE; return what was created or changed."""
        created = []
        s = self.settings
        conn = self.admin_connection()
        # No `with conn`: psycopg2 would open a transaction, and CREATE DATABASE refuses one.
        with conn.cursor() as cur:
            cur.execute("SELECT rolcreaterole FROM pg_roles WHERE rolname = %s", (s.pg_user,))
            row = cur.fetchone()
            if row is None:
                cur.execute(
                    sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(sql.Identifier(s.pg_user))
                )
                created.append(f"role {s.pg_user}")
            elif not row[0]:
                # Migration 0003 creates the NOLOGIN group roles (finpipe_manager, ...):
                # the role that applies migrations needs CREATEROLE for that (see
                # docs/security.md; a production cluster's admin creates them instead).
                cur.execute(sql.SQL("ALTER ROLE {} CREATEROLE").format(sql.Identifier(s.pg_user)))
                created.append(f"CREATEROLE for role {s.pg_user}")
            for db in (s.pg_database, s.pg_dagster_database):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if cur.fetchone() is None:
                    cur.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(db), sql.Identifier(s.pg_user)
                        )
                    )
                    created.append(f"database {db}")
        conn.close()
        return created
