"""``xmrt serve``: the graph API and LangGraph Studio (``langgraph dev``) on Redis; ``xmrt audit tail``.

serve  makes sure Redis is up (the embedded server is started when no REDIS_URL/REDIS_HOST is set), then
       runs ``langgraph dev`` from the project directory with the offline flags (no analytics, no LangSmith
       tracing, no version check, no browser), ``--n-jobs-per-worker`` (default 8, so concurrent runs do
       not queue behind one another) and prints the URL it really serves on: ``langgraph dev`` silently
       moves to another port when the requested one is taken.
       Without XMRT_API_KEYS there is no authentication, so the server binds to 127.0.0.1 only; another
       --host is refused. With keys, every request except GET /health needs one (see xmrt/auth.py).

audit tail  the latest entries of the audit log (runs, decisions, ingests, exports/imports, auth failures).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from xmrt.cli import CommandTree
from xmrt.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
API_LINE = re.compile(r"API:\s*(?:\x1b\[[0-9;]*m\s*)*(https?://[^\s\x1b]+)")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
OFFLINE_ENV = {"LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGSMITH_TRACING": "false", "LANGGRAPH_NO_VERSION_CHECK": "true"}
DEFAULT_JOBS = 8


def stop_process_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process group of ``proc`` (langgraph dev and its workers), then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def parse_api_url(line: str) -> str | None:
    """The served URL from a ``langgraph dev`` output line ("- API: http://127.0.0.1:2024"), else None."""
    match = API_LINE.search(line)
    return match.group(1).rstrip("/") if match else None


def serve_command(*, port: int, host: str, jobs: int, reload: bool = False,
                  env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The ``langgraph dev`` command line and environment that ``xmrt serve`` runs."""
    exe = Path(sys.executable).with_name("langgraph")
    cmd = [str(exe) if exe.exists() else "langgraph", "dev", "--port", str(port), "--host", host,
           "--n-jobs-per-worker", str(jobs), "--no-browser"]
    if not reload:
        cmd.append("--no-reload")
    full_env = {**(os.environ if env is None else env), **OFFLINE_ENV}
    path = full_env.get("PYTHONPATH", "")
    full_env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
    return cmd, full_env


def choose_host(requested: str | None, keys_configured: bool) -> tuple[str, str]:
    """The host to bind and a one-line notice about authentication.

    Raises:
        UserError: A non-loopback host without API keys.
    """
    if not keys_configured:
        if requested and requested not in LOOPBACK:
            raise UserError(f"--host {requested} needs XMRT_API_KEYS: without API keys the server has no "
                            "authentication, so it only binds to 127.0.0.1")
        return "127.0.0.1", ("no XMRT_API_KEYS set: authentication is off, so the server binds to 127.0.0.1 only "
                             "(local use)")
    return requested or "127.0.0.1", "API-key authentication on: send x-api-key or Authorization: Bearer KEY"


def _serve(args: argparse.Namespace) -> int:
    from xmrt.config import get_config
    from xmrt.redis_server import describe, ensure_redis

    config = get_config()
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port} is out of range (1..65535)")
    if not 1 <= args.jobs <= 256:
        raise UserError(f"--jobs {args.jobs} is out of range (1..256)")
    host, notice = choose_host(args.host, bool(config.api_keys))
    ensure_redis(config)
    print(f"xmrt: Redis OK at {describe(config.redis_url)} (prefix {config.key_prefix})", flush=True)
    print(f"xmrt: {notice}", flush=True)
    cmd, env = serve_command(port=args.port, host=host, jobs=args.jobs, reload=args.reload)

    def on_sigterm(signum, frame):
        raise SystemExit(143)  # run the cleanup below: the server lives in its own process group

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
                print(f"xmrt: serving the graph API on {url}{moved}; docs {url}/docs, status {url}/status, "
                      f"dashboard {url}/dashboard", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        stop_process_group(proc)


def _audit_tail(args: argparse.Namespace) -> int:
    from xmrt.audit import tail
    from xmrt.config import get_config
    from xmrt.redis_server import connect

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
    s = cli.command("serve", help="serve the graph API (langgraph dev) on Redis and print its URL", handler=_serve,
                    description=__doc__)
    s.add_argument("--port", type=int, default=2024, help="port to ask for (default 2024; it moves if taken)")
    s.add_argument("--host", default=None, help="interface to bind (default 127.0.0.1; others need XMRT_API_KEYS)")
    s.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                   help=f"background runs executed concurrently (--n-jobs-per-worker, default {DEFAULT_JOBS})")
    s.add_argument("--reload", action="store_true", help="restart when source files change (development)")
    cli.group("audit", help="the audit log")
    t = cli.command("audit", "tail", help="the latest audit log entries, oldest first", handler=_audit_tail)
    t.add_argument("-n", type=int, default=20, help="how many entries (default 20)")
    t.add_argument("--json", action="store_true", help="one JSON object per line")
