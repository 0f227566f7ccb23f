"""``xmrt bench api``: load and bad-request checks against the served graph API, over loopback.

Load: N concurrent clients (``langgraph_sdk``) loop for a fixed duration over: create a thread, run a graph on it
and wait for the result, read the thread's state, delete the thread (``--keep-threads`` skips the delete; the
dev server's in-memory thread and run lists are scanned linearly, so kept threads slow every request a little
more as the run goes on). The default graph, ``bench_scripted``, answers with a scripted
chat model, so the figures measure the server (auth, runs, Redis checkpoints) and not a model. Prints runs/s,
p50/p99 latency per operation and the error count.

Bad requests: malformed JSON, an unknown graph, an unknown thread, a body over 1 MB, an ingest source outside
the allowed roots (path traversal), and store namespace labels with RediSearch syntax. Each must get a 4xx with a
clear message and leave no partial state (no thread, no checkpoint, no store item).

Without ``--url`` the command starts its own server (``langgraph dev`` on a free port, the project's graphs plus
``bench_scripted``, a generated API key) and stops it afterwards. The exit code is 1 when a run failed or a check
did not hold.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from xmrt.cli import CommandTree
from xmrt.commands.serve import stop_process_group
from xmrt.errors import UserError, XmrtError
from xmrt.monitoring import percentile

BENCH_GRAPH = "bench_scripted"


# ----------------------------------------------------------------------------- own server
def bench_langgraph_config(directory: Path) -> Path:
    """The project's langgraph.json with absolute paths, plus ``bench_scripted`` (and ``ingest`` if missing)."""
    from xmrt.commands.serve import PROJECT_ROOT

    data = json.loads((PROJECT_ROOT / "langgraph.json").read_text())

    def fix(spec: str) -> str:
        path, _, name = spec.rpartition(":")
        return f"{(PROJECT_ROOT / path).resolve()}:{name}" if path.startswith("./") else spec

    graphs = {k: fix(v) for k, v in data.get("graphs", {}).items()}
    graphs[BENCH_GRAPH] = fix("./xmrt/bench/api_graph.py:graph")
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


@contextlib.contextmanager
def own_server(jobs: int):
    """Start ``langgraph dev`` for the benchmark; yields ``(url, api_key)``."""
    import httpx

    from xmrt.commands.serve import parse_api_url, serve_command
    from xmrt.config import get_config
    from xmrt.redis_server import ensure_redis

    ensure_redis(get_config())
    key = "bench-" + secrets.token_hex(12)
    with tempfile.TemporaryDirectory(prefix="xmrt-bench-api-") as tmp:
        config_path = bench_langgraph_config(Path(tmp))
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd, env = serve_command(port=port, host="127.0.0.1", jobs=jobs,
                                 env={**os.environ, "XMRT_API_KEYS": f"{key}:bench"})
        cmd += ["--config", str(config_path)]
        log_path = Path(tmp) / "server.log"
        with log_path.open("w") as log:
            # Run in the temporary directory: the dev server's on-disk state (.langgraph_api) goes with it.
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            url, deadline = None, time.time() + 240
            while time.time() < deadline:
                if proc.poll() is not None:
                    raise XmrtError("the benchmark server exited:\n" + log_path.read_text(errors="replace")[-2000:])
                url = url or parse_api_url(log_path.read_text(errors="replace"))
                if url:
                    with contextlib.suppress(httpx.HTTPError):
                        if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                            break
                time.sleep(0.5)
            else:
                raise XmrtError("the benchmark server did not come up in 240 s")
            yield url, key
        finally:
            stop_process_group(proc)


# ----------------------------------------------------------------------------- load
async def run_load(url: str, key: str | None, graph: str, clients: int, duration: float,
                   keep_threads: bool = False) -> dict[str, Any]:
    """The load phase: ``clients`` loops for ``duration`` seconds.

    Each loop: create a thread → run (wait) → read its state → delete it (unless ``keep_threads``).
    """
    from langgraph_sdk import get_client

    lat: dict[str, list[float]] = {"create_thread": [], "run_wait": [], "get_state": [], "delete_thread": [],
                                   "iteration": []}
    errors: list[str] = []
    payload = {"messages": [{"role": "user", "content": "How much XMR does the treasury hold?"}]}
    stop_at = time.perf_counter() + duration

    async def worker(n: int) -> None:
        client = get_client(url=url, api_key=key, timeout=60)
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                thread = await client.threads.create(metadata={"bench": "api"})
                t1 = time.perf_counter()
                out = await client.runs.wait(thread["thread_id"], graph, input=payload)
                t2 = time.perf_counter()
                state = await client.threads.get_state(thread["thread_id"])
                t3 = time.perf_counter()
                if isinstance(out, dict) and out.get("__error__"):
                    raise XmrtError(f"run failed: {out['__error__']}")
                if graph == BENCH_GRAPH and len(state["values"].get("messages", [])) != 2:
                    raise XmrtError(f"unexpected state: {str(state['values'])[:200]}")
                t4 = time.perf_counter()
                if not keep_threads:
                    await client.threads.delete(thread["thread_id"])
                    lat["delete_thread"].append(time.perf_counter() - t4)
            except Exception as exc:  # counted and reported, the load goes on
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            lat["create_thread"].append(t1 - t0)
            lat["run_wait"].append(t2 - t1)
            lat["get_state"].append(t3 - t2)
            lat["iteration"].append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    runs = len(lat["run_wait"])
    return {
        "clients": clients,
        "duration_s": round(elapsed, 1),
        "graph": graph,
        "keep_threads": keep_threads,
        "runs": runs,
        "runs_per_s": round(runs / elapsed, 2) if elapsed else 0.0,
        "errors": len(errors),
        "first_errors": errors[:5],
        "latency_ms": {
            op: {"count": len(v), "p50": _ms(percentile(v, 0.5)), "p99": _ms(percentile(v, 0.99)),
                 "max": _ms(max(v) if v else None)}
            for op, v in lat.items()
        },
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

        res = await http.put("/store/items", json={"namespace": ["notes", "a@b|c-(d)*{e}"], "key": "k",
                                                   "value": {"v": 1}})
        found = await http.post("/store/items/search", json={"namespace_prefix": ["notes"], "limit": 100})
        add("namespace with RediSearch syntax", res,
            found.status_code == 200 and not any(i["key"] == "k" for i in found.json().get("items", [])))
    return results


# ----------------------------------------------------------------------------- command
def _print_report(load: dict[str, Any] | None, checks: list[dict[str, Any]], url: str) -> None:
    if load:
        print(f"served API load: {load['clients']} clients, {load['duration_s']} s, graph {load['graph']}, "
              f"server {url}")
        print(f"runs: {load['runs']}  runs/s: {load['runs_per_s']}  errors: {load['errors']}")
        print(f"{'operation':<15}{'count':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
        for op, s in load["latency_ms"].items():
            print(f"{op:<15}{s['count']:>8}{_fmt(s['p50']):>10}{_fmt(s['p99']):>10}{_fmt(s['max']):>10}")
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

    def go(url: str, key: str | None) -> int:
        load = (asyncio.run(run_load(url, key, args.graph, args.clients, args.duration, args.keep_threads))
                if args.duration else None)
        checks = [] if args.no_checks else asyncio.run(run_checks(url, key))
        if args.json:
            print(json.dumps({"url": url, "load": load, "checks": checks}))
        else:
            _print_report(load, checks, url)
        failed = (load and (load["errors"] or not load["runs"])) or any(not c["ok"] for c in checks)
        return 1 if failed else 0

    if args.url:
        return go(args.url.rstrip("/"), args.key or os.environ.get("XMRT_API_KEY"))
    with own_server(jobs=max(8, args.clients)) as (url, key):
        return go(url, key)


def register(cli: CommandTree) -> None:
    """Add ``bench api``."""
    b = cli.command("bench", "api", help="load and bad-request checks against the served graph API",
                    handler=_bench_api, description=__doc__)
    b.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    b.add_argument("--duration", type=float, default=120, help="seconds of load (default 120; 0 = checks only)")
    b.add_argument("--graph", default=BENCH_GRAPH, help=f"graph to run (default {BENCH_GRAPH}, a scripted model)")
    b.add_argument("--url", default=None, help="a running server; default: start one on a free port")
    b.add_argument("--key", default=None, help="API key for --url (default $XMRT_API_KEY)")
    b.add_argument("--keep-threads", action="store_true",
                   help="do not delete each iteration's thread (the server's thread list grows during the run)")
    b.add_argument("--no-checks", action="store_true", help="skip the bad-request checks")
    b.add_argument("--json", action="store_true", help="one JSON object")
