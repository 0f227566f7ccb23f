"""The orchestrator graph's own nodes (graphs/orchestrator.py): take the requests, classify, route, finish.

A request is a JSON object. Its ``type`` says what it is; when it has none, :func:`classify_request` decides
from its fields, deterministically. Routes:

========================= =========================================================================
request                   route
========================= =========================================================================
``question``              ``rag``, ``rat`` or ``agentic_rag`` (``mode`` field, else context
                          ``question_mode``, else :func:`question_route`)
``proposal`` / ``event``  ``eliza`` (consecutive ones for the same agent are decided in one cycle)
``ingest``                ``ingest``
``feedback``              ``self_improve`` (consecutive ones for the same agent are learned together)
anything else             ``reject``: a clear error result, never an exception
========================= =========================================================================
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from graphs.context import OrchestratorContext, context_of
from nodes.routing import Route, register_components, run_route

REQUEST_TYPES = ("question", "proposal", "event", "ingest", "feedback")
QUESTION_ROUTES = ("rag", "rat", "agentic_rag")
COMPONENTS = ("rag", "rat", "agentic_rag", "eliza", "ingest", "self_improve")
MODE_ALIASES = {"rag": "rag", "rat": "rat", "agentic": "agentic_rag", "agentic_rag": "agentic_rag"}
RouteName = Literal["rag", "rat", "agentic_rag", "eliza", "ingest", "self_improve", "reject"]

_AGENTIC = re.compile(r"\b(code|function|class|method|module|signature|repo(sitory)?|remember|memory|memories|"
                      r"my|we discussed|earlier)\b", re.I)
_REASONING = re.compile(r"^\s*(why|how|explain|compare|should|what would|what if|plan)\b|\bstep[- ]by[- ]step\b|"
                        r"\btrade-?offs?\b|\bpros and cons\b", re.I)


def _ctx(runtime: Runtime) -> OrchestratorContext:
    return context_of(runtime, OrchestratorContext)


def available(component: str) -> bool:
    """Whether a component's graph module exists (``graphs/<component>.py``); it is not imported here."""
    try:
        return importlib.util.find_spec(f"graphs.{component}") is not None
    except (ImportError, ValueError):
        return False


def question_text(request: dict[str, Any]) -> str:
    """The question of a request: ``question``, ``query``, or the last user message of ``messages``."""
    for key in ("question", "query"):
        if isinstance(request.get(key), str) and request[key].strip():
            return request[key].strip()
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") in ("user", "human"):
            return str(message.get("content", "")).strip()
        if isinstance(message, list | tuple) and len(message) == 2 and message[0] in ("user", "human"):
            return str(message[1]).strip()
        if isinstance(message, str):
            return message.strip()
    return ""


def question_route(question: str) -> str:
    """Deterministic choice of a question graph.

    * code, repositories or memories of earlier conversations → ``agentic_rag`` (it has those tools);
    * why / how / explain / compare / plan questions, or long multi-part ones → ``rat`` (step-wise reasoning
      revised against retrieval);
    * anything else (a factual lookup) → ``rag``.
    """
    if _AGENTIC.search(question):
        return "agentic_rag"
    if _REASONING.search(question) or len(question) > 160 or question.count("?") > 1:
        return "rat"
    return "rag"


def request_type(request: Any) -> tuple[str | None, str]:
    """The request's type and how it was found; (None, why) when it cannot be told.

    An explicit ``type`` wins (even an unknown one, which is then rejected by :func:`classify_request`).
    """
    if not isinstance(request, dict):
        return None, f"a request must be a JSON object, got {type(request).__name__}"
    explicit = request.get("type")
    if explicit is not None:
        return str(explicit).strip().lower(), "explicit type"
    if question_text(request):
        return "question", "has a question"
    if isinstance(request.get("source"), str):
        return "ingest", "has a source to ingest"
    if "outcomes" in request or "outcome" in request or ("success" in request and "id" in request):
        return "feedback", "has an outcome"
    if "event" in request:
        return "event", "has an event"
    if any(k in request for k in ("proposal", "proposals", "title", "criteria")):
        return "proposal", "has a proposal"
    return None, ("cannot tell the request type from its fields; set 'type' to one of " + ", ".join(REQUEST_TYPES))


def classify_request(request: Any, ctx: OrchestratorContext) -> tuple[str, str]:
    """The route of one request and the reason for it (see the module docstring)."""
    kind, why = request_type(request)
    if kind is None:
        return "reject", why
    if kind == "question":
        mode = str(request.get("mode") or ctx.question_mode or "auto").strip().lower()
        if mode == "auto":
            route = question_route(question_text(request))
            why = f"{why}; auto mode chose {route}"
        elif mode in MODE_ALIASES:
            route = MODE_ALIASES[mode]
            why = f"{why}; mode {mode}"
        else:
            return "reject", f"unknown question mode {mode!r}; use auto, rag, rat or agentic_rag"
        if not question_text(request):
            return "reject", "a question request needs a non-empty 'question'"
        if not available(route):
            fallback = next((r for r in QUESTION_ROUTES if available(r)), None)
            if fallback is None:
                return "reject", f"no question graph is available ({route} was chosen)"
            why = f"{why}; {route} is not available, so {fallback}"
            route = fallback
        return route, why
    if kind in ("proposal", "event"):
        return "eliza", why
    if kind == "ingest":
        return "ingest", why
    if kind in ("feedback", "outcome"):
        return "self_improve", why
    return "reject", f"unknown request type {kind!r}; expected one of {', '.join(REQUEST_TYPES)}"


def agent_of(request: dict[str, Any], ctx: OrchestratorContext) -> str:
    """The agent a proposal or feedback request is for."""
    agent = request.get("agent") if isinstance(request, dict) else None
    return str(agent) if isinstance(agent, str) and agent.strip() else ctx.agent_id


# ------------------------------------------------------------------------------------------ nodes
def prepare(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Collect the requests (``requests`` and/or a single ``request``) into the queue and reset the run.

    At most ``max_requests`` are queued; the loop is also bounded by ``max_batches``, derived from the run's
    recursion limit (each batch takes two steps), so that every request gets a result.
    """
    from langgraph.config import get_config as run_config

    ctx = _ctx(runtime)
    requests: list[Any] = []
    if state.get("request") is not None:
        requests.append(state["request"])
    raw = state.get("requests")
    if raw is not None:
        requests.extend(raw if isinstance(raw, list) else [raw])
    try:
        limit = int(run_config().get("recursion_limit") or 25)
    except RuntimeError:
        limit = 25
    return {
        "queue": requests,
        "position": 0,
        "batches": 0,
        "max_batches": max(1, (limit - 3) // 2),
        "batch": [],
        "route": "",
        "route_reason": "",
        "results": [],
        "limit_note": f"recursion limit {limit}",
        "max_requests": ctx.max_requests,
    }


def start(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Register the components in the Redis registry, then queue the requests."""
    register_components({name: available(name) for name in COMPONENTS})
    return prepare(state, runtime)


def handle(state: dict[str, Any], config: RunnableConfig, runtime: Runtime, *,
           routes: Mapping[str, Route]) -> dict[str, Any]:
    """Run the current batch on its route's graph (``routes``: the route table, graphs/orchestrator.py)."""
    ctx = _ctx(runtime)
    name = state["route"]
    return run_route(name, routes[name], state, config, ctx, agent_of(state["batch"][0]["request"], ctx))


def classify(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Classify the next request into ``route``; consecutive Eliza (or feedback) requests for one agent batch up."""
    ctx = _ctx(runtime)
    queue, position = state.get("queue", []), state.get("position", 0)
    first = queue[position]
    route, why = classify_request(first, ctx)
    batch = [{"index": position, "request": first}]
    if route in ("eliza", "self_improve"):
        agent = agent_of(first, ctx)
        end = min(len(queue), state.get("max_requests", ctx.max_requests))
        for i in range(position + 1, end):
            if len(batch) >= ctx.max_batch:
                break
            nxt = queue[i]
            if classify_request(nxt, ctx)[0] != route or agent_of(nxt, ctx) != agent:
                break
            batch.append({"index": i, "request": nxt})
    return {"route": route, "route_reason": why, "batch": batch}


def route_request(state: dict[str, Any]) -> RouteName:
    """Pure router: the handler named by ``route``."""
    route = state.get("route")
    return route if route in ("rag", "rat", "agentic_rag", "eliza", "ingest", "self_improve") else "reject"


def route_more(state: dict[str, Any]) -> Literal["classify", "finish"]:
    """Pure router: classify the next request while requests, the request cap and the batch budget remain."""
    queue = state.get("queue", [])
    cap = min(len(queue), state.get("max_requests", len(queue)))
    if state.get("position", 0) < cap and state.get("batches", 0) < state.get("max_batches", 1):
        return "classify"
    return "finish"


def reject(state: dict[str, Any]) -> dict[str, Any]:
    """An error result for a request that cannot be routed (unknown type, missing fields)."""
    item = state["batch"][0]
    request = item["request"]
    kind = request.get("type") if isinstance(request, dict) else None
    result = {"index": item["index"], "type": kind, "route": "reject", "ok": False, "error": state["route_reason"]}
    return {"results": [*state.get("results", []), result], "position": state.get("position", 0) + 1,
            "batches": state.get("batches", 0) + 1}


def finish(state: dict[str, Any]) -> dict[str, Any]:
    """Error results for the requests left over by the caps, and a summary by route."""
    results = list(state.get("results", []))
    queue = state.get("queue", [])
    cap = state.get("max_requests", len(queue))
    for i in range(state.get("position", 0), len(queue)):
        why = (f"not handled: at most {cap} requests per call" if i >= cap else
               f"not handled: the run's {state.get('limit_note', 'recursion limit')} allows "
               f"{state.get('max_batches')} batches; pass a higher recursion_limit or fewer requests")
        request = queue[i]
        results.append({"index": i, "type": request.get("type") if isinstance(request, dict) else None,
                        "route": None, "ok": False, "error": why})
    by_route: dict[str, int] = {}
    for r in results:
        by_route[str(r.get("route"))] = by_route.get(str(r.get("route")), 0) + 1
    summary = {"requests": len(queue), "ok": sum(1 for r in results if r.get("ok")),
               "failed": sum(1 for r in results if not r.get("ok")), "by_route": by_route}
    if not queue:
        summary["note"] = "no requests given: pass 'requests' (a list) or 'request' (one object)"
    return {"results": results, "summary": summary}
