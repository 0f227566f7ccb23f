"""``xmrt serve`` (production) refuses to start, or stops, in one clear line and a non-zero exit code.

Problem 3 of the runtime (a start-up that hangs silently and ignores SIGTERM) is shown with a graph whose import
never returns: the supervisor stops the server after ``--startup-timeout`` and on SIGTERM, and leaves no process.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

from tests.conftest import ROOT, free_port
from tests.served import fresh_database, langgraph_config_with, server_env

pytestmark = pytest.mark.slow


def _serve(env: dict, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xmrt.cli", "serve", "--workers", "1", *args], cwd=ROOT,
                          env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=timeout)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("xmrt: error: "), lines
    return lines[0]


def _descendants_gone(root_pid: int, before: set[int]) -> set[int]:
    """Processes that were children of the command and still live."""
    return {pid for pid in before if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"}


def test_a_postgres_that_accepts_and_never_answers_is_one_line_not_a_hang(config):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held = []
    threading.Thread(target=lambda: [held.append(listener.accept()) for _ in range(16)], daemon=True).start()
    env = {**server_env(config), "DATABASE_URI": f"postgresql://x:pw@127.0.0.1:{listener.getsockname()[1]}/x"}
    started = time.monotonic()
    try:
        proc = _serve(env, "--port", str(free_port()), timeout=120)
    finally:
        listener.close()
    assert proc.returncode == 1
    line = _error_line(proc)
    assert "Postgres" in line and "timeout" in line and "pw@" not in line, line
    assert time.monotonic() - started < 60


def test_a_graph_that_fails_to_load_stops_the_server_in_one_line(config, postgres_server, tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('the broken graph cannot be imported')\n")
    lg = langgraph_config_with(tmp_path, {"broken": str(tmp_path / "broken.py") + ":graph"})
    env = {**server_env(config), "DATABASE_URI": fresh_database(postgres_server)}
    proc = _serve(env, "--port", str(free_port()), "--config", str(lg))
    assert proc.returncode == 1
    line = _error_line(proc)
    assert "the server did not start" in line and "broken" in line, line


def test_a_taken_port_is_one_line(config, postgres_server):
    env = {**server_env(config), "DATABASE_URI": fresh_database(postgres_server)}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = _serve(env, "--port", str(taken.getsockname()[1]))
    assert proc.returncode == 2
    line = _error_line(proc)
    assert "address already in use" in line.lower() and "--port" in line, line


def test_the_failure_line_is_the_servers_own_error():
    from xmrt.cli.commands.serve import failure_line

    bind = ["2026-11-29T23:56:21Z [info     ] Waiting for application startup. [uvicorn.error] a=1",
            "2026-11-29T23:56:21Z [error    ] [Errno 98] error while attempting to bind on address "
            "('127.0.0.1', 80): address already in use [uvicorn.error] langgraph_api_version=0.16.7",
            "2026-11-29T23:56:21Z [info     ] Application shutdown complete. [uvicorn.error] a=1"]
    assert failure_line(bind).startswith("[Errno 98] error while attempting to bind") and "[uvicorn" not in \
        failure_line(bind)
    traceback = ["Traceback (most recent call last):", '  File "x.py", line 1', "RuntimeError: boom",
                 "ERROR:    Application startup failed. Exiting."]
    assert failure_line(traceback) == "RuntimeError: boom"
    assert failure_line(['{"event": "Graph failed", "level": "error"}', '{"event": "bye", "level": "info"}']) == \
        "Graph failed"
    assert failure_line(["just this"]) == "just this" and failure_line([]) == "no output"


def test_bad_hosts_and_options_are_refused_before_anything_starts(config):
    env = server_env(config)
    no_keys = _serve(env, "--host", "0.0.0.0")
    assert no_keys.returncode == 2 and "needs XMRT_API_KEYS" in _error_line(no_keys)
    dev_public = _serve({**env, "XMRT_API_KEYS": "alicekey1:alice"}, "--dev", "--host", "0.0.0.0")
    assert dev_public.returncode == 2 and "binds to 127.0.0.1 only" in _error_line(dev_public)
    reload = _serve(env, "--reload")
    assert reload.returncode == 2 and "--dev" in _error_line(reload)
    assert _serve(env, "--workers", "0").returncode == 2


def _hanging_config(tmp_path):
    (tmp_path / "hangs.py").write_text("import time\ntime.sleep(3600)\n")
    return langgraph_config_with(tmp_path, {"hangs": str(tmp_path / "hangs.py") + ":graph"})


def test_a_startup_that_hangs_is_stopped_at_the_deadline_with_nothing_left_running(config, postgres_server,
                                                                                   tmp_path):
    env = {**server_env(config), "DATABASE_URI": fresh_database(postgres_server)}
    started = time.monotonic()
    proc = _serve(env, "--port", str(free_port()), "--config", str(_hanging_config(tmp_path)),
                  "--startup-timeout", "25")
    took = time.monotonic() - started
    assert proc.returncode == 1
    line = _error_line(proc)
    assert "not ready within 25 s and was stopped" in line, line
    assert took < 90, took
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert not leftovers, leftovers


def test_sigterm_during_a_hung_startup_stops_every_process(config, postgres_server, tmp_path):
    env = {**server_env(config), "DATABASE_URI": fresh_database(postgres_server), "PYTHONPATH": str(ROOT)}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "xmrt.cli", "serve", "--workers", "1", "--port",
                                 str(free_port()), "--config", str(_hanging_config(tmp_path))], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Waiting for application startup" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "Waiting for application startup" in log.read_text(), log.read_text()[-2000:]
        time.sleep(2)  # the graph import is now blocking the server's event loop
        family = {proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))}
        assert len(family) >= 2
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        assert code != 0
        time.sleep(0.5)
        assert not _descendants_gone(proc.pid, family), "server processes outlived SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_environment_the_workers_get(config):
    from xmrt.cli.commands.serve import PROJECT_ROOT, load_langgraph_config, production_env

    lg = load_langgraph_config(PROJECT_ROOT / "langgraph.json")
    env = production_env(lg, database_uri="postgresql://u:p@db/x", runtime_redis="redis://r:6379/1", jobs=3,
                         heartbeat=5, base={"PG_POOL_SIZE": "4"})
    assert env["LANGGRAPH_RUNTIME_EDITION"] == "pg" and env["N_JOBS_PER_WORKER"] == "3"
    assert env["LG_BG_JOB_HEARTBEAT"] == "5" and env["LG_RUNTIME_PG_AUTO_MIGRATE"] == "false"
    assert env["PG_POOL_SIZE"] == "4" and env["PG_MAX_OVERFLOW"] == "10"  # the user's value wins
    assert json.loads(env["LANGGRAPH_AUTH"])["path"] == "xmrt.compat.runtime_pg:auth"
    assert json.loads(env["LANGGRAPH_CHECKPOINTER"]) == lg["checkpointer"]
    assert json.loads(env["LANGSERVE_GRAPHS"]) == lg["graphs"]
    assert env["PYTHONPATH"].split(":")[0] == str(PROJECT_ROOT)


def test_two_hosts_preparing_a_fresh_database_at_once_both_succeed(config, postgres_server):
    # A host blocked in pg_advisory_lock held a snapshot that the other host's CREATE INDEX CONCURRENTLY waited for,
    # while that host held the lock: both hung until the deadline. The lock is now polled.
    from xmrt.cli.commands.serve import PREPARE_CODE

    env = {**server_env(config), "PYTHONPATH": str(ROOT), "DATABASE_URI": fresh_database(postgres_server),
           "REDIS_URI": config.runtime_redis, "LANGGRAPH_RUNTIME_EDITION": "pg", "LG_RUNTIME_PG_AUTO_MIGRATE": "false"}
    for _ in range(2):
        env["DATABASE_URI"] = fresh_database(postgres_server)
        started = time.monotonic()
        procs = [subprocess.Popen([sys.executable, "-c", PREPARE_CODE], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [p.communicate(timeout=150) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], results
        assert time.monotonic() - started < 90
