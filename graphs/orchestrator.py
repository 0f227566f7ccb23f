"""The orchestrator: a supervisor that routes each request to the graph that handles it, and keeps the registry.

``prepare -> (classify -> rag | rat | agentic_rag | eliza | ingest | self_improve | reject)* -> finish``

* ``prepare`` queues the requests: ``{"requests": [...]}`` and/or ``{"request": {...}}``.
* ``classify`` writes ``route`` (and ``route_reason``) for the next request: an explicit ``type`` wins
  (``question``, ``proposal``, ``event``, ``ingest``, ``feedback``), otherwise a deterministic classification
  from the request's fields (:mod:`nodes.orchestration`). ``route_request`` is a pure router on ``route``.
* Questions go to ``rag``, ``rat`` or ``agentic_rag`` (``mode``: auto, rag, rat, agentic_rag); proposals and
  events to the Eliza cycle, under the agent's lock (:mod:`xmrt.redis.coordination`); ingest requests to ``ingest``;
  feedback to ``self_improve``, also under the agent's lock. An unknown type gets an error result. A failing
  handler gives an error result for its requests; the run goes on.
* Each handler invokes its graph (compiled without a checkpointer of its own: the orchestrator's checkpoint
  records each handled batch) and updates the component's record in the Redis registry
  (:mod:`xmrt.redis.registry`: status, last_run_at, last_error, runs, avg_ms).
* An ingest request obeys the access policy (:mod:`xmrt.policy`): over the served API, remote git URLs, or
  local paths inside ``XMRT_INGEST_ROOTS``, as a run of the ``ingest`` graph does.
* ``route_more`` loops until every request has a result; the loop is bounded (``max_requests``, and a batch
  budget derived from the recursion limit), and ``finish`` gives the leftovers an error result.

With ``monitor`` on (the default), the graphs it runs record their node, LLM and retrieval latencies in Redis
(:class:`xmrt.redis.monitoring.PerfMonitor`), unless the caller already passed a monitor in ``callbacks``.

Output: ``{"results": [{"index", "type", "route", "ok", ...}], "summary": {...}}``::

    graph.invoke({"requests": [{"type": "question", "question": "Who approves spending?"},
                               {"type": "proposal", "id": "p1", "title": "Fund audits",
                                "criteria": {"community_support": 0.8}}]},
                 context=OrchestratorContext(collection="docs"))
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import time
from collections.abc import Callable
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from graphs.context import OrchestratorContext, context_of
from nodes.orchestration import (
    COMPONENTS,
    agent_of,
    available,
    classify,
    finish,
    prepare,
    question_text,
    reject,
    route_more,
    route_request,
)
from xmrt.config import get_config

log = logging.getLogger(__name__)

Context = OrchestratorContext


class Input(TypedDict, total=False):
    """A list of requests and/or one request."""

    requests: list[dict[str, Any]]
    request: dict[str, Any]


class Output(TypedDict):
    """One result per request, in request order, and a summary."""

    results: list[dict[str, Any]]
    summary: dict[str, Any]


class State(Input, Output, total=False):
    """The queue, the loop position and bounds, and the current batch with its route (all checkpointed)."""

    queue: list[Any]
    position: int
    batches: int
    max_batches: int
    max_requests: int
    limit_note: str
    batch: list[dict[str, Any]]
    route: str
    route_reason: str


# ------------------------------------------------------------------------------------------ helpers
@functools.cache
def _child(name: str):
    """A graph to run inside a handler, compiled without a checkpointer (``False``: none, not even inherited)."""
    module = importlib.import_module(f"graphs.{name}")
    compiled = module.builder.compile(checkpointer=False)
    compiled.name = name
    return compiled


def _child_config(config: RunnableConfig, ctx: OrchestratorContext) -> tuple[RunnableConfig, Any]:
    """The config for a child graph: the node's callbacks, plus a PerfMonitor when none is there yet.

    The child inherits the node's ``configurable`` except the durability: a child has no checkpointer, and
    LangGraph 1.2 waits on a checkpoint save that never happens when a checkpointer-less graph inherits
    ``durability="sync"`` from its parent (AttributeError ``_put_checkpoint_fut``). "exit" saves nothing.
    """
    from xmrt.compat.langgraph import durability_configurable

    configurable = {**(config.get("configurable") or {}), **durability_configurable("exit")}
    callbacks = config.get("callbacks")
    if not ctx.monitor:
        return {"callbacks": callbacks, "configurable": configurable}, None
    from xmrt.redis.monitoring import PerfMonitor, monitor_for

    handlers = callbacks if isinstance(callbacks, list) else getattr(callbacks, "handlers", []) or []
    if any(isinstance(h, PerfMonitor) for h in handlers):
        return {"callbacks": callbacks, "configurable": configurable}, None
    monitor = monitor_for(get_config())
    if callbacks is None:
        callbacks = [monitor]
    elif isinstance(callbacks, list):
        callbacks = [*callbacks, monitor]
    else:
        callbacks = callbacks.copy()
        callbacks.add_handler(monitor, inherit=True)
    return {"callbacks": callbacks, "configurable": configurable}, monitor


def _registry():
    from xmrt.redis.registry import Registry

    return Registry(get_config())


def _register_components() -> None:
    try:
        registry = _registry()
        for name in COMPONENTS:
            registry.register(name, "registered" if available(name) else "unavailable")
    except Exception as exc:  # noqa: BLE001 - the registry is bookkeeping; it never stops a request
        log.warning("registry unavailable: %s", exc)


def _record(component: str, ok: bool, ms: float, error: str | None) -> None:
    try:
        _registry().record(component, ok, ms, error)
    except Exception as exc:  # noqa: BLE001 - see _register_components
        log.warning("could not update the registry for %s: %s", component, exc)


def _run(component: str, state: dict[str, Any], config: RunnableConfig, runtime: Runtime,
         work: Callable[[OrchestratorContext, RunnableConfig, list[dict[str, Any]]], list[dict[str, Any]]]):
    """Run ``work`` for the current batch: time it, record it in the registry, turn failures into results.

    The registry counts the component's run as failed only when it raised (it could not run, the agent was busy);
    a request it refused for bad input gets an error result and leaves the component ``ok``.
    """
    ctx = context_of(runtime, OrchestratorContext)
    batch = state["batch"]
    child_config, monitor = _child_config(config, ctx)
    started = time.perf_counter()
    try:
        results = work(ctx, child_config, batch)
        # The component worked; a request it refused (invalid input) is in that request's result only.
        ok, error = True, None
    except GraphBubbleUp:
        raise
    except Exception as exc:  # noqa: BLE001 - one failing component must not crash the other requests
        log.warning("%s failed: %s", component, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        error = f"{type(exc).__name__}: {exc}"
        ok = False
        results = [{"ok": False, "error": error} for _ in batch]
    finally:
        if monitor is not None:
            monitor.flush()
    ms = (time.perf_counter() - started) * 1000.0
    _record(component, ok, ms, error)
    out = []
    for item, result in zip(batch, results, strict=True):
        request = item["request"]
        out.append({"index": item["index"], "type": request.get("type"), "route": component,
                    "route_reason": state.get("route_reason", ""), **result})
    return {"results": [*state.get("results", []), *out], "position": state.get("position", 0) + len(batch),
            "batches": state.get("batches", 0) + 1}


@contextlib.contextmanager
def _agent_lock(ctx: OrchestratorContext, agent: str, purpose: str):
    from xmrt.policy import current_principal
    from xmrt.redis.coordination import AgentLock

    lock = AgentLock(get_config(), agent, ttl=ctx.lock_ttl, principal=current_principal())
    with lock.hold(wait=ctx.lock_wait, purpose=purpose):
        yield


def _items(request: dict[str, Any], plural: str, singular: str, inline_keys: tuple[str, ...]) -> list[Any]:
    if isinstance(request.get(plural), list):
        return list(request[plural])
    if request.get(singular) is not None:
        return [request[singular]]
    if any(k in request for k in inline_keys):
        return [{k: v for k, v in request.items() if k not in ("type", "agent", "mode")}]
    return []


# ------------------------------------------------------------------------------------------ handlers
def _question(component: str, ctx_cls_name: str):
    def handler(state: dict[str, Any], config: RunnableConfig, runtime: Runtime) -> dict[str, Any]:
        def work(ctx, child_config, batch):
            import graphs.context as contexts

            out = []
            for item in batch:
                request = item["request"]
                question = question_text(request)
                collection = request.get("collection") or ctx.collection
                extra = {"agent_id": agent_of(request, ctx)} if component == "agentic_rag" else {}
                context = getattr(contexts, ctx_cls_name)(collection=collection, **extra)
                inputs = {"question": question} if component == "rat" else {"messages": [HumanMessage(question)]}
                answer = _child(component).invoke(inputs, child_config, context=context)
                result = {"ok": True, "question": question, "answer": answer.get("final_response", ""),
                          "sources": answer.get("sources", [])}
                if "confidence" in answer:
                    result["confidence"] = answer["confidence"]
                out.append(result)
            return out

        return _run(component, state, config, runtime, work)

    handler.__name__ = component
    handler.__doc__ = f"Answer a question with the {component} graph."
    return handler


rag = _question("rag", "RagContext")
rat = _question("rat", "RatContext")
agentic_rag = _question("agentic_rag", "AgenticRagContext")


def eliza(state: dict[str, Any], config: RunnableConfig, runtime: Runtime) -> dict[str, Any]:
    """Decide the batch's proposals and events in one Eliza cycle, under the agent's lock."""

    def work(ctx, child_config, batch):
        from graphs.context import ElizaContext

        agent = agent_of(batch[0]["request"], ctx)
        proposals, owner = [], []
        for n, item in enumerate(batch):
            for p in _items(item["request"], "proposals", "proposal" if "proposal" in item["request"] else "event",
                            ("id", "title", "criteria")):
                proposals.append(p)
                owner.append(n)
        per = [{"ok": True, "decisions": [], "invalid": [], "actions": []} for _ in batch]
        if not proposals:
            return [{"ok": False, "error": "no proposal in the request (give 'proposal', 'proposals' or the "
                     "proposal's own fields)"} for _ in batch]
        with _agent_lock(ctx, agent, f"orchestrator: {len(proposals)} proposal(s)"):
            out = _child("eliza").invoke({"proposals": proposals}, child_config,
                                         context=ElizaContext(agent_id=agent, use_llm=ctx.use_llm,
                                                              collection=ctx.collection))
        ids = {}
        for i, p in enumerate(proposals):
            if isinstance(p, dict) and p.get("id") is not None:
                ids.setdefault(str(p["id"]).strip(), owner[i])
        for d in out.get("decisions", []):
            n = ids.get(d["id"], 0)
            per[n]["decisions"].append({k: d.get(k) for k in ("id", "decision", "score", "rationale", "sources")})
        for a in out.get("actions", []):
            per[ids.get(a.get("id"), 0)]["actions"].append(a)
        for bad in out.get("invalid", []):
            n = owner[bad["index"]] if isinstance(bad.get("index"), int) else ids.get(str(bad.get("id")), 0)
            per[n]["invalid"].append(bad)
        for n, r in enumerate(per):
            r["agent"] = agent
            r["metrics"] = out.get("metrics", {})
            if r["invalid"] and not r["decisions"]:
                r["ok"] = False
                r["error"] = "; ".join(b["error"] for b in r["invalid"])
        return per

    return _run("eliza", state, config, runtime, work)


def ingest(state: dict[str, Any], config: RunnableConfig, runtime: Runtime) -> dict[str, Any]:
    """Ingest a folder, file or git repository into a collection."""

    def work(ctx, child_config, batch):
        from graphs.ingest import IngestContext

        request = batch[0]["request"]
        source = request.get("source")
        if not isinstance(source, str) or not source.strip():
            return [{"ok": False, "error": "an ingest request needs a 'source' (a path or git URL)"}]
        from xmrt.policy import PolicyError, check_ingest_source

        try:  # the ingest graph checks it again where it resolves the source; refuse early with a clear result
            check_ingest_source(get_config(), source)
        except PolicyError as exc:
            return [{"ok": False, "error": str(exc)}]
        inputs = {"source": source, **{k: request[k] for k in ("branch", "working_tree") if k in request}}
        context = IngestContext(collection=request.get("collection") or ctx.collection, progress=False)
        out = _child("ingest").invoke(inputs, child_config, context=context)
        return [{"ok": True, "summary": out.get("summary", {})}]

    return _run("ingest", state, config, runtime, work)


def self_improve(state: dict[str, Any], config: RunnableConfig, runtime: Runtime) -> dict[str, Any]:
    """Record the batch's feedback and learn from it, under the agent's lock."""

    def work(ctx, child_config, batch):
        from graphs.context import SelfImproveContext

        agent = agent_of(batch[0]["request"], ctx)
        outcomes, owner = [], []
        for n, item in enumerate(batch):
            for o in _items(item["request"], "outcomes", "outcome", ("id", "success")):
                outcomes.append(o)
                owner.append(n)
        with _agent_lock(ctx, agent, f"orchestrator: feedback on {len(outcomes)} decision(s)"):
            out = _child("self_improve").invoke({"outcomes": outcomes}, child_config,
                                                context=SelfImproveContext(agent_id=agent, learn=ctx.learn))
        per = [{"ok": True, "agent": agent, "recorded": [], "errors": [], "training": out.get("training"),
                "metrics": out.get("metrics_after", {})} for _ in batch]
        ids = {str(o["id"]).strip(): owner[i] for i, o in enumerate(outcomes)
               if isinstance(o, dict) and o.get("id") is not None}
        for rec in out.get("recorded", []):
            per[ids.get(rec["id"], 0)]["recorded"].append(rec)
        for err in out.get("errors", []):
            per[owner[err["index"]] if err.get("index") is not None else 0]["errors"].append(err)
        for r in per:
            if r["errors"] and not r["recorded"]:
                r["ok"] = False
                r["error"] = "; ".join(e["error"] for e in r["errors"])
        return per

    return _run("self_improve", state, config, runtime, work)


def start(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Register the components in the Redis registry, then queue the requests."""
    _register_components()
    return prepare(state, runtime)


# ------------------------------------------------------------------------------------------ graph
HANDLERS = ("rag", "rat", "agentic_rag", "eliza", "ingest", "self_improve", "reject")

builder = StateGraph(State, context_schema=OrchestratorContext, input_schema=Input, output_schema=Output)
builder.add_node("prepare", start)
builder.add_node("classify", classify)
for _name, _fn in (("rag", rag), ("rat", rat), ("agentic_rag", agentic_rag), ("eliza", eliza), ("ingest", ingest),
                   ("self_improve", self_improve), ("reject", reject)):
    builder.add_node(_name, _fn)
builder.add_node("finish", finish)
builder.add_edge(START, "prepare")
builder.add_conditional_edges("prepare", route_more, ["classify", "finish"])
builder.add_conditional_edges("classify", route_request, list(HANDLERS))
for _name in HANDLERS:
    builder.add_conditional_edges(_name, route_more, ["classify", "finish"])
builder.add_edge("finish", END)

graph = builder.compile()
graph.name = "orchestrator"
