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
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from xmrt.cli import CommandTree
from xmrt.cli.commands.serve import end_with_parent, stop_process_group
from xmrt.errors import UserError, XmrtError
from xmrt.redis.monitoring import percentile

BENCH_GRAPH = "bench_scripted"
RAG_GRAPH = "rag_scripted"
DEFAULT_GRAPHS = ("eliza", RAG_GRAPH)
RAG_COLLECTION = "bench_kb"
STARTUP_TIMEOUT = 300


# ----------------------------------------------------------------------------- own server
def bench_langgraph_config(directory: Path) -> Path:
    """The project's langgraph.json with absolute paths, plus the bench graphs (and ``ingest`` if missing)."""
    from xmrt.cli.commands.serve import PROJECT_ROOT

    data = json.loads((PROJECT_ROOT / "langgraph.json").read_text())

    def fix(spec: str) -> str:
        path, _, name = spec.rpartition(":")
        return f"{(PROJECT_ROOT / path).resolve()}:{name}" if path.startswith("./") else spec

    graphs = {k: fix(v) for k, v in data.get("graphs", {}).items()}
    graphs[BENCH_GRAPH] = fix("./benchmarks/api_graph.py:graph")
    graphs[RAG_GRAPH] = fix("./benchmarks/api_graph.py:rag_scripted")
    if "ingest" not in graphs and (PROJECT_ROOT / "graphs" / "ingest.py").exists():
        graphs["ingest"] = fix("./graphs/ingest.py:graph")
    data["graphs"] = graphs
    for section, key in (("checkpointer", "path"), ("store", "path"), ("http", "app"), ("auth", "path")):
        if key in data.get(section, {}):
            data[section][key] = fix(data[section][key])
    data["dependencies"] = [str(PROJECT_ROOT)]
    path = directory / "langgraph.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def seed_knowledge_base(config: Any) -> int:
    """Ingest the sample documents (xmrt/sample) into the bench collection of ``config``'s knowledge base."""
    from xmrt.kb.ingest import ingest_path

    sample = Path(__file__).resolve().parents[2] / "xmrt" / "sample"
    summary = ingest_path(config, str(sample), collection=RAG_COLLECTION, progress=False)
    return int(summary.get("chunks_embedded") or 0)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scratch_database(database_uri: str) -> tuple[str, str]:
    """Create an empty database next to ``database_uri``'s; returns (its URI, its name)."""
    import psycopg
    from psycopg import sql

    name = f"xmrt_bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(database_uri, connect_timeout=10, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise XmrtError(f"cannot create the benchmark's scratch database: {' '.join(str(exc).split())}") from None
    from urllib.parse import urlparse

    return urlparse(database_uri)._replace(path=f"/{name}").geturl(), name


def drop_database(database_uri: str, name: str) -> None:
    """Drop a scratch database (best effort: a failure is only reported)."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(database_uri, connect_timeout=10, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        print(f"xmrt: warning: could not drop the scratch database {name}: {exc}", file=sys.stderr)


def drop_redis_prefix(redis_url: str, prefix: str) -> int:
    """Remove the search indexes and keys under ``prefix`` (the benchmark's own); returns the keys removed."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        for index in client.execute_command("FT._LIST"):
            name = index.decode() if isinstance(index, bytes) else str(index)
            if name.startswith(prefix):
                with contextlib.suppress(redis.ResponseError):
                    client.execute_command("FT.DROPINDEX", name)
        removed = 0
        for pattern in (f"{prefix}:*", f"{prefix}_*"):
            batch = []
            for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    removed += client.delete(*batch)
                    batch = []
            if batch:
                removed += client.delete(*batch)
        return removed
    finally:
        client.close()


@contextlib.contextmanager
def own_server(*, dev: bool, workers: int, jobs: int):
    """Start a server for the benchmark; yields ``(url, api_key, description)``."""
    import httpx

    from xmrt.cli.commands.serve import parse_api_url, serve_command
    from xmrt.config import get_config
    from xmrt.redis.server import ensure_redis

    config = get_config()
    ensure_redis(config)
    key = "bench-" + secrets.token_hex(12)
    prefix = f"{config.key_prefix}-bench-{secrets.token_hex(3)}"
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="xmrt-bench-api-") as tmp_name:
        tmp = Path(tmp_name)
        config_path = bench_langgraph_config(tmp)
        bench_config = config.with_overrides(data_dir=tmp / "data", vector_store_dir=tmp / "data" / "chroma",
                                             chroma_host=None, key_prefix=prefix)
        seed_knowledge_base(bench_config)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("REDIS_", "XMRT_", "RAGLIGHT_VECTOR", "CHROMA_", "DATABASE_URI"))}
        env.update(REDIS_URL=config.redis_url, XMRT_DATA_DIR=str(tmp / "data"), XMRT_KEY_PREFIX=prefix,
                   XMRT_API_KEYS=f"{key}:bench", REDIS_URI=config.runtime_redis)
        scratch = None
        if dev:
            cmd, env = serve_command(port=port, host="127.0.0.1", jobs=jobs, env=env)
            cmd += ["--config", str(config_path)]
            description = f"langgraph dev (in-memory runtime, 1 process, {jobs} jobs)"
        else:
            from xmrt.server.postgres import ensure_postgres

            scratch = scratch_database(ensure_postgres(config))
            env["DATABASE_URI"] = scratch[0]
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[2]),
                                                             env.get("PYTHONPATH", "")) if p)
            cmd = [sys.executable, "-m", "xmrt.cli", "serve", "--port", str(port), "--workers", str(workers),
                   "--jobs", str(jobs), "--config", str(config_path)]
            description = (f"xmrt serve (langgraph-runtime-pg, {workers} worker process{'es' if workers > 1 else ''}"
                           f" x {jobs} jobs)")
        log_path = tmp / "server.log"
        with log_path.open("w") as log:
            # Run in the temporary directory: the dev server's on-disk state (.langgraph_api) goes with it.
            # The server gets SIGTERM if this command dies (even by SIGKILL): no orphaned benchmark server.
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, stdin=subprocess.DEVNULL,
                                    preexec_fn=end_with_parent if sys.platform == "linux" else None)
        try:
            url, deadline = None, time.time() + STARTUP_TIMEOUT
            while time.time() < deadline:
                if proc.poll() is not None:
                    raise XmrtError("the benchmark server exited:\n" + log_path.read_text(errors="replace")[-2000:])
                text = log_path.read_text(errors="replace")
                if dev:
                    url = url or parse_api_url(text)
                elif "xmrt: serving the graph API on" in text:
                    url = f"http://127.0.0.1:{port}"
                if url:
                    with contextlib.suppress(httpx.HTTPError):
                        if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                            break
                time.sleep(0.5)
            else:
                raise XmrtError(f"the benchmark server did not come up in {STARTUP_TIMEOUT} s")
            yield url, key, description
        finally:
            stop_process_group(proc, timeout=40)
            if scratch is not None:
                drop_database(ensure_postgres(config), scratch[1])
            drop_redis_prefix(config.redis_url, prefix)


# ----------------------------------------------------------------------------- load
QUESTION = "Who approves treasury spending above 100 XMR?"


def run_request(graph: str, client_no: int, n: int) -> tuple[dict, dict, Any]:
    """Input, context and a check of the output for one run of ``graph``.

    Raises:
        UserError: A graph the benchmark has no input for.
    """
    if graph == "eliza":
        pid = f"bench-{client_no}-{n}-{secrets.token_hex(3)}"
        support = 0.3 + (n % 7) / 10
        proposal = {"id": pid, "title": f"Bench proposal {n}", "description": "Fund a community audit",
                    "amount_xmr": 10 + n % 50, "criteria": {"community_support": support, "risk": 0.2}}

        def check(out: dict, state: dict) -> None:
            if [d.get("id") for d in out.get("decisions", [])] != [pid]:
                raise XmrtError(f"eliza did not decide {pid}: {str(out)[:200]}")

        return {"proposals": [proposal]}, {"agent_id": "bench", "use_llm": False, "collection": RAG_COLLECTION}, check
    if graph == RAG_GRAPH:
        def check(out: dict, state: dict) -> None:
            if not out.get("final_response") or not out.get("sources"):
                raise XmrtError(f"rag gave no cited answer: {str(out)[:200]}")

        return {"messages": [{"role": "user", "content": QUESTION}]}, {"collection": RAG_COLLECTION}, check
    if graph == BENCH_GRAPH:
        def check(out: dict, state: dict) -> None:
            if len(state["values"].get("messages", [])) != 2:
                raise XmrtError(f"unexpected state: {str(state['values'])[:200]}")

        return {"messages": [{"role": "user", "content": QUESTION}]}, {}, check
    raise UserError(f"--graphs: no benchmark input for {graph!r}; use eliza, {RAG_GRAPH} or {BENCH_GRAPH}")


async def run_load(url: str, key: str | None, graphs: list[str], clients: int, duration: float,
                   keep_threads: bool = False, warmup: float = 0.0) -> dict[str, Any]:
    """The load phase: ``clients`` loops for ``duration`` seconds (after ``warmup`` seconds not counted).

    Each loop: create a thread → run the next graph of ``graphs`` (wait) → read its state → delete the thread
    (unless ``keep_threads``).
    """
    from langgraph_sdk import get_client

    for graph in graphs:
        run_request(graph, 0, 0)  # an unknown graph is refused before any load
    lat: dict[str, list[float]] = {"create_thread": [], "run_wait": [], "get_state": [], "delete_thread": [],
                                   "iteration": []}
    per_graph: dict[str, list[float]] = {g: [] for g in graphs}
    errors: list[str] = []
    begin = time.perf_counter()
    count_from, stop_at = begin + warmup, begin + warmup + duration

    async def worker(client_no: int) -> None:
        client = get_client(url=url, api_key=key, timeout=120)
        n = client_no
        while (t0 := time.perf_counter()) < stop_at:
            graph = graphs[n % len(graphs)]
            n += 1
            counted = t0 >= count_from
            try:
                payload, context, check = run_request(graph, client_no, n)
                thread = await client.threads.create(metadata={"bench": "api"})
                t1 = time.perf_counter()
                out = await client.runs.wait(thread["thread_id"], graph, input=payload, context=context)
                t2 = time.perf_counter()
                state = await client.threads.get_state(thread["thread_id"])
                t3 = time.perf_counter()
                if isinstance(out, dict) and out.get("__error__"):
                    raise XmrtError(f"run failed: {out['__error__']}")
                check(out if isinstance(out, dict) else {}, state)
                t4 = time.perf_counter()
                if not keep_threads:
                    await client.threads.delete(thread["thread_id"])
                    if counted:
                        lat["delete_thread"].append(time.perf_counter() - t4)
            except Exception as exc:  # counted and reported, the load goes on
                if counted:
                    errors.append(f"{graph}: {type(exc).__name__}: {exc}"[:300])
                continue
            if counted:
                lat["create_thread"].append(t1 - t0)
                lat["run_wait"].append(t2 - t1)
                per_graph[graph].append(t2 - t1)
                lat["get_state"].append(t3 - t2)
                lat["iteration"].append(time.perf_counter() - t0)

    await asyncio.gather(*(worker(i) for i in range(clients)))
    elapsed = time.perf_counter() - count_from
    runs = len(lat["run_wait"])

    def stats(v: list[float]) -> dict[str, Any]:
        return {"count": len(v), "p50": _ms(percentile(v, 0.5)), "p99": _ms(percentile(v, 0.99)),
                "max": _ms(max(v) if v else None)}

    return {
        "clients": clients,
        "duration_s": round(elapsed, 1),
        "warmup_s": warmup,
        "graphs": graphs,
        "keep_threads": keep_threads,
        "runs": runs,
        "runs_per_s": round(runs / elapsed, 2) if elapsed > 0 else 0.0,
        "errors": len(errors),
        "first_errors": errors[:5],
        "latency_ms": {op: stats(v) for op, v in lat.items()},
        "run_latency_ms_by_graph": {g: stats(v) for g, v in per_graph.items()},
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# ----------------------------------------------------------------------------- bad requests
async def run_checks(url: str, key: str | None) -> list[dict[str, Any]]:
    """Each bad request: its status, its message, and whether it left state behind."""
    import httpx

    headers = {"x-api-key": key} if key else {}
    results: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:

        async def count_threads() -> int:
            res = await http.post("/threads/count", json={})
            return int(res.json()) if res.status_code == 200 else -1

        async def fresh_thread() -> str:
            res = await http.post("/threads", json={"metadata": {"bench": "checks"}})
            res.raise_for_status()
            return res.json()["thread_id"]

        async def thread_is_empty(tid: str) -> bool:
            res = await http.get(f"/threads/{tid}/state")
            if res.status_code != 200:
                return False
            state = res.json()
            return not state.get("values") and not (state.get("checkpoint") or {}).get("checkpoint_id")

        def add(name: str, res: httpx.Response, clean: bool) -> None:
            try:
                body = res.json()
                message = body.get("detail") or body.get("message") or body.get("error") or body
            except ValueError:
                message = res.text
            message = str(message)
            results.append({"check": name, "status": res.status_code, "message": message[:200],
                            "clean": clean, "ok": 400 <= res.status_code < 500 and clean and bool(message.strip())})

        before = await count_threads()
        res = await http.post("/threads", content=b'{"metadata": {"broken": ',
                              headers={"content-type": "application/json"})
        add("malformed JSON", res, await count_threads() == before)

        tid = await fresh_thread()
        res = await http.post(f"/threads/{tid}/runs/wait", json={"assistant_id": "no_such_graph", "input": {}})
        add("unknown graph", res, await thread_is_empty(tid))

        ghost = str(uuid.uuid4())
        before = await count_threads()
        res = await http.post(f"/threads/{ghost}/runs/wait", json={"assistant_id": BENCH_GRAPH, "input": {}})
        gone = (await http.get(f"/threads/{ghost}")).status_code == 404
        add("unknown thread", res, gone and await count_threads() == before)

        tid = await fresh_thread()
        big = {"messages": [{"role": "user", "content": "x" * (1024 * 1024 + 10)}]}
        res = await http.post(f"/threads/{tid}/runs/wait", json={"assistant_id": BENCH_GRAPH, "input": big})
        add("payload over 1 MB", res, await thread_is_empty(tid))

        tid = await fresh_thread()
        res = await http.post(f"/threads/{tid}/runs/wait",
                              json={"assistant_id": "ingest", "input": {"source": "../../../../etc"}})
        add("ingest path traversal", res, await thread_is_empty(tid))

        res = await http.put("/store/items", json={"namespace": ["notes"], "key": "", "value": {"v": 1}})
        found = await http.post("/store/items/search", json={"namespace_prefix": ["notes"], "limit": 100})
        add("store item with an empty key", res,
            found.status_code == 200 and not any(i["key"] == "" for i in found.json().get("items", [])))

        tid = await fresh_thread()
        res = await http.post(f"/threads/{tid}/runs/wait", json={"assistant_id": "eliza",
                                                                 "input": {"proposals": None}})
        add("graph input of the wrong type", res, await thread_is_empty(tid))
    return results


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
