"""``xmrt bench api``: load and bad-request checks against the served graph API, over loopback.

Load: N concurrent clients (``langgraph_sdk``) loop for a fixed duration over: create a thread, run a graph on it
and wait for the result, read the thread's state, delete the thread (``--keep-threads`` skips the delete). The
default graphs are real ones without model latency, taken in turn: ``eliza`` (a decision cycle on one proposal,
``use_llm: false``: ledger, memory, reflection and learning in Redis) and ``rag_scripted`` (the ``rag`` graph:
hybrid retrieval over a seeded knowledge base and cited answers, with a scripted chat model). ``bench_scripted``
(one scripted node) measures the server's floor. Prints runs/s, p50/p99 latency per operation and per graph, and
the error count.

Bad requests: malformed JSON, an unknown graph, an unknown thread, a body over 1 MB, an ingest source outside
the allowed roots (path traversal), a store item with an empty key, and an Eliza input whose proposals are not a
list. Each must get a 4xx with a clear message and leave no partial state (no thread, no checkpoint, no store
item).

Without ``--url`` the command starts its own server on a free port and stops it afterwards: the production server
(``xmrt serve --workers N``: langgraph-runtime-pg on a scratch Postgres database, the configured Redis), or with
``--dev`` the development server (``langgraph dev``). It serves the project's graphs plus the bench graphs, with a
generated API key, its own key prefix and data directory (the knowledge base it seeds from ``xmrt/sample``); the
scratch database and the Redis keys under that prefix are removed afterwards. The exit code is 1 when a run failed
or a check did not hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from typing import Any

from benchmarks.api_client import QUESTION, run_checks, run_load, run_request
from benchmarks.api_server import (
    BENCH_GRAPH,
    RAG_COLLECTION,
    RAG_GRAPH,
    STARTUP_TIMEOUT,
    bench_langgraph_config,
    drop_database,
    drop_redis_prefix,
    own_server,
    scratch_database,
    seed_knowledge_base,
)
from xmrt.cli import CommandTree
from xmrt.errors import UserError

#: The names this module has always offered (the server and the client now live in ``benchmarks/api_*.py``).
__all__ = [
    "BENCH_GRAPH",
    "DEFAULT_GRAPHS",
    "QUESTION",
    "RAG_COLLECTION",
    "RAG_GRAPH",
    "STARTUP_TIMEOUT",
    "bench_langgraph_config",
    "drop_database",
    "drop_redis_prefix",
    "own_server",
    "register",
    "run_checks",
    "run_load",
    "run_request",
    "scratch_database",
    "seed_knowledge_base",
]

DEFAULT_GRAPHS = ("eliza", RAG_GRAPH)


# ----------------------------------------------------------------------------- command
def _print_report(load: dict[str, Any] | None, checks: list[dict[str, Any]], url: str, server: str) -> None:
    if load:
        print(f"served API load: {load['clients']} clients, {load['duration_s']} s after {load['warmup_s']:g} s of "
              f"warm-up, graphs {', '.join(load['graphs'])}; server {server} at {url}")
        print(f"runs: {load['runs']}  runs/s: {load['runs_per_s']}  errors: {load['errors']}")
        print(f"{'operation':<22}{'count':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
        rows = list(load["latency_ms"].items()) + [(f"run: {g}", s) for g, s in
                                                   load["run_latency_ms_by_graph"].items()]
        for op, s in rows:
            print(f"{op:<22}{s['count']:>8}{_fmt(s['p50']):>10}{_fmt(s['p99']):>10}{_fmt(s['max']):>10}")
        for err in load["first_errors"]:
            print(f"  error: {err}")
    if checks:
        print("bad requests:")
        for c in checks:
            verdict = "ok" if c["ok"] else "FAILED"
            print(f"  {c['check']:<34} {c['status']}  {verdict:<6} no partial state: {'yes' if c['clean'] else 'NO'}"
                  f"  {c['message'][:110]}")


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _bench_api(args: argparse.Namespace) -> int:
    if not 1 <= args.clients <= 512:
        raise UserError(f"--clients {args.clients} is out of range (1..512)")
    if not 0 <= args.duration <= 3600:
        raise UserError(f"--duration {args.duration} is out of range (0..3600)")
    if not 0 <= args.warmup <= 600:
        raise UserError(f"--warmup {args.warmup} is out of range (0..600)")
    workers = args.workers or os.cpu_count() or 1
    if not 1 <= workers <= 64:
        raise UserError(f"--workers {workers} is out of range (1..64)")
    if args.dev and args.workers not in (None, 1):
        raise UserError("--dev runs one process (langgraph dev); --workers is for the production server")
    graphs = [g.strip() for g in args.graphs.split(",") if g.strip()]
    if not graphs:
        raise UserError("--graphs needs at least one graph")
    for graph in graphs:
        run_request(graph, 0, 0)

    def go(url: str, key: str | None, server: str) -> int:
        load = (asyncio.run(run_load(url, key, graphs, args.clients, args.duration, args.keep_threads, args.warmup))
                if args.duration else None)
        checks = [] if args.no_checks else asyncio.run(run_checks(url, key))
        if args.json:
            print(json.dumps({"url": url, "server": server, "load": load, "checks": checks}))
        else:
            _print_report(load, checks, url, server)
        failed = (load and (load["errors"] or not load["runs"])) or any(not c["ok"] for c in checks)
        return 1 if failed else 0

    if args.url:
        return go(args.url.rstrip("/"), args.key or os.environ.get("XMRT_API_KEY"), "given by --url")

    def on_sigterm(signum, frame):
        raise SystemExit(143)  # stop the server, drop the scratch database and keys (the finally of own_server)

    signal.signal(signal.SIGTERM, on_sigterm)
    jobs = args.jobs or max(8, -(-args.clients // (1 if args.dev else workers)))
    with own_server(dev=args.dev, workers=1 if args.dev else workers, jobs=jobs) as (url, key, server):
        return go(url, key, server)


def register(cli: CommandTree) -> None:
    """Add ``bench api``."""
    b = cli.command("bench", "api", help="load and bad-request checks against the served graph API",
                    handler=_bench_api, description=__doc__)
    b.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    b.add_argument("--duration", type=float, default=120, help="seconds of load (default 120; 0 = checks only)")
    b.add_argument("--warmup", type=float, default=10,
                   help="seconds of the same load first, not counted (models load in each process; default 10)")
    b.add_argument("--graphs", default=",".join(DEFAULT_GRAPHS),
                   help=f"graphs to run, in turn (default {','.join(DEFAULT_GRAPHS)}; also {BENCH_GRAPH})")
    b.add_argument("--workers", type=int, default=None,
                   help="processes of the production server it starts (default: the CPU count)")
    b.add_argument("--jobs", type=int, default=None,
                   help="runs each process executes at once (default: clients / workers, at least 8)")
    b.add_argument("--dev", action="store_true", help="start the development server (langgraph dev) instead")
    b.add_argument("--url", default=None, help="a running server; default: start one on a free port")
    b.add_argument("--key", default=None, help="API key for --url (default $XMRT_API_KEY)")
    b.add_argument("--keep-threads", action="store_true", help="do not delete each iteration's thread")
    b.add_argument("--no-checks", action="store_true", help="skip the bad-request checks")
    b.add_argument("--json", action="store_true", help="one JSON object")
