"""The embedded Postgres (xmrt/server/postgres.py) and ``xmrt postgres start|stop|status``: real servers only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import psycopg
import pytest

from tests.conftest import free_port, subprocess_env
from xmrt.server.postgres import EmbeddedPostgres, PostgresSetupError, connect_check, describe, ensure_postgres


def test_the_session_server_answers_with_a_password_and_on_loopback_only(postgres_server):
    uri = postgres_server.url()
    assert connect_check(uri).startswith("18.")
    assert postgres_server.password() not in describe(uri) and describe(uri).startswith("postgresql://xmrt@")
    wrong = uri.replace(postgres_server.password(), "not-the-password")
    with pytest.raises(PostgresSetupError) as err:
        connect_check(wrong)
    assert "password authentication failed" in str(err.value) and "\n" not in str(err.value)
    assert "not-the-password" not in str(err.value)
    with psycopg.connect(uri) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
        assert conn.execute("SHOW unix_socket_directories").fetchone()[0] == ""
    assert (postgres_server.password_file.stat().st_mode & 0o777) == 0o600
    assert (postgres_server.directory.stat().st_mode & 0o777) == 0o700


def test_start_is_idempotent_stop_keeps_the_data_and_databases_are_created_once(tmp_path):
    server = EmbeddedPostgres(tmp_path / "pg", free_port())
    try:
        assert server.start() is True
        first_password = server.password()
        uri = server.ensure_database("kept")
        assert server.ensure_database("kept") == uri
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE TABLE notes (text text)")
            conn.execute("INSERT INTO notes VALUES ('survives a restart')")
        assert server.start() is False  # already running
        assert server.stop() is True and not server.is_running() and server.pid() is None
        assert server.stop() is False
        assert server.start() is True and server.password() == first_password
        with psycopg.connect(uri) as conn:
            assert conn.execute("SELECT text FROM notes").fetchall() == [("survives a restart",)]
        status = server.status()
        assert {"postgres", "xmrt", "kept"} <= set(status["databases"]) and status["max_connections"] >= 400
    finally:
        server.stop()


def test_a_taken_port_fails_in_one_line_with_the_log(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EmbeddedPostgres(tmp_path / "pg", taken.getsockname()[1])
        with pytest.raises(PostgresSetupError) as err:
            server.start(timeout=20)
    assert "did not start" in str(err.value) and "\n" not in str(err.value)
    server.stop()


def test_an_external_server_is_checked_never_started(config):
    dead = config.with_overrides(database_uri=f"postgresql://u:secret@127.0.0.1:{free_port()}/x")
    with pytest.raises(PostgresSetupError) as err:
        ensure_postgres(dead)
    assert "Connection refused" in str(err.value) and "secret" not in str(err.value)
    assert not EmbeddedPostgres.from_config(dead).directory.exists()


def test_a_server_that_accepts_and_never_answers_fails_within_the_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []
    threading.Thread(target=lambda: held.append(listener.accept()), daemon=True).start()
    try:
        with pytest.raises(PostgresSetupError, match="timeout"):
            connect_check(f"postgresql://u:p@127.0.0.1:{listener.getsockname()[1]}/x", timeout=2)
    finally:
        listener.close()


def _xmrt(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xmrt.cli", "postgres", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_cli_starts_reports_and_stops_the_embedded_server(config):
    env = {**subprocess_env(config), "XMRT_POSTGRES_PORT": str(free_port())}
    env.pop("DATABASE_URI", None)
    try:
        before = _xmrt("status", env=env)
        assert before.returncode == 1 and "xmrt postgres start" in before.stdout
        started = _xmrt("start", env=env)
        assert started.returncode == 0 and "embedded Postgres started" in started.stdout, started.stderr
        again = _xmrt("start", env=env)
        assert "already running" in again.stdout
        status = _xmrt("status", "--json", env=env)
        report = json.loads(status.stdout)
        assert report["running"] and "xmrt" in report["databases"] and report["external"] is False
        assert "@" in report["url"] and ":" not in report["url"].split("//", 1)[1].split("@", 1)[0]
    finally:
        stopped = _xmrt("stop", env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    external = _xmrt("start", env={**env, "DATABASE_URI": f"postgresql://u:pw@127.0.0.1:{free_port()}/x"})
    assert external.returncode == 1 and external.stderr.startswith("xmrt: error: Cannot use Postgres at")
    assert len(external.stderr.strip().splitlines()) == 1 and ":pw@" not in external.stderr


def test_an_out_of_range_port_is_refused_naming_the_option(config):
    env = {**subprocess_env(config), "XMRT_POSTGRES_PORT": str(free_port())}
    for command in ("start", "stop", "status"):
        out = _xmrt(command, "--port", "70000", env=env)
        assert out.returncode == 2 and "argument --port: 70000 is out of range (1..65535)" in out.stderr, out.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the user-namespace path is taken only when running as root")
def test_as_root_the_server_runs_as_a_non_root_user_in_a_user_namespace(postgres_server):
    with psycopg.connect(postgres_server.url()) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        # Read while the connection is open: its backend process exits when the connection closes.
        with open(f"/proc/{pid}/status") as fh:
            uid_line = next(line for line in fh if line.startswith("Uid:"))
        ns = os.readlink(f"/proc/{pid}/ns/user")
    assert uid_line.split()[1] == "0"  # the real uid outside the namespace: the files stay the invoking user's
    assert ns != os.readlink("/proc/self/ns/user"), "Postgres runs in our own user namespace"
