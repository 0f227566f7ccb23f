"""Small graphs that exercise a checkpointer: shared by the saver tests and the legacy-fixture generator."""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt


class LogState(TypedDict):
    steps: Annotated[int, operator.add]
    log: Annotated[list[str], operator.add]


def _step(name):
    def node(state: LogState) -> dict:
        return {"steps": 1, "log": [name]}

    return node


def linear_graph(checkpointer, names="abc"):
    builder = StateGraph(LogState)
    for n in names:
        builder.add_node(n, _step(n))
    builder.add_edge(START, names[0])
    for a, b in zip(names, names[1:], strict=False):
        builder.add_edge(a, b)
    builder.add_edge(names[-1], END)
    return builder.compile(checkpointer=checkpointer)


def interrupt_graph(checkpointer):
    def ask(state: LogState) -> dict:
        answer = interrupt({"question": "approve?", "seen": list(state["log"])})
        return {"steps": 1, "log": [f"answer:{answer}"]}

    builder = StateGraph(LogState)
    builder.add_node("before", _step("before"))
    builder.add_node("ask", ask)
    builder.add_node("after", _step("after"))
    builder.add_edge(START, "before")
    builder.add_edge("before", "ask")
    builder.add_edge("ask", "after")
    builder.add_edge("after", END)
    return builder.compile(checkpointer=checkpointer)


def branching_graph(checkpointer, calls, fail):
    """start -> {ok, flaky} -> join; ``flaky`` raises while ``fail["on"]``.

    ``flaky`` raises only a moment after ``ok`` has returned: langgraph drops the writes of a branch that
    finishes after the run has already failed (its executor refuses the save), which is not the saver's to
    keep; what a test checks is that writes langgraph did hand to the saver survive.
    """
    import threading
    import time

    ok_done = threading.Event()

    def ok(state):
        calls["ok"] += 1
        ok_done.set()
        return {"steps": 1, "log": ["ok"]}

    def flaky(state):
        calls["flaky"] += 1
        if fail["on"]:
            ok_done.wait(10)
            time.sleep(0.05)  # let langgraph hand ok's writes to the saver
            raise RuntimeError("boom")
        return {"steps": 1, "log": ["flaky"]}

    builder = StateGraph(LogState)
    builder.add_node("start", _step("start"))
    builder.add_node("ok", ok)
    builder.add_node("flaky", flaky)
    builder.add_node("join", _step("join"))
    builder.add_edge(START, "start")
    builder.add_edge("start", "ok")
    builder.add_edge("start", "flaky")
    builder.add_edge(["ok", "flaky"], "join")
    builder.add_edge("join", END)
    return builder.compile(checkpointer=checkpointer)


class ChildState(TypedDict):
    log: Annotated[list[str], operator.add]


def parent_with_subgraph(checkpointer):
    def child_ask(state: ChildState):
        return {"log": [f"child:{interrupt('child?')}"]}

    child = StateGraph(ChildState)
    child.add_node("c1", lambda state: {"log": ["c1"]})
    child.add_node("c2", child_ask)
    child.add_edge(START, "c1")
    child.add_edge("c1", "c2")
    child.add_edge("c2", END)
    child = child.compile()

    parent = StateGraph(LogState)
    parent.add_node("p1", _step("p1"))
    parent.add_node("sub", child)  # a subgraph as a node: namespace "sub:<task id>"
    parent.add_node("p2", _step("p2"))
    parent.add_edge(START, "p1")
    parent.add_edge("p1", "sub")
    parent.add_edge("sub", "p2")
    parent.add_edge("p2", END)
    return parent.compile(checkpointer=checkpointer)


def chat_graph(checkpointer):
    """One node answering with an AIMessage that counts the messages so far (the checkpoint benchmark's graph)."""
    from benchmarks.checkpoint import chat_builder

    return chat_builder().compile(checkpointer=checkpointer)


def assert_consistent(client, prefix: str, *, ttl: bool | None = None, orphan_writes: bool = False) -> dict:
    """Check what :class:`xmrt.redis.checkpoint.RedisCheckpointSaver` left under ``prefix``, straight from Redis.

    Every namespace's latest pointer names its highest checkpoint, every record decodes, and (unless
    ``orphan_writes``) every writes hash belongs to a saved checkpoint. With ``ttl`` True every key
    expires, with False none does. Returns ``{thread: {ns: [checkpoint ids, oldest first]}}``.
    """
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    from xmrt.redis.checkpoint.format import _decode_record, _Keys

    keys = _Keys(prefix)
    serde = JsonPlusSerializer()
    threads: dict[str, dict[str, list[str]]] = {}
    saved = set()
    all_keys = [k.decode() for k in client.scan_iter(match=f"{prefix}:checkpoint*", count=1000)]
    for key in all_keys:
        thread = keys.thread_of(key)
        if thread is None:
            continue
        fields = {f.decode(): v for f, v in client.hgetall(key).items()}
        by_ns: dict[str, list[str]] = {}
        pointers = {}
        for field, value in fields.items():
            parsed = keys.parse_checkpoint_field(field)
            if parsed is not None:
                ns, cid = parsed
                by_ns.setdefault(ns, []).append(cid)
                record = _decode_record(value)
                assert serde.loads_typed(record.checkpoint)["id"] == cid
                serde.loads_typed(record.metadata)
                saved.add(keys.writes(thread, ns, cid))
            elif field.startswith("l:"):
                pointers[field] = value.decode()
        assert set(pointers) == {keys.latest_field(ns) for ns in by_ns}, (key, pointers, by_ns)
        for ns, cids in by_ns.items():
            assert pointers[keys.latest_field(ns)] == max(cids), (key, ns)
            cids.sort()
        threads[thread] = by_ns
    writes = [k for k in all_keys if ":writes:" in k]
    if not orphan_writes:
        assert set(writes) <= saved, set(writes) - saved
    if ttl is not None:
        for key in all_keys:
            assert (client.ttl(key) > 0) if ttl else (client.ttl(key) == -1), (key, client.ttl(key))
    return threads
