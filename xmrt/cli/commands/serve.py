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
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from xmrt.cli import CommandTree
from xmrt.errors import UserError, XmrtError
from xmrt.server.process import (  # noqa: F401 - the helpers xmrt bench api and the tests import from here
    DEFAULT_JOBS,
    DEFAULT_PORT,
    PREPARE_CODE,
    PROJECT_ROOT,
    STARTUP_TIMEOUT,
    Supervised,
    choose_host,
    end_with_parent,
    failure_line,
    load_langgraph_config,
    parse_api_url,
    port_problem,
    prepare_runtime,
    production_env,
    run_uvicorn,
    serve_command,
    stop_process_group,
    uvicorn_command,
)


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
