"""``xmrt serve``: the graph API in production (several processes, durable runs) or for Studio; ``xmrt audit tail``.

serve       The production server: the stock ``langgraph-api`` on the ``langgraph-runtime-pg`` runtime. Postgres holds
            assistants, threads, runs and the task queue; Redis carries the runtime's heartbeats, wake-ups and run
            streams (``REDIS_URI``, default database 1); checkpoints, long-term memories, the Eliza ledger and the
            audit log stay in Redis database 0 (langgraph.json ``checkpointer.path`` / ``store.path``).
            It makes sure Redis and Postgres are up (the embedded servers start when REDIS_URL/REDIS_HOST and
            DATABASE_URI are unset), prepares the runtime's schema once (under a Postgres advisory lock, so several
            hosts may start together), then runs ``--workers`` uvicorn processes (default: the CPU count) that share
            the port; each executes up to ``--jobs`` runs at a time. A run whose process dies is handed to another
            process (on this host or another one) after 2-4 heartbeats (``LG_BG_JOB_HEARTBEAT``, default 5 s) and
            resumes from its last checkpoint. Start the same command on several hosts against one Postgres and one
            Redis, behind a load balancer, to scale out (README "Deploying on several hosts").
            A startup failure ends the command with one line and exit code 1; so does a server that is not ready in
            ``--startup-timeout`` seconds (a Postgres that accepts connections and never answers used to hang the
            server silently). SIGTERM stops every process of the server.
serve --dev ``langgraph dev`` (in-memory runtime, one process) for LangGraph Studio, on 127.0.0.1 only; it prints the
            URL it really serves on (``langgraph dev`` moves to another port when the requested one is taken).

Without XMRT_API_KEYS there is no authentication, so the production server binds to 127.0.0.1 only; another
--host is refused. With keys, every request except the public ones needs a key (see xmrt/server/auth.py).

audit tail  the latest entries of the audit log (runs, decisions, ingests, exports/imports, auth failures).
"""

from __future__ import annotations

import argparse
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

from xmrt.cli import CommandTree
from xmrt.errors import UserError, XmrtError

PROJECT_ROOT = Path(__file__).resolve().parents[3]
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
    code = (f"from xmrt.cli.commands.serve import run_uvicorn; run_uvicorn({host!r}, {port}, {workers})")
    return [sys.executable, "-c", code]


def run_uvicorn(host: str, port: int, workers: int) -> None:
    """Run the production app under uvicorn (in the server process; ``xmrt serve`` supervises it)."""
    import uvicorn

    uvicorn.run(
        "xmrt.compat.runtime_pg:app", host=host, port=port, workers=workers if workers > 1 else None,
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


def _serve_production(args: argparse.Namespace) -> int:
    from xmrt.compat.runtime_pg import RuntimeCompatError, check_versions
    from xmrt.config import get_config
    from xmrt.redis.server import connect, describe, ensure_redis
    from xmrt.server.postgres import describe as describe_pg
    from xmrt.server.postgres import ensure_postgres

    config = get_config()
    workers = args.workers or os.cpu_count() or 1
    if not 1 <= workers <= 64:
        raise UserError(f"--workers {workers} is out of range (1..64)")
    host, notice = choose_host(args.host, bool(config.api_keys))
    if problem := port_problem(host, args.port):
        raise UserError(f"{problem} (another server runs there?); choose another --port")
    lg_path = Path(args.config).resolve() if args.config else PROJECT_ROOT / "langgraph.json"
    lg = load_langgraph_config(lg_path)
    try:
        check_versions()
    except RuntimeCompatError as exc:
        raise XmrtError(str(exc)) from None
    ensure_redis(config)
    connect(config.with_overrides(redis_url=config.runtime_redis), check=False)
    print(f"xmrt: Redis OK at {describe(config.redis_url)} (prefix {config.key_prefix}); runtime Redis "
          f"{describe(config.runtime_redis)}", flush=True)
    database_uri = ensure_postgres(config)
    print(f"xmrt: Postgres OK at {describe_pg(database_uri)}", flush=True)
    print(f"xmrt: {notice}", flush=True)
    env = production_env(lg, database_uri=database_uri, runtime_redis=config.runtime_redis, jobs=args.jobs,
                         heartbeat=config.run_heartbeat_seconds)
    prepare_runtime(env, lg_path.parent, timeout=args.startup_timeout)

    def on_sigterm(signum, frame):
        raise SystemExit(143)  # run the cleanup below: the server lives in its own process group

    signal.signal(signal.SIGTERM, on_sigterm)
    server = Supervised(uvicorn_command(host=host, port=args.port, workers=workers), env, lg_path.parent)
    ready = False
    try:
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{args.port}"
        server.wait_ready(url, workers, args.startup_timeout)
        ready = True
        print(f"xmrt: serving the graph API on http://{host}:{args.port} with {workers} worker process"
              f"{'es' if workers > 1 else ''} x {args.jobs} concurrent runs (runtime: langgraph-runtime-pg on "
              f"Postgres + Redis); status {url}/status, dashboard {url}/dashboard", flush=True)
        code = server.proc.wait()
        server.thread.join(5)
        if code not in (0, -signal.SIGTERM, 143):
            raise XmrtError(f"the server stopped with exit code {code}: {failure_line(list(server.lines))}")
        return code
    except KeyboardInterrupt:
        return 130
    finally:
        # A server that is still starting may be stuck in a blocking call and ignore SIGTERM: short grace then.
        stop_process_group(server.proc, timeout=30 if ready else 5)


def _serve_dev(args: argparse.Namespace) -> int:
    from xmrt.config import get_config
    from xmrt.redis.server import describe, ensure_redis

    config = get_config()
    host, notice = choose_host(args.host, bool(config.api_keys), dev=True)
    ensure_redis(config)
    print(f"xmrt: Redis OK at {describe(config.redis_url)} (prefix {config.key_prefix})", flush=True)
    print(f"xmrt: {notice}; development server (in-memory runtime, one process): runs do not survive a restart",
          flush=True)
    cmd, env = serve_command(port=args.port, host=host, jobs=args.jobs, reload=args.reload)
    if args.config:
        cmd += ["--config", str(Path(args.config).resolve())]

    def on_sigterm(signum, frame):
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_sigterm)
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, start_new_session=True)
    announced = False
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            if not announced and (url := parse_api_url(line)):
                announced = True
                moved = "" if url.endswith(f":{args.port}") else f" (port {args.port} was taken)"
                print(f"xmrt: serving the graph API (development) on {url}{moved}; status {url}/status, "
                      f"dashboard {url}/dashboard", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        stop_process_group(proc)


def _serve(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port} is out of range (1..65535)")
    if not 1 <= args.jobs <= 256:
        raise UserError(f"--jobs {args.jobs} is out of range (1..256)")
    if args.dev:
        return _serve_dev(args)
    if args.reload:
        raise UserError("--reload is for the development server: xmrt serve --dev --reload")
    if not 5 <= args.startup_timeout <= 3600:
        raise UserError(f"--startup-timeout {args.startup_timeout} is out of range (5..3600)")
    return _serve_production(args)


def _audit_tail(args: argparse.Namespace) -> int:
    from xmrt.config import get_config
    from xmrt.redis.audit import tail
    from xmrt.redis.server import connect

    if not 1 <= args.n <= 100_000:
        raise UserError(f"-n {args.n} is out of range (1..100000)")
    config = get_config()
    connect(config, check=False)  # one clear line when Redis is down
    entries = tail(args.n, config)
    for e in entries:
        if args.json:
            print(json.dumps(e, ensure_ascii=False))
        else:
            details = " ".join(f"{k}={v}" for k, v in e["details"].items() if v not in (None, "", [], {}))
            print(f"{e['time']}  {e['who']:<12} {e['action']:<16} {e['outcome']:<9} {details}")
    if not entries and not args.json:
        print("the audit log is empty")
    return 0


def register(cli: CommandTree) -> None:
    """Add ``serve`` and ``audit tail``."""
    s = cli.command("serve", help="serve the graph API: production (Postgres + Redis, N processes) or --dev (Studio)",
                    handler=_serve, description=__doc__)
    s.add_argument("--dev", action="store_true",
                   help="run langgraph dev (in-memory, one process, 127.0.0.1 only) for LangGraph Studio")
    s.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port (default {DEFAULT_PORT}; production fails when it is taken, --dev moves)")
    s.add_argument("--host", default=None, help="interface to bind (default 127.0.0.1; others need XMRT_API_KEYS)")
    s.add_argument("--workers", type=int, default=None,
                   help="server processes sharing the port (production; default: the CPU count)")
    s.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                   help=f"runs each process executes concurrently (default {DEFAULT_JOBS})")
    s.add_argument("--config", default=None, help="langgraph.json to serve (default: the project's)")
    s.add_argument("--startup-timeout", type=float, default=STARTUP_TIMEOUT,
                   help=f"seconds the production server may take to become ready (default {STARTUP_TIMEOUT:.0f})")
    s.add_argument("--reload", action="store_true", help="with --dev: restart when source files change")
    cli.group("audit", help="the audit log")
    t = cli.command("audit", "tail", help="the latest audit log entries, oldest first", handler=_audit_tail)
    t.add_argument("-n", type=int, default=20, help="how many entries (default 20)")
    t.add_argument("--json", action="store_true", help="one JSON object per line")
