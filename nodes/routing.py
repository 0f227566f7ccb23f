"""The orchestrator's route table entries and the one way a batch of requests runs on a route's graph.

A :class:`Route` names the graph a request type goes to, its context class, and how requests map onto the
graph's input, context and output. :func:`run_route` runs the current batch on it: a child config (callbacks,
latency monitor), timing, the component's registry record, and one error result per request when the graph
fails. Routes whose requests belong to an agent (Eliza's proposals and events, feedback for self-improvement)
carry an :class:`AgentBatch`: their items are pooled into one run under the agent's lock, and the graph's
output is handed back to the request each item came from (:func:`run_agent_batch`, written once for both).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.errors import GraphBubbleUp

from graphs.context import OrchestratorContext
from xmrt import services

log = logging.getLogger(__name__)

Request = dict[str, Any]
Result = dict[str, Any]


@dataclass(frozen=True)
class Collect:
    """One list of the graph's output handed back to the requests: ``output[key]`` items into ``result[into]``.

    An item goes to the request its ``index`` (the position of the input item) came from, else the one whose
    item had its ``id``, else the batch's first request. ``fields`` keeps only those keys of each item.
    """

    key: str
    into: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class AgentBatch:
    """How a batch of one agent's requests becomes one run of the graph and one result per request.

    Attributes:
        input_key: The graph's input list (``proposals``, ``outcomes``).
        items: A request's items for that list.
        purpose: The lock's purpose; ``{n}`` is the number of items.
        collect: The output lists handed back to the requests.
        result: Fields added to every request's result, from the graph's output and the agent.
        done: A request's result is an error when its ``bad`` list has entries and its ``good`` list none.
        empty_error: The error of every request when the batch has no item; None runs the graph anyway.
    """

    input_key: str
    items: Callable[[Request], list[Any]]
    purpose: str
    collect: tuple[Collect, ...]
    result: Callable[[dict[str, Any], str], Result]
    done: tuple[str, str]
    empty_error: str | None = None


@dataclass(frozen=True)
class Route:
    """One route of the orchestrator: the graph, its context class, and the input, context and output mappings.

    Attributes:
        builder: The graph's builder; it runs compiled without a checkpointer of its own.
        context: The graph's context class.
        context_args: The context's fields for a request (the orchestrator's context gives the defaults).
        inputs: A request's graph input (per-request routes); None for an agent batch.
        outputs: A request's result from the graph's output (per-request routes).
        check: An error text for a request refused before its run (None lets it run).
        batch: For an agent's requests: pooled into one locked run.
    """

    builder: Any
    context: type
    context_args: Callable[[Request, OrchestratorContext], dict[str, Any]]
    inputs: Callable[[Request], dict[str, Any]] | None = None
    outputs: Callable[[Request, dict[str, Any]], Result] | None = None
    check: Callable[[Request], str | None] | None = None
    batch: AgentBatch | None = None


@functools.cache
def _compiled(builder: Any, name: str):
    """A route's graph compiled without a checkpointer (``False``: none, not even inherited)."""
    compiled = builder.compile(checkpointer=False)
    compiled.name = name
    return compiled


def child_config(config: RunnableConfig, ctx: OrchestratorContext) -> tuple[RunnableConfig, Any]:
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
    monitor = monitor_for(services.config())
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

    return Registry(services.config(), client=services.redis())


def register_components(components: dict[str, bool]) -> None:
    """Register each component (name -> available) in the Redis registry; a registry failure is only logged."""
    try:
        registry = _registry()
        for name, ok in components.items():
            registry.register(name, "registered" if ok else "unavailable")
    except Exception as exc:  # noqa: BLE001 - the registry is bookkeeping; it never stops a request
        log.warning("registry unavailable: %s", exc)


def _record(component: str, ok: bool, ms: float, error: str | None) -> None:
    try:
        _registry().record(component, ok, ms, error)
    except Exception as exc:  # noqa: BLE001 - see register_components
        log.warning("could not update the registry for %s: %s", component, exc)


@contextlib.contextmanager
def agent_lock(ctx: OrchestratorContext, agent: str, purpose: str):
    """Hold the agent's lock (in the caller's tenancy) while its requests run."""
    from xmrt.policy import current_principal
    from xmrt.redis.coordination import AgentLock

    lock = AgentLock(services.config(), agent, ttl=ctx.lock_ttl, client=services.redis(), principal=current_principal())
    with lock.hold(wait=ctx.lock_wait, purpose=purpose):
        yield


def _per_request(name: str, route: Route, ctx: OrchestratorContext, config: RunnableConfig,
                 batch: list[dict[str, Any]]) -> list[Result]:
    out = []
    for item in batch:
        request = item["request"]
        refused = route.check(request) if route.check else None
        if refused:
            out.append({"ok": False, "error": refused})
            continue
        context = route.context(**route.context_args(request, ctx))
        output = _compiled(route.builder, name).invoke(route.inputs(request), config, context=context)
        out.append(route.outputs(request, output))
    return out


def _owner(entry: dict[str, Any], owner: list[int], ids: dict[str, int]) -> int:
    index = entry.get("index")
    if isinstance(index, int):
        return owner[index]
    return ids.get(str(entry.get("id")).strip(), 0)


def run_agent_batch(name: str, route: Route, ctx: OrchestratorContext, config: RunnableConfig,
                    batch: list[dict[str, Any]], agent: str) -> list[Result]:
    """Pool the batch's items into one run under the agent's lock; hand the output back to each request."""
    spec = route.batch
    items, owner = [], []
    for n, entry in enumerate(batch):
        for item in spec.items(entry["request"]):
            items.append(item)
            owner.append(n)
    if not items and spec.empty_error:
        return [{"ok": False, "error": spec.empty_error} for _ in batch]
    context = route.context(**route.context_args(batch[0]["request"], ctx))
    with agent_lock(ctx, agent, "orchestrator: " + spec.purpose.format(n=len(items))):
        output = _compiled(route.builder, name).invoke({spec.input_key: items}, config, context=context)
    ids: dict[str, int] = {}
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("id") is not None:
            ids.setdefault(str(item["id"]).strip(), owner[i])
    results = [{"ok": True, **{c.into: [] for c in spec.collect}} for _ in batch]
    for c in spec.collect:
        for entry in output.get(c.key, []):
            kept = {k: entry.get(k) for k in c.fields} if c.fields else entry
            results[_owner(entry, owner, ids)][c.into].append(kept)
    good, bad = spec.done
    for result in results:
        result.update(spec.result(output, agent))
        if result[bad] and not result[good]:
            result["ok"] = False
            result["error"] = "; ".join(b["error"] for b in result[bad])
    return results


def run_route(name: str, route: Route, state: dict[str, Any], config: RunnableConfig, ctx: OrchestratorContext,
              agent: str) -> dict[str, Any]:
    """Run the current batch on ``route``: time it, record it in the registry, turn failures into results.

    The registry counts the component's run as failed only when it raised (it could not run, the agent was busy);
    a request it refused for bad input gets an error result and leaves the component ``ok``.
    """
    batch = state["batch"]
    config, monitor = child_config(config, ctx)
    started = time.perf_counter()
    try:
        if route.batch is not None:
            results = run_agent_batch(name, route, ctx, config, batch, agent)
        else:
            results = _per_request(name, route, ctx, config, batch)
        ok, error = True, None
    except GraphBubbleUp:
        raise
    except Exception as exc:  # noqa: BLE001 - one failing component must not crash the other requests
        log.warning("%s failed: %s", name, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        error = f"{type(exc).__name__}: {exc}"
        ok = False
        results = [{"ok": False, "error": error} for _ in batch]
    finally:
        if monitor is not None:
            monitor.flush()
    _record(name, ok, (time.perf_counter() - started) * 1000.0, error)
    out = []
    for item, result in zip(batch, results, strict=True):
        out.append({"index": item["index"], "type": item["request"].get("type"), "route": name,
                    "route_reason": state.get("route_reason", ""), **result})
    return {"results": [*state.get("results", []), *out], "position": state.get("position", 0) + len(batch),
            "batches": state.get("batches", 0) + 1}
