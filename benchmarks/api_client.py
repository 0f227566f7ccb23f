"""The client side of ``xmrt bench api``: the load of graph runs and the bad-request checks.

:func:`run_load` drives N concurrent ``langgraph_sdk`` clients (create a thread, run a graph and wait, read the
state, delete the thread), with :func:`run_request` giving each graph's input and output check;
:func:`run_checks` sends the bad requests and looks for partial state left behind. Used by
:mod:`benchmarks.commands.api`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from typing import Any

from benchmarks.api_server import BENCH_GRAPH, RAG_COLLECTION, RAG_GRAPH
from xmrt.errors import UserError, XmrtError
from xmrt.redis.monitoring import percentile

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
