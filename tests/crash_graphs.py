"""A multi-step graph for the crash tests of the production server (tests/test_production.py only).

``step_1 → step_2 → step_3 → load_context → assess → decide → reflect → act → learn → step_4 → step_5``

The middle is the real Eliza cycle (the nodes of graphs/eliza.py). The ``step_*`` nodes sleep ``pause`` seconds
each; ``act`` runs the real Eliza ``act`` node (which records the decisions and runs the approved proposals'
actions) and then sleeps ``act_pause`` seconds before its checkpoint: a process killed during that sleep has done
the action, but its checkpoint does not show it, so the process that takes the run over runs ``act`` again. That
second run must not duplicate the action.

With ``gate`` set, ``step_1`` waits (up to 5 minutes) until the test sets ``<prefix>:crashtest:go``: the test can
let a run start on one host, bring a second host up, then let the run go on.

Every node start is pushed to the Redis list ``<prefix>:crashtest:events`` as ``"<node>:<event>:<pid>"``, so the
test sees which process ran what, and when to kill it.
"""

from __future__ import annotations

import asyncio
import inspect
import operator
import os
import time
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from graphs.context import ElizaContext
from graphs.eliza import State as ElizaState
from nodes import eliza as decision


class CrashState(ElizaState, total=False):
    """The Eliza cycle's state, the completed steps and the pauses."""

    steps: Annotated[list[str], operator.add]
    pause: float
    act_pause: float
    gate: bool


def events_key() -> str:
    from xmrt.config import get_config

    return f"{get_config().key_prefix}:crashtest:events"


def mark(node: str, event: str) -> None:
    """Push ``node:event:pid`` to the events list."""
    from xmrt.config import get_config
    from xmrt.redis.server import connect

    connect(get_config(), check=False).rpush(events_key(), f"{node}:{event}:{os.getpid()}")


def go_key() -> str:
    from xmrt.config import get_config

    return f"{get_config().key_prefix}:crashtest:go"


def _wait_for_go() -> None:
    from xmrt.config import get_config
    from xmrt.redis.server import connect

    client = connect(get_config(), check=False)
    deadline = time.monotonic() + 300
    while not client.exists(go_key()) and time.monotonic() < deadline:
        time.sleep(0.2)


def _step(name: str):
    def step(state: dict[str, Any]) -> dict[str, Any]:
        mark(name, "start")
        if name == "step_1" and state.get("gate"):
            _wait_for_go()
        time.sleep(float(state.get("pause") or 0))
        return {"steps": [name]}

    step.__name__ = name
    return step


async def act_then_pause(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """The real Eliza ``act`` node, then a pause before the checkpoint is written."""
    await asyncio.to_thread(mark, "act", "start")
    if inspect.iscoroutinefunction(decision.act):
        out = await decision.act(state, runtime)
    else:
        out = await asyncio.to_thread(decision.act, state, runtime)
    await asyncio.to_thread(mark, "act", "done")
    await asyncio.sleep(float(state.get("act_pause") or 0))
    return {**out, "steps": ["act"]}


builder = StateGraph(CrashState, context_schema=ElizaContext)
ORDER = ["step_1", "step_2", "step_3", "load_context", "assess", "decide", "reflect", "act", "learn", "step_4",
         "step_5"]
for name in ("step_1", "step_2", "step_3", "step_4", "step_5"):
    builder.add_node(name, _step(name))
builder.add_node("load_context", decision.load_context)
builder.add_node("assess", decision.assess)
builder.add_node("decide", decision.decide)
builder.add_node("reflect", decision.reflect)
builder.add_node("act", act_then_pause)
builder.add_node("learn", decision.learn)
builder.add_edge(START, ORDER[0])
for a, b in zip(ORDER, ORDER[1:], strict=False):
    builder.add_edge(a, b)
builder.add_edge(ORDER[-1], END)
graph = builder.compile()
graph.name = "crash_steps"
