"""Running the served API as a supervised process: the stock langgraph-api under uvicorn, on Postgres + Redis.

``xmrt serve`` (xmrt/cli/commands/serve.py) and ``xmrt bench api`` start servers with these pieces: the
production environment from ``langgraph.json``, the runtime's schema set-up, and a supervisor that reads the
server's output for readiness or a one-line cause of failure.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from xmrt.errors import UserError, XmrtError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
API_LINE = re.compile(r"API:\s*(?:\x1b\[[0-9;]*m\s*)*(https?://[^\s\x1b]+)")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
OFFLINE_ENV = {"LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGSMITH_TRACING": "false", "LANGGRAPH_NO_VERSION_CHECK": "true"}
DEFAULT_JOBS = 8
DEFAULT_PORT = 2024
STARTUP_TIMEOUT = 180.0
#: What every worker prints when its lifespan (runtime, graphs, our app) has started.
READY_LINE = "Application startup complete."
#: SQLAlchemy pool per process (runtime-pg's default is 20 + 20 overflow, which 3 processes of 2 hosts would
#: already need more than a stock Postgres allows). The runtime also opens two small psycopg pools (up to 10 each).
PG_POOL = {"PG_POOL_SIZE": "10", "PG_MAX_OVERFLOW": "10"}


def stop_process_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process group of ``proc`` (the server and its workers), then SIGKILL if it lingers."""
    if proc.poll() is not None:
        _kill_group(proc.pid, signal.SIGKILL)  # leftover workers of a supervisor that already exited
        return
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def parse_api_url(line: str) -> str | None:
    """The served URL from a ``langgraph dev`` output line ("- API: http://127.0.0.1:2024"), else None."""
    match = API_LINE.search(line)
    return match.group(1).rstrip("/") if match else None


def _with_project_path(env: dict[str, str]) -> dict[str, str]:
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
    return env


def serve_command(*, port: int, host: str, jobs: int, reload: bool = False,
                  env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The ``langgraph dev`` command line and environment that ``xmrt serve --dev`` runs."""
    exe = Path(sys.executable).with_name("langgraph")
    cmd = [str(exe) if exe.exists() else "langgraph", "dev", "--port", str(port), "--host", host,
           "--n-jobs-per-worker", str(jobs), "--no-browser"]
    if not reload:
        cmd.append("--no-reload")
    return cmd, _with_project_path({**(os.environ if env is None else env), **OFFLINE_ENV})


def choose_host(requested: str | None, keys_configured: bool, dev: bool = False) -> tuple[str, str]:
    """The host to bind and a one-line notice about authentication.

    Raises:
        UserError: A non-loopback host without API keys, or any non-loopback host for the development server.
    """
    if dev and requested and requested not in LOOPBACK:
        raise UserError(f"--host {requested}: the development server (--dev) binds to 127.0.0.1 only; serve other "
                        "machines with the production server (xmrt serve without --dev) and XMRT_API_KEYS")
    if not keys_configured:
        if requested and requested not in LOOPBACK:
            raise UserError(f"--host {requested} needs XMRT_API_KEYS: without API keys the server has no "
                            "authentication, so it only binds to 127.0.0.1")
        return "127.0.0.1", ("no XMRT_API_KEYS set: authentication is off, so the server binds to 127.0.0.1 only "
                             "(local use)")
    return requested or "127.0.0.1", "API-key authentication on: send x-api-key or Authorization: Bearer KEY"


# ----------------------------------------------------------------------------------------- production
def load_langgraph_config(path: Path) -> dict[str, Any]:
    """``langgraph.json`` as a dict.

    Raises:
        UserError: Missing, unreadable, or without graphs.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("graphs"), dict) or not data["graphs"]:
        raise UserError(f"{path} has no graphs")
    return data


def production_env(lg: dict[str, Any], *, database_uri: str, runtime_redis: str, jobs: int, heartbeat: float,
                   base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the production server processes (what ``langgraph dev`` derives from langgraph.json).

    ``auth.path`` is served through :mod:`xmrt.compat.runtime_pg` (the same Auth object, JSON-safe users).
    """
    env = {**(os.environ if base is None else base)}
    env.setdefault("LANGSMITH_TRACING", "false")
    env.setdefault("LOG_COLOR", "true" if sys.stdout.isatty() else "false")
    for name, value in PG_POOL.items():
        env.setdefault(name, value)
    env.update(
        LANGGRAPH_RUNTIME_EDITION="pg",
        DATABASE_URI=database_uri,
        REDIS_URI=runtime_redis,
        LANGSERVE_GRAPHS=json.dumps(lg["graphs"]),
        N_JOBS_PER_WORKER=str(jobs),
        LG_BG_JOB_HEARTBEAT=f"{heartbeat:g}",
        # The schema is prepared once by `xmrt serve` (see prepare_runtime), not by every worker at once.
        LG_RUNTIME_PG_AUTO_MIGRATE="false",
    )
    for section, variable in (("checkpointer", "LANGGRAPH_CHECKPOINTER"), ("store", "LANGGRAPH_STORE"),
                              ("http", "LANGGRAPH_HTTP")):
        if lg.get(section):
            env[variable] = json.dumps(lg[section])
        else:
            env.pop(variable, None)
    if lg.get("auth"):
        if not is_project_auth(lg["auth"].get("path", "")):
            raise UserError(f"auth.path {lg['auth'].get('path')!r}: the production server serves the project's auth "
                            "(./xmrt/server/auth.py:auth) only")
        env["LANGGRAPH_AUTH"] = json.dumps({**lg["auth"], "path": "xmrt.compat.runtime_pg:auth"})
    else:
        env.pop("LANGGRAPH_AUTH", None)
    return _with_project_path(env)


def is_project_auth(spec: str) -> bool:
    """True when an ``auth.path`` names the project's ``xmrt/server/auth.py:auth`` (relative, absolute or dotted)."""
    path, _, name = spec.rpartition(":")
    if name != "auth":
        return False
    if path == "xmrt.server.auth":
        return True
    candidate = Path(path)
    return (candidate if candidate.is_absolute() else PROJECT_ROOT / candidate).resolve() == \
        (PROJECT_ROOT / "xmrt" / "server" / "auth.py").resolve()


PREPARE_CODE = """
import sys
try:
    from xmrt.compat.runtime_pg import prepare
    prepare()
except BaseException as exc:
    print(f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:600], file=sys.stderr)
    sys.exit(1)
"""


def prepare_runtime(env: dict[str, str], cwd: Path, timeout: float = 120) -> None:
    """Create or upgrade the runtime's schema (in a child process with a deadline: a stuck Postgres cannot hang us).

    Raises:
        XmrtError: One line: why the runtime cannot start on this Postgres and Redis.
    """
    try:
        proc = subprocess.run([sys.executable, "-c", PREPARE_CODE], env=env, cwd=cwd, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise XmrtError(f"the runtime could not prepare its Postgres schema within {timeout:.0f} s: Postgres or "
                        "Redis accepts connections but does not answer") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise XmrtError(f"the runtime cannot start: {lines[-1] if lines else f'exit code {proc.returncode}'}")


def uvicorn_command(*, host: str, port: int, workers: int) -> list[str]:
    """The command of the server processes: uvicorn with ``workers`` processes sharing the port."""
    code = (f"from xmrt.server.process import run_uvicorn; run_uvicorn({host!r}, {port}, {workers})")
    return [sys.executable, "-c", code]


def run_uvicorn(host: str, port: int, workers: int) -> None:
    """Run the production app under uvicorn (in the server process; ``xmrt serve`` supervises it)."""
    import uvicorn

    uvicorn.run(
        "xmrt.compat.runtime_pg_app:app", host=host, port=port, workers=workers if workers > 1 else None,
        lifespan="on", access_log=False, timeout_graceful_shutdown=20, proxy_headers=True,
        log_config={
            "version": 1, "incremental": False, "disable_existing_loggers": False,
            "formatters": {"simple": {"class": "langgraph_api.logging.Formatter"}},
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "simple",
                                     "stream": "ext://sys.stdout"}},
            "loggers": {"uvicorn": {"level": "INFO"}, "uvicorn.error": {"level": "INFO"},
                        "langgraph_api.server": {"level": "WARNING"}},
            "root": {"handlers": ["console"]},
        },
    )


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Timeout)[\w.]*: .+$")
#: An error logged by the server (langgraph-api's console format): "<time> [error    ] <message> [<logger>] k=v".
_LOGGED_ERROR = re.compile(r"\[(?:error|critical)\s*\]\s+(.+?)(?:\s+\[[\w.]+\](?:\s|$)|$)")
_NOT_A_CAUSE = ("Application startup failed", "Traceback", "Exception in ASGI application")


def failure_line(lines: list[str]) -> str:
    """The most telling line of a failed server's output: its last logged error, else its last exception."""
    logged = exception = None
    for line in reversed(lines):
        text = line.strip()
        if not text or any(marker in text for marker in _NOT_A_CAUSE):
            continue
        if text.startswith("{"):
            try:
                record = json.loads(text)
            except ValueError:
                record = {}
            if logged is None and str(record.get("level", "")).lower() in ("error", "critical"):
                logged = str(record.get("event", ""))
            continue
        if logged is None and (match := _LOGGED_ERROR.search(text)):
            logged = match.group(1)
        elif exception is None and _EXCEPTION_LINE.match(text):
            exception = text
        if logged and exception:
            break
    found = logged or exception or next((line.strip() for line in reversed(lines) if line.strip()), "no output")
    return " ".join(found.split())[:500]


def port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound right now, or None."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return f"port {port} on {host} cannot be used: {exc.strerror or exc}"
    return None


def end_with_parent() -> None:
    """In the server process, before exec: get SIGTERM when ``xmrt serve`` dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the server outlives a killed supervisor


class Supervised:
    """A server process group whose output is passed through and remembered (the last 200 lines).

    The server gets its own process group (so that stopping it never signals ``xmrt serve`` itself), and SIGTERM
    when ``xmrt serve`` dies, so a killed supervisor does not leave an orphaned server holding the port.
    """

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path, out: Any = None) -> None:
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, start_new_session=True, stdin=subprocess.DEVNULL,
                                     preexec_fn=end_with_parent if sys.platform == "linux" else None)
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self.ready_lines = 0
        self.out = out if out is not None else sys.stdout
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if READY_LINE in line:
                self.ready_lines += 1
            try:
                self.out.write(line)
                self.out.flush()
            except (OSError, ValueError):
                pass

    def wait_ready(self, url: str, workers: int, timeout: float) -> None:
        """Block until every worker has started and ``/ok`` answers.

        Raises:
            XmrtError: The server exited, or was not ready in ``timeout`` seconds (it is stopped then).
        """
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.thread.join(5)
                raise XmrtError(f"the server did not start: {failure_line(list(self.lines))}")
            if self.ready_lines >= workers:
                try:
                    if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                stop_process_group(self.proc, timeout=5)
                raise XmrtError(f"the server was not ready within {timeout:.0f} s and was stopped; last output: "
                                f"{failure_line(list(self.lines))}")
            time.sleep(0.25)
