"""The workload of the checkpoint benchmark: its persistence modes, its graphs, and CPU pinning.

:class:`Mode` is one row of the comparison (a saver in one durability mode), :func:`default_modes` every row the
benchmark compares; :func:`build_graph` builds the two scripted graphs with trivial nodes (``linear3`` and
``fanout2``) and :func:`chat_builder` the one-node conversation of the state reads. :func:`one_cpu` pins the
invoking thread, and so langgraph's thread pool, to one CPU. Run by :mod:`benchmarks.checkpoint`.
"""

from __future__ import annotations

import contextlib
import operator
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, TypedDict

#: The target of the foundation issue: our default mode's persistence overhead, p50 per super-step.
TARGET_OVERHEAD_MS = 1.0

GRAPHS = ("linear3", "fanout2")

#: The label of our saver's rows.
OURS = "RedisCheckpointSaver (ours)"
PATTERNS = ("fresh", "growing")


@dataclass(frozen=True)
class Mode:
    """One row of the comparison: a saver in one durability mode."""

    label: str
    saver: str  # none | memory | sqlite | sqlite-mem | redis-lib | redis-shallow | redis-fast | redis-ping
    durability: str | None = None
    #: Measured apart, after every other block, against its own baseline: the mode is so slow on
    #: long threads that it would stretch the rounds it shares with the others.
    isolated: bool = False
    #: Each invoke runs with this process's threads pinned to one CPU (see :func:`one_cpu`), and is
    #: compared with the ``none`` invoke pinned the same way in the same round.
    one_cpu: bool = False


def default_modes() -> list[Mode]:
    """Every mode the benchmark compares, baseline first."""
    modes = [
        Mode("none", "none"),
        Mode("InMemorySaver", "memory", "sync"),
        Mode("SqliteSaver file (WAL)", "sqlite", "sync"),
        Mode("SqliteSaver :memory:", "sqlite-mem", "sync"),
    ]
    for durability in ("sync", "async", "exit"):
        modes.append(Mode(f"RedisSaver (library) {durability}", "redis-lib", durability))
    modes.append(Mode("ShallowRedisSaver (library) sync", "redis-shallow", "sync", isolated=True))
    for durability in ("sync", "async", "exit"):
        modes.append(Mode(f"{OURS} {durability}", "redis-fast", durability))
    # The floor for any Redis saver under langgraph's threads: the round trips and nothing else.
    modes.append(Mode("round trips only (PING per save) sync", "redis-ping", "sync"))
    if one_cpu_available():
        # Where the rest of the time goes: the same invokes with no thread hand-off between CPUs.
        modes += [
            Mode("none, one CPU", "none", one_cpu=True),
            Mode("InMemorySaver, one CPU", "memory", "sync", one_cpu=True),
            Mode("SqliteSaver file (WAL), one CPU", "sqlite", "sync", one_cpu=True),
            Mode(f"{OURS} sync, one CPU", "redis-fast", "sync", one_cpu=True),
        ]
    return modes


def one_cpu_available() -> bool:
    """True where this process may pin its threads to one CPU and has more than one to choose from."""
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1


@contextlib.contextmanager
def one_cpu() -> Iterator[int]:
    """Run the calling thread, and every thread it starts meanwhile, on one CPU; restore it after.

    Linux applies the mask to the calling thread only and a new thread inherits its creator's, so
    the thread pool langgraph builds for each ``invoke`` runs on that CPU too, while the Redis
    server, another process, keeps every CPU. This takes the cost of waking a thread on another
    CPU out of every hand-off between the graph's thread and the pool's.
    """
    allowed = os.sched_getaffinity(0)
    cpu = min(allowed)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, allowed)


# --------------------------------------------------------------------------------------------
# Graphs


class BenchState(TypedDict):
    """State of the benchmark graphs: a counter and a log that grows by one entry per node."""

    steps: Annotated[int, operator.add]
    log: Annotated[list[str], operator.add]


def _node(name: str) -> Callable[[BenchState], dict]:
    def node(state: BenchState) -> dict:
        return {"steps": 1, "log": [name]}

    node.__name__ = name
    return node


def build_graph(name: str):
    """The uncompiled benchmark graph ``linear3`` or ``fanout2``."""
    from langgraph.graph import END, START, StateGraph

    builder = StateGraph(BenchState)
    if name == "linear3":
        builder.add_sequence([(n, _node(n)) for n in "abc"])
        builder.add_edge(START, "a")
        builder.add_edge("c", END)
    elif name == "fanout2":
        for n in "abcd":
            builder.add_node(n, _node(n))
        builder.add_edge(START, "a")
        builder.add_edge("a", "b")
        builder.add_edge("a", "c")
        builder.add_edge(["b", "c"], "d")
        builder.add_edge("d", END)
    else:
        raise ValueError(f"unknown benchmark graph {name!r}; choose from {', '.join(GRAPHS)}")
    return builder


def super_steps(name: str) -> int:
    """Super-steps of one invoke: checkpoints written by a ``sync`` invoke on a new thread, minus one."""
    from langgraph.checkpoint.memory import InMemorySaver

    saver = InMemorySaver()
    graph = build_graph(name).compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "count"}}
    graph.invoke({"log": []}, config, durability="sync")
    return len(list(saver.list(config))) - 1


def chat_builder():
    """A one-node conversation: ``reply`` answers with an AIMessage that counts the messages so far."""
    from langchain_core.messages import AIMessage
    from langgraph.graph import END, START, MessagesState, StateGraph

    def reply(state: MessagesState) -> dict:
        return {"messages": [AIMessage(content=f"answer {len(state['messages'])}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder
