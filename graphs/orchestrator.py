"""The orchestrator: a supervisor that routes each request to the graph that handles it, and keeps the registry.

``prepare -> (classify -> rag | rat | agentic_rag | eliza | ingest | self_improve | reject)* -> finish``

* ``prepare`` queues the requests: ``{"requests": [...]}`` and/or ``{"request": {...}}``.
* ``classify`` writes ``route`` (and ``route_reason``) for the next request: an explicit ``type`` wins
  (``question``, ``proposal``, ``event``, ``ingest``, ``feedback``), otherwise a deterministic classification
  from the request's fields (:mod:`nodes.orchestrator`). ``route_request`` is a pure router on ``route``.
* Questions go to ``rag``, ``rat`` or ``agentic_rag`` (``mode``: auto, rag, rat, agentic_rag); proposals and
  events to the Eliza cycle, under the agent's lock (:mod:`xmrt.redis.coordination`); ingest requests to ``ingest``;
  feedback to ``self_improve``, also under the agent's lock. An unknown type gets an error result. A failing
  handler gives an error result for its requests; the run goes on.
* Each route is a row of :data:`ROUTES`: the graph, its context class, and how a request maps onto the graph's
  input, context and output (:class:`nodes.routing.Route`). One node, :func:`nodes.orchestrator.handle`, runs
  a batch on its route's graph (compiled without a checkpointer of its own: the orchestrator's checkpoint
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

import functools
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from graphs import agentic_rag, eliza, ingest, rag, rat, self_improve
from graphs.context import (
    AgenticRagContext,
    ElizaContext,
    IngestContext,
    OrchestratorContext,
    RagContext,
    RatContext,
    SelfImproveContext,
)
from nodes.orchestrator import (
    agent_of,
    classify,
    finish,
    handle,
    question_text,
    reject,
    route_more,
    route_request,
    start,
)
from nodes.routing import AgentBatch, Collect, Route
from xmrt import services


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


# ------------------------------------------------------------------------------------------ request mappings
def _question_context(request: dict[str, Any], ctx: OrchestratorContext) -> dict[str, Any]:
    return {"collection": request.get("collection") or ctx.collection}


def _agent_question_context(request: dict[str, Any], ctx: OrchestratorContext) -> dict[str, Any]:
    return {**_question_context(request, ctx), "agent_id": agent_of(request, ctx)}


def _messages_input(request: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [HumanMessage(question_text(request))]}


def _question_input(request: dict[str, Any]) -> dict[str, Any]:
    return {"question": question_text(request)}


def _answer(request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    result = {"ok": True, "question": question_text(request), "answer": answer.get("final_response", ""),
              "sources": answer.get("sources", [])}
    if "confidence" in answer:
        result["confidence"] = answer["confidence"]
    return result


def _ingest_refusal(request: dict[str, Any]) -> str | None:
    source = request.get("source")
    if not isinstance(source, str) or not source.strip():
        return "an ingest request needs a 'source' (a path or git URL)"
    from xmrt.policy import PolicyError, check_ingest_source

    try:  # the ingest graph checks it again where it resolves the source; refuse early with a clear result
        check_ingest_source(services.config(), source)
    except PolicyError as exc:
        return str(exc)
    return None


def _ingest_context(request: dict[str, Any], ctx: OrchestratorContext) -> dict[str, Any]:
    return {"collection": request.get("collection") or ctx.collection, "progress": False}


def _ingest_input(request: dict[str, Any]) -> dict[str, Any]:
    return {"source": request["source"], **{k: request[k] for k in ("branch", "working_tree") if k in request}}


def _summary(request: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "summary": out.get("summary", {})}


def _items(request: dict[str, Any], plural: str, singular: str, inline_keys: tuple[str, ...]) -> list[Any]:
    """A request's items: its ``plural`` list, its ``singular`` item, or the request itself (inline fields)."""
    if isinstance(request.get(plural), list):
        return list(request[plural])
    if request.get(singular) is not None:
        return [request[singular]]
    if any(k in request for k in inline_keys):
        return [{k: v for k, v in request.items() if k not in ("type", "agent", "mode")}]
    return []


def _proposals(request: dict[str, Any]) -> list[Any]:
    return _items(request, "proposals", "proposal" if "proposal" in request else "event", ("id", "title", "criteria"))


def _outcomes(request: dict[str, Any]) -> list[Any]:
    return _items(request, "outcomes", "outcome", ("id", "success"))


def _eliza_context(request: dict[str, Any], ctx: OrchestratorContext) -> dict[str, Any]:
    return {"agent_id": agent_of(request, ctx), "use_llm": ctx.use_llm, "collection": ctx.collection}


def _eliza_result(out: dict[str, Any], agent: str) -> dict[str, Any]:
    return {"agent": agent, "metrics": out.get("metrics", {})}


def _learning_context(request: dict[str, Any], ctx: OrchestratorContext) -> dict[str, Any]:
    return {"agent_id": agent_of(request, ctx), "learn": ctx.learn}


def _learning_result(out: dict[str, Any], agent: str) -> dict[str, Any]:
    return {"agent": agent, "training": out.get("training"), "metrics": out.get("metrics_after", {})}


# ------------------------------------------------------------------------------------------ route table
ROUTES: dict[str, Route] = {
    "rag": Route(rag.builder, RagContext, _question_context, _messages_input, _answer),
    "rat": Route(rat.builder, RatContext, _question_context, _question_input, _answer),
    "agentic_rag": Route(agentic_rag.builder, AgenticRagContext, _agent_question_context, _messages_input, _answer),
    "eliza": Route(eliza.builder, ElizaContext, _eliza_context, batch=AgentBatch(
        input_key="proposals", items=_proposals, purpose="{n} proposal(s)", result=_eliza_result,
        collect=(Collect("decisions", "decisions", ("id", "decision", "score", "rationale", "sources")),
                 Collect("actions", "actions"), Collect("invalid", "invalid")),
        done=("decisions", "invalid"),
        empty_error="no proposal in the request (give 'proposal', 'proposals' or the proposal's own fields)")),
    "ingest": Route(ingest.builder, IngestContext, _ingest_context, _ingest_input, _summary, check=_ingest_refusal),
    "self_improve": Route(self_improve.builder, SelfImproveContext, _learning_context, batch=AgentBatch(
        input_key="outcomes", items=_outcomes, purpose="feedback on {n} decision(s)", result=_learning_result,
        collect=(Collect("recorded", "recorded"), Collect("errors", "errors")), done=("recorded", "errors"))),
}
"""Route -> graph, context class, and the mappings of a request onto its input, context and output."""

# ------------------------------------------------------------------------------------------ graph
builder = StateGraph(State, context_schema=OrchestratorContext, input_schema=Input, output_schema=Output)
builder.add_node("prepare", start)
builder.add_node("classify", classify)
for _name in ROUTES:
    builder.add_node(_name, functools.partial(handle, routes=ROUTES))
builder.add_node("reject", reject)
builder.add_node("finish", finish)
builder.add_edge(START, "prepare")
builder.add_conditional_edges("prepare", route_more, ["classify", "finish"])
builder.add_conditional_edges("classify", route_request, [*ROUTES, "reject"])
for _name in (*ROUTES, "reject"):
    builder.add_conditional_edges(_name, route_more, ["classify", "finish"])
builder.add_edge("finish", END)

graph = builder.compile(name="orchestrator")
