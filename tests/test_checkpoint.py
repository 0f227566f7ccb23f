"""FastRedisSaver / AsyncFastRedisSaver on the real Redis: langgraph semantics, library compatibility,
key isolation, TTL, fault safety and resume after a killed process."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import operator
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Annotated, TypedDict

import orjson
import pytest
import redis
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.redis import RedisSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Interrupt, Send, interrupt

from tests.conftest import free_port, make_config
from xmrt.checkpoint import (
    AsyncFastRedisSaver,
    CheckpointStoreError,
    ClassCachingSerializer,
    FastRedisSaver,
    async_checkpointer,
    checkpoint_prefixes,
    make_checkpointer,
)
from xmrt.errors import UserError
from xmrt.redis_server import EmbeddedRedis, RedisSetupError, server_binary

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# graphs


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


@pytest.fixture
def saver(config):
    s = make_checkpointer(config)
    yield s
    for index in (s.checkpoints_index, s.checkpoint_writes_index):
        index.delete(drop=True)


def _cfg(thread: str, **extra) -> dict:
    return {"configurable": {"thread_id": thread, **extra}}


# ---------------------------------------------------------------------------------------------
# basics and the factories


def test_factory_builds_fast_saver_under_the_prefix(config, saver, redis_client):
    assert isinstance(saver, FastRedisSaver)
    graph = linear_graph(saver)
    assert graph.invoke({"log": []}, _cfg("t1")) == {"steps": 3, "log": ["a", "b", "c"]}
    keys = {k.decode() for k in redis_client.scan_iter(match=f"{config.key_prefix}:*", count=1000)}
    assert any(k.startswith(f"{config.key_prefix}:checkpoint:t1:") for k in keys)
    assert f"{config.key_prefix}:checkpoint_latest:t1:__empty__" in keys
    assert any(k.startswith(f"{config.key_prefix}:checkpoint_write:t1:") for k in keys)
    info = redis_client.execute_command("FT.INFO", f"{config.key_prefix}:checkpoint")
    assert info[b"index_definition"][b"prefixes"] == [f"{config.key_prefix}:checkpoint:".encode()]


def test_history_matches_the_in_memory_reference(saver):
    from langgraph.checkpoint.memory import InMemorySaver

    ours, ref = linear_graph(saver), linear_graph(InMemorySaver())
    for graph in (ours, ref):
        graph.invoke({"log": []}, _cfg("h"))
        graph.invoke({"log": ["x"]}, _cfg("h"))

    def shape(graph):
        return [
            (s.metadata["source"], s.metadata["step"], s.values, s.next, len(s.tasks))
            for s in graph.get_state_history(_cfg("h"))
        ]

    assert shape(ours) == shape(ref)
    history = list(ours.get_state_history(_cfg("h")))
    assert len(history) == 10
    # parents chain back to the first checkpoint, newest first
    for newer, older in zip(history, history[1:], strict=False):
        assert newer.parent_config["configurable"]["checkpoint_id"] == older.config["configurable"]["checkpoint_id"]
    assert history[-1].parent_config is None
    # limit / before / filter
    assert len(list(ours.get_state_history(_cfg("h"), limit=3))) == 3
    before = history[4].config
    older = list(ours.get_state_history(_cfg("h"), before=before))
    assert [s.config for s in older] == [s.config for s in history[5:]]
    assert len(list(ours.get_state_history(_cfg("h"), before=before, limit=2))) == 2
    inputs = list(ours.get_state_history(_cfg("h"), filter={"source": "input"}))
    assert [s.metadata["source"] for s in inputs] == ["input", "input"]


def test_interrupt_resume_from_a_fresh_saver(config, saver):
    graph = interrupt_graph(saver)
    out = graph.invoke({"log": []}, _cfg("i"))
    assert out["__interrupt__"][0].value == {"question": "approve?", "seen": ["before"]}
    state = graph.get_state(_cfg("i"))
    assert state.next == ("ask",)
    assert state.tasks[0].interrupts[0].value["question"] == "approve?"

    # another saver (no shared cache: what a new process sees) resumes the thread
    other = interrupt_graph(make_checkpointer(config))
    assert other.get_state(_cfg("i")).next == ("ask",)
    final = other.invoke(Command(resume="yes"), _cfg("i"))
    assert final == {"steps": 3, "log": ["before", "answer:yes", "after"]}
    assert graph.get_state(_cfg("i")).next == ()


def _branching_graph(checkpointer, calls, fail):
    def ok(state):
        calls["ok"] += 1
        return {"steps": 1, "log": ["ok"]}

    def flaky(state):
        calls["flaky"] += 1
        if fail["on"]:
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


def test_pending_writes_of_a_failed_parallel_branch_are_kept(saver):
    calls = {"ok": 0, "flaky": 0}
    fail = {"on": True}
    graph = _branching_graph(saver, calls, fail)
    with pytest.raises(RuntimeError, match="boom"):
        graph.invoke({"log": []}, _cfg("p"))
    tup = saver.get_tuple(_cfg("p"))
    assert ["ok"] in [value for _, channel, value in tup.pending_writes if channel == "log"]
    assert any(channel == "__error__" for _, channel, _ in tup.pending_writes)
    # the library's own reader finds the same pending writes in our data
    lib = RedisSaver(redis_client=saver._redis, **checkpoint_prefixes_of(saver))
    lib.setup()
    assert sorted((t, c) for t, c, _ in lib.get_tuple(_cfg("p")).pending_writes) == sorted(
        (t, c) for t, c, _ in tup.pending_writes
    )

    fail["on"] = False
    out = graph.invoke(None, _cfg("p"))
    assert calls == {"ok": 1, "flaky": 2}  # the branch that succeeded was not run again
    assert sorted(out["log"]) == ["flaky", "join", "ok", "start"] and out["steps"] == 4


@pytest.mark.parametrize("durability", ["async", "exit"])
def test_pending_writes_survive_background_saves(saver, durability):
    """Writes saved before their checkpoint (async saves run out of order) are never lost.

    The library flags checkpoints with has_writes=false in put and flips it in put_writes; when
    the writes land first its own reads drop them (most runs, under durability="async").
    """
    lib = RedisSaver(redis_client=saver._redis, **checkpoint_prefixes_of(saver))
    lib.setup()
    for i in range(8):
        calls, fail = {"ok": 0, "flaky": 0}, {"on": True}
        graph = _branching_graph(saver, calls, fail)
        with pytest.raises(RuntimeError):
            graph.invoke({"log": []}, _cfg(f"bg-{durability}-{i}"), durability=durability)
        for reader in (saver, lib):
            writes = reader.get_tuple(_cfg(f"bg-{durability}-{i}")).pending_writes
            assert ["ok"] in [v for _, c, v in writes if c == "log"], (reader, i)
        fail["on"] = False
        graph.invoke(None, _cfg(f"bg-{durability}-{i}"), durability=durability)
        assert calls == {"ok": 1, "flaky": 2}


def checkpoint_prefixes_of(saver) -> dict:
    return {"checkpoint_prefix": saver._checkpoint_prefix, "checkpoint_write_prefix": saver._checkpoint_write_prefix}


class ChildState(TypedDict):
    log: Annotated[list[str], operator.add]


def _parent_with_subgraph(checkpointer):
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


def test_subgraph_namespaces_and_interrupts(saver):
    from langgraph.checkpoint.memory import InMemorySaver

    results = {}
    for name, cp in (("ours", saver), ("reference", InMemorySaver())):
        graph = _parent_with_subgraph(cp)
        out = graph.invoke({"log": []}, _cfg("s"))
        assert out["__interrupt__"][0].value == "child?"
        state = graph.get_state(_cfg("s"), subgraphs=True)
        sub_state = state.tasks[0].state
        ns = sub_state.config["configurable"]["checkpoint_ns"]
        assert ns.startswith("sub:") and sub_state.next == ("c2",)
        sub_history = list(graph.get_state_history(sub_state.config))
        assert all(s.config["configurable"]["checkpoint_ns"] == ns for s in sub_history)
        final = graph.invoke(Command(resume="ok"), _cfg("s"))
        results[name] = (
            sub_state.values,
            [(s.metadata["step"], s.values) for s in sub_history],
            final,
            [(s.metadata["step"], s.values, s.next) for s in graph.get_state_history(_cfg("s"))],
        )
    assert results["ours"] == results["reference"]
    assert "child:ok" in results["ours"][2]["log"]


def test_update_state_and_fork(saver):
    graph = linear_graph(saver)
    graph.invoke({"log": []}, _cfg("u"))
    new_config = graph.update_state(_cfg("u"), {"log": ["edited"], "steps": 10}, as_node="c")
    state = graph.get_state(_cfg("u"))
    assert state.config["configurable"]["checkpoint_id"] == new_config["configurable"]["checkpoint_id"]
    assert state.values == {"steps": 13, "log": ["a", "b", "c", "edited"]}
    assert state.metadata["source"] == "update"

    # fork from the checkpoint after "a" and run the rest again
    after_a = next(s for s in graph.get_state_history(_cfg("u")) if s.next == ("b",))
    forked = graph.invoke(None, after_a.config)
    assert forked == {"steps": 3, "log": ["a", "b", "c"]}
    latest = graph.get_state(_cfg("u"))
    assert latest.values == forked and latest.parent_config is not None


class FanState(TypedDict):
    items: list[int]
    results: Annotated[list[int], operator.add]


def test_send_fan_out_and_durability_modes_agree(saver):
    def split(state: FanState):
        return [Send("square", {"items": [i], "results": []}) for i in state["items"]]

    def square(state: FanState):
        return {"results": [state["items"][0] ** 2]}

    builder = StateGraph(FanState)
    builder.add_node("square", square)
    builder.add_conditional_edges(START, split, ["square"])
    builder.add_edge("square", END)
    graph = builder.compile(checkpointer=saver)
    finals = {}
    for durability in ("sync", "async", "exit"):
        out = graph.invoke({"items": [1, 2, 3], "results": []}, _cfg(f"f-{durability}"), durability=durability)
        finals[durability] = sorted(out["results"])
        assert sorted(graph.get_state(_cfg(f"f-{durability}")).values["results"]) == [1, 4, 9]
    assert finals == {"sync": [1, 4, 9], "async": [1, 4, 9], "exit": [1, 4, 9]}
    sync_steps = [s.metadata["step"] for s in graph.get_state_history(_cfg("f-sync"))]
    async_steps = [s.metadata["step"] for s in graph.get_state_history(_cfg("f-async"))]
    assert sync_steps == async_steps == [1, 0, -1]
    assert len(list(graph.get_state_history(_cfg("f-exit")))) == 1


def test_delete_thread_removes_every_key(config, saver, redis_client):
    graph = interrupt_graph(saver)
    graph.invoke({"log": []}, _cfg("gone"))
    graph.invoke({"log": []}, _cfg("kept"))
    saver.delete_thread("gone")
    assert saver.get_tuple(_cfg("gone")) is None
    assert list(saver.list(_cfg("gone"))) == []
    left = [k.decode() for k in redis_client.scan_iter(match="*gone*", count=1000)]
    assert [k for k in left if config.key_prefix in k or k.startswith("write_keys_zset:gone:")] == []
    assert saver.get_tuple(_cfg("kept")) is not None


# ---------------------------------------------------------------------------------------------
# library compatibility: same documents, readable both ways


@dataclasses.dataclass
class Note:
    text: str
    tags: list[str]


class RichState(TypedDict, total=False):
    messages: list
    blob: dict
    misc: dict


def _rich_checkpoint(cid: str) -> dict:
    return {
        "v": 4,
        "id": cid,
        "ts": "2025-01-01T00:00:00+00:00",
        "channel_values": {
            "messages": [HumanMessage(content="hi", id="m1"), AIMessage(content="hello", id="m2")],
            "misc": {"tuple": (1, 2), "set": {3}, "note": Note("n", ["x"]), "none": None, "u": "ünï"},
            "send": [Send("node", {"k": 1})],
            "interrupt": Interrupt(value={"q": 1}, id="int-1"),
        },
        "channel_versions": {"messages": "00000000000000000000000000000002.0.5", "misc": "3"},
        "versions_seen": {"node": {"messages": "00000000000000000000000000000001.0.1"}},
        "updated_channels": ["messages"],
    }


def _stored(client, key) -> dict:
    doc = orjson.loads(client.execute_command("JSON.GET", key))
    doc.pop("checkpoint_ts")
    doc.pop("has_writes")
    return doc


@pytest.mark.parametrize("with_bytes", [False, True])
def test_documents_equal_the_library_ones(config, saver, redis_client, with_bytes):
    lib = RedisSaver(redis_client=saver._redis, **checkpoint_prefixes_of(saver))
    lib.setup()
    metadata = {"source": "loop", "step": 3, "parents": {}, "run_id": "r1"}
    ids = {}
    for name, s in (("lib", lib), ("fast", saver)):
        cid = str(uuid.uuid4())
        checkpoint = _rich_checkpoint(cid)
        if with_bytes:
            checkpoint["channel_values"]["raw"] = {"data": b"\x00\x01binary"}
        config_in = _cfg(f"doc-{name}", checkpoint_ns="", checkpoint_id="parent-1")
        s.put(config_in, checkpoint, metadata, {})
        ids[name] = cid
    a = _stored(redis_client, saver._make_redis_checkpoint_key("doc-lib", "", ids["lib"]))
    b = _stored(redis_client, saver._make_redis_checkpoint_key("doc-fast", "", ids["fast"]))
    for doc, name in ((a, "lib"), (b, "fast")):
        assert doc.pop("thread_id") == f"doc-{name}"
        assert doc.pop("checkpoint_id") == ids[name]
        assert doc["checkpoint"].pop("id") == ids[name]
    assert a == b
    # each saver reads what the other wrote, to the same values
    for reader in (lib, saver):
        got = {name: reader.get_tuple(_cfg(f"doc-{name}")) for name in ("lib", "fast")}
        va, vb = got["lib"].checkpoint["channel_values"], got["fast"].checkpoint["channel_values"]
        assert va == vb
        assert isinstance(vb["messages"][0], HumanMessage) and vb["messages"][1].content == "hello"
        assert isinstance(vb["send"][0], Send) and vb["misc"]["note"] == Note("n", ["x"])
        assert got["fast"].parent_config["configurable"]["checkpoint_id"] == "parent-1"
        assert got["fast"].metadata == got["lib"].metadata


def test_class_caching_serializer_revives_like_the_library_without_repeating_imports(saver, monkeypatch):
    import importlib

    from langgraph.checkpoint.redis.jsonplus_redis import JsonPlusRedisSerializer

    assert isinstance(saver.serde, ClassCachingSerializer)
    values = dict(_rich_checkpoint("c")["channel_values"])
    library, ours = JsonPlusRedisSerializer(), ClassCachingSerializer()
    # an envelope naming a class that does not exist is refused the same way, every time
    unknown = {"lc": 1, "type": "constructor", "id": ["no_such_pkg", "mod", "Thing"], "kwargs": {}}
    for serializer in (library, ours, ours):
        with pytest.raises(ValueError, match="no_such_pkg"):
            serializer._revive_if_needed(dict(unknown))
    encoded = orjson.loads(library.dumps_typed(values)[1])
    expected = library._revive_if_needed(encoded)
    failed = []  # imports that searched sys.path and found nothing: the cost being removed
    real_import = importlib.import_module

    def counting_import(name, package=None):
        try:
            return real_import(name, package)
        except ImportError:
            failed.append(name)
            raise

    monkeypatch.setattr(importlib, "import_module", counting_import)
    assert library._revive_if_needed(encoded) == expected
    assert library._revive_if_needed(encoded) == expected
    per_read = len(failed) // 2
    assert per_read >= 2 and "langchain.schema.messages" in failed  # one per message, on every read
    failed.clear()
    assert ours._revive_if_needed(encoded) == expected  # first read: the library's lookups, remembered
    assert failed == ["langchain.schema.messages"] * 2  # once per class (HumanMessage, AIMessage)
    assert ours._revive_if_needed(encoded) == expected  # second read: same values, no failed import
    assert len(failed) == 2
    assert isinstance(expected["messages"][1], AIMessage) and expected["misc"]["note"] == Note("n", ["x"])


def test_class_caching_serializer_does_not_remember_a_class_missing_from_an_existing_module(monkeypatch):
    import types

    module = types.ModuleType("xmrt_test_late_module")  # as if still being imported (circular import)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    envelope = {"lc": 1, "type": "constructor", "id": [module.__name__, "Late"], "kwargs": {}}
    ours = ClassCachingSerializer()
    with pytest.raises(ValueError, match="Late"):
        ours._constructor_class(envelope)
    module.Late = Note  # the module finished importing
    assert ours._constructor_class(envelope) is Note
    missing = {"lc": 1, "type": "constructor", "id": ["xmrt_no_such_module", "X"], "kwargs": {}}
    for _ in range(2):  # a module that does not exist is remembered, and refused the same way
        with pytest.raises(ValueError, match="xmrt_no_such_module"):
            ours._constructor_class(missing)
    assert ("xmrt_no_such_module", "X") in ours._classes


def test_library_saver_reads_our_history_and_writes(saver):
    graph = interrupt_graph(saver)
    graph.invoke({"log": []}, _cfg("compat"))
    lib_graph = interrupt_graph(RedisSaver(redis_client=saver._redis, **checkpoint_prefixes_of(saver)))
    lib_graph.checkpointer.setup()
    ours = [(s.config, s.values, s.next) for s in graph.get_state_history(_cfg("compat"))]
    theirs = [(s.config, s.values, s.next) for s in lib_graph.get_state_history(_cfg("compat"))]
    assert ours == theirs
    assert lib_graph.get_state(_cfg("compat")).tasks[0].interrupts[0].value["question"] == "approve?"
    # and the library can finish a thread we started, and we read the result
    lib_graph.invoke(Command(resume="lib"), _cfg("compat"))
    assert graph.get_state(_cfg("compat")).values["log"] == ["before", "answer:lib", "after"]


# ---------------------------------------------------------------------------------------------
# isolation, caching across savers, TTL


def test_two_prefixes_on_one_server_do_not_see_each_other(redis_server, tmp_path):
    one = make_checkpointer(make_config(tmp_path / "a", redis_server.port, XMRT_KEY_PREFIX=f"iso-a-{os.getpid()}"))
    two = make_checkpointer(make_config(tmp_path / "b", redis_server.port, XMRT_KEY_PREFIX=f"iso-b-{os.getpid()}"))
    try:
        g1, g2 = linear_graph(one, "ab"), linear_graph(two, "xyz")
        g1.invoke({"log": []}, _cfg("same-thread"))
        g2.invoke({"log": []}, _cfg("same-thread"))
        assert g1.get_state(_cfg("same-thread")).values["log"] == ["a", "b"]
        assert g2.get_state(_cfg("same-thread")).values["log"] == ["x", "y", "z"]
        assert len(list(one.list(None))) == 4 and len(list(two.list(None))) == 5
        one.delete_thread("same-thread")
        assert one.get_tuple(_cfg("same-thread")) is None
        assert g2.get_state(_cfg("same-thread")).values["log"] == ["x", "y", "z"]
    finally:
        for s in (one, two):
            for index in (s.checkpoints_index, s.checkpoint_writes_index):
                index.delete(drop=True)


def test_latest_cache_sees_other_writers(config, saver):
    other = make_checkpointer(config)
    g_ours, g_other = linear_graph(saver, "ab"), linear_graph(other, "ab")
    g_ours.invoke({"log": []}, _cfg("shared"))
    g_other.invoke({"log": ["o"]}, _cfg("shared"))  # another process advances the thread
    assert g_ours.get_state(_cfg("shared")).values["log"] == ["a", "b", "o", "a", "b"]
    g_ours.invoke({"log": ["p"]}, _cfg("shared"))
    assert g_other.get_state(_cfg("shared")).values["steps"] == 6
    other.delete_thread("shared")
    assert saver.get_tuple(_cfg("shared")) is None


def test_ttl_on_every_key_and_refresh_on_read(config, redis_client):
    s = make_checkpointer(config, ttl_minutes=10)
    try:
        graph = interrupt_graph(s)
        graph.invoke({"log": []}, _cfg("ttl"))
        keys = [k.decode() for k in redis_client.scan_iter(match=f"{config.key_prefix}:*ttl*", count=1000)]
        keys += [k.decode() for k in redis_client.scan_iter(match="write_keys_zset:ttl:*", count=1000)]
        assert len(keys) > 5
        assert all(0 < redis_client.ttl(k) <= 600 for k in keys), {k: redis_client.ttl(k) for k in keys}
        latest = s.get_tuple(_cfg("ttl"))
        key = s._make_redis_checkpoint_key("ttl", "", latest.config["configurable"]["checkpoint_id"])
        redis_client.expire(key, 30)
        s.get_tuple(_cfg("ttl"))
        assert redis_client.ttl(key) > 30  # reading the thread extended it again
        persistent = make_checkpointer(config)  # no TTL: keys stay persistent
        linear_graph(persistent).invoke({"log": []}, _cfg("forever"))
        assert all(redis_client.ttl(k) == -1 for k in redis_client.scan_iter(match=f"{config.key_prefix}:*forever*"))
    finally:
        for index in (s.checkpoints_index, s.checkpoint_writes_index):
            index.delete(drop=True)


# ---------------------------------------------------------------------------------------------
# async saver


def test_async_saver_runs_graphs_and_resumes(config):
    async def scenario():
        async with async_checkpointer(config) as asaver:
            assert isinstance(asaver, AsyncFastRedisSaver)
            graph = interrupt_graph(asaver)
            out = await graph.ainvoke({"log": []}, _cfg("a1"))
            assert out["__interrupt__"][0].value["question"] == "approve?"
        async with async_checkpointer(config) as asaver:  # a new client, as after a restart
            graph = interrupt_graph(asaver)
            final = await graph.ainvoke(Command(resume="async"), _cfg("a1"))
            history = [s async for s in graph.aget_state_history(_cfg("a1"))]
            await asaver.adelete_thread("a1")
            gone = await asaver.aget_tuple(_cfg("a1"))
            for index in (asaver.checkpoints_index, asaver.checkpoint_writes_index):
                await index.delete(drop=True)
        return final, history, gone

    final, history, gone = asyncio.run(scenario())
    assert final == {"steps": 3, "log": ["before", "answer:async", "after"]}
    assert [s.metadata["step"] for s in history] == [3, 2, 1, 0, -1]
    assert gone is None


# ---------------------------------------------------------------------------------------------
# failures: no modules, server stopped mid-run, process killed mid-run


def test_redis_without_modules_fails_with_one_line(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [str(server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        config = make_config(tmp_path, port, REDIS_URL=f"redis://127.0.0.1:{port}/0")
        with pytest.raises(RedisSetupError) as err:
            make_checkpointer(config)
        assert "\n" not in str(err.value) and "RedisJSON and RediSearch" in str(err.value)

        async def open_async():
            async with async_checkpointer(config):
                pass

        with pytest.raises(RedisSetupError) as err:
            asyncio.run(open_async())
        assert "\n" not in str(err.value)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _assert_consistent(client: redis.Redis, prefix: str) -> None:
    """Every pointer names a whole checkpoint; every registered write exists and vice versa."""
    for pointer in client.scan_iter(match=f"{prefix}:checkpoint_latest:*"):
        target = client.get(pointer)
        doc = orjson.loads(client.execute_command("JSON.GET", target))
        assert doc["checkpoint"]["channel_values"] is not None and "metadata" in doc
    writes = {k.decode() for k in client.scan_iter(match=f"{prefix}:checkpoint_write:*")}
    registered = set()
    for zset in client.scan_iter(match="write_keys_zset:*"):
        members = {m.decode() for m in client.zrange(zset, 0, -1)}
        mine = {m for m in members if m.startswith(f"{prefix}:")}
        registered |= mine
    assert writes == registered


def test_redis_stopped_mid_run_fails_clearly_and_resumes(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis", free_port())
    server.start()
    try:
        config = make_config(tmp_path / "data", server.port, XMRT_KEY_PREFIX="fault")
        saver = make_checkpointer(config)
        calls = {"b": 0}

        def b(state):
            calls["b"] += 1
            if calls["b"] == 1:
                server.stop()  # Redis goes away while the run is between super-steps
            return {"steps": 1, "log": ["b"]}

        builder = StateGraph(LogState)
        builder.add_node("a", _step("a"))
        builder.add_node("b", b)
        builder.add_node("c", _step("c"))
        builder.add_edge(START, "a")
        builder.add_edge("a", "b")
        builder.add_edge("b", "c")
        builder.add_edge("c", END)
        graph = builder.compile(checkpointer=saver)
        with pytest.raises(CheckpointStoreError) as err:
            graph.invoke({"log": []}, _cfg("fault"))
        message = str(err.value)
        assert "\n" not in message and f"127.0.0.1:{server.port}" in message and "'fault'" in message
        assert isinstance(err.value, redis.ConnectionError)

        server.start()  # same data directory: AOF brings the saved super-steps back
        client = server.client()
        _assert_consistent(client, "fault")
        resumed = make_checkpointer(config)
        graph = builder.compile(checkpointer=resumed)
        state = graph.get_state(_cfg("fault"))
        assert state.values["log"] == ["a"] and state.next == ("b",)
        final = graph.invoke(None, _cfg("fault"))
        assert final == {"steps": 3, "log": ["a", "b", "c"]}
        assert [s.metadata["step"] for s in graph.get_state_history(_cfg("fault"))] == [3, 2, 1, 0, -1]
        _assert_consistent(client, "fault")
        client.close()
    finally:
        server.stop()


def test_redis_restart_within_the_retry_window_is_ridden_out(tmp_path):
    import threading

    from redis.backoff import ConstantBackoff
    from redis.retry import Retry

    server = EmbeddedRedis(tmp_path / "redis", free_port())
    server.start()
    restarted = threading.Event()
    try:
        client = redis.Redis.from_url(server.url, socket_timeout=5, retry=Retry(ConstantBackoff(0.1), 300))
        saver = FastRedisSaver(redis_client=client, **checkpoint_prefixes("blip"))
        saver.setup()

        def b(state):
            server.stop()
            threading.Thread(target=lambda: (server.start(), restarted.set()), daemon=True).start()
            return {"steps": 1, "log": ["b"]}

        builder = StateGraph(LogState)
        builder.add_node("a", _step("a"))
        builder.add_node("b", b)
        builder.add_node("c", _step("c"))
        builder.add_edge(START, "a")
        builder.add_edge("a", "b")
        builder.add_edge("b", "c")
        builder.add_edge("c", END)
        graph = builder.compile(checkpointer=saver)
        assert graph.invoke({"log": []}, _cfg("blip")) == {"steps": 3, "log": ["a", "b", "c"]}
        assert restarted.is_set()
        assert [s.metadata["step"] for s in graph.get_state_history(_cfg("blip"))] == [3, 2, 1, 0, -1]
        _assert_consistent(server.client(), "blip")
    finally:
        restarted.wait(timeout=30)
        server.stop()


CHILD = textwrap.dedent(
    """
    import json, os, sys, time, operator
    from pathlib import Path
    from typing import Annotated, TypedDict
    from langgraph.graph import END, START, StateGraph
    from xmrt.checkpoint import make_checkpointer
    from xmrt.config import create_config

    class S(TypedDict):
        steps: Annotated[int, operator.add]
        log: Annotated[list[str], operator.add]

    mode, marker = sys.argv[1], Path(sys.argv[2])
    config = create_config({k: v for k, v in os.environ.items() if k.startswith(("XMRT_", "REDIS_"))}, env_file=None)

    def node(name):
        def run(state):
            if name == "c" and mode == "first":
                marker.write_text("c started")
                time.sleep(600)  # killed here, mid-run
            return {"steps": 1, "log": [f"{name}@{os.getpid()}"]}
        return run

    b = StateGraph(S)
    for n in "abcd":
        b.add_node(n, node(n))
    b.add_edge(START, "a"); b.add_edge("a", "b"); b.add_edge("b", "c"); b.add_edge("c", "d"); b.add_edge("d", END)
    graph = b.compile(checkpointer=make_checkpointer(config))
    cfg = {"configurable": {"thread_id": "killed-thread"}}
    # "sync" (redis_graph's default) saves each super-step before the next starts, so once c has
    # started, input, a and b are saved; under "async" the last saves may still be in flight.
    if mode == "first":
        graph.invoke({"log": []}, cfg, durability="sync")
    else:
        before = [s.metadata["step"] for s in graph.get_state_history(cfg)]
        final = graph.invoke(None, cfg, durability="sync")
        after = [s.metadata["step"] for s in graph.get_state_history(cfg)]
        print(json.dumps({"before": before, "final": final, "after": after, "pid": os.getpid()}))
    """
)


def test_resume_after_kill_in_a_new_process(config, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    marker = tmp_path / "marker"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "XMRT_DATA_DIR": str(config.data_dir),
        "XMRT_REDIS_PORT": str(config.embedded_redis_port),
        "XMRT_KEY_PREFIX": config.key_prefix,
    }
    first = subprocess.Popen([sys.executable, str(script), "first", str(marker)], env=env, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the first process never reached node c"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == -signal.SIGKILL

    second = subprocess.run([sys.executable, str(script), "second", str(marker)], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr[-2000:]
    result = json.loads(second.stdout.strip().splitlines()[-1])
    assert result["before"] == [2, 1, 0, -1]  # input, a and b were saved before the kill
    log = result["final"]["log"]
    assert [entry.split("@")[0] for entry in log] == ["a", "b", "c", "d"]
    first_pid = {entry.split("@")[1] for entry in log[:2]}
    assert first_pid == {str(first.pid)}  # a and b ran once, in the killed process
    assert {entry.split("@")[1] for entry in log[2:]} == {str(result["pid"])}
    assert result["after"] == [4, 3, 2, 1, 0, -1]


# ---------------------------------------------------------------------------------------------
# the benchmark


def test_bench_on_an_external_redis_reports_and_cleans_up(redis_server, tmp_path, redis_client):
    from xmrt.bench.checkpoint import Mode, format_report, run_checkpoint_bench, sqlite_available

    config = make_config(tmp_path, redis_server.port, REDIS_URL=redis_server.url, XMRT_KEY_PREFIX="benchtest")
    modes = [Mode("none", "none"), Mode("SqliteSaver file (WAL)", "sqlite", "sync"),
             Mode("RedisSaver (library) sync", "redis-lib", "sync"),
             Mode("FastRedisSaver (ours) sync", "redis-fast", "sync"),
             Mode("round trips only", "redis-ping", "sync")]
    report = run_checkpoint_bench(config, iterations=3, warmup=1, graphs=("linear3",), modes=modes,
                                  conversation_messages=10)
    assert report["super_steps"] == {"linear3": 4}
    rows = {(r["pattern"], r["mode"]): r for r in report["rows"]}
    assert len(rows) == (10 if sqlite_available() else 8)  # SqliteSaver needs langgraph-checkpoint-sqlite
    # the floor makes ours' round trips but the get_tuple (5 put + 4 put_writes) and stores nothing
    assert 9 <= rows[("fresh", "round trips only")]["round_trips_per_invoke"] < 10
    fast, lib = rows[("fresh", "FastRedisSaver (ours) sync")], rows[("fresh", "RedisSaver (library) sync")]
    # 1 get_tuple + 5 put + 4 put_writes (a new pooled connection's handshake can add a packet)
    assert 10 <= fast["round_trips_per_invoke"] < 11
    assert lib["round_trips_per_invoke"] >= 19
    assert 10 <= rows[("growing", "FastRedisSaver (ours) sync")]["round_trips_per_invoke"] < 11
    for row in report["rows"]:
        assert row["invoke_p50_ms"] > 0 and row["invoke_p95_ms"] >= row["invoke_p50_ms"]
        if row["saver"] != "none":
            assert row["overhead_p50_ms"] is not None
            assert (row["ratio_to_sqlite"] is not None) == sqlite_available()
    assert report["target"]["mode"] == "FastRedisSaver (ours) sync" and report["target"]["met"] in (True, False)
    assert report["redis"]["embedded"] is False
    conversation = report["conversation_reads"]
    assert [r["mode"] for r in conversation["rows"]] == [
        "RedisSaver (library)", "FastRedisSaver, library serializer", "FastRedisSaver (ours)"]
    for row in conversation["rows"]:
        assert row["messages"] == 10 and 0 < row["p50_ms"] <= row["p95_ms"] and row["x_ours"] > 0
    text = format_report(report)
    assert "linear3, growing threads" in text and "FastRedisSaver (ours) sync" in text
    assert "get_state of a 10-message conversation thread" in text
    # nothing of the run is left on the shared server
    assert list(redis_client.scan_iter(match="benchtest-bench-*")) == []
    assert list(redis_client.scan_iter(match="write_keys_zset:benchtest-bench-*")) == []
    assert not [i for i in redis_client.execute_command("FT._LIST") if i.startswith(b"benchtest-bench-")]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs a Linux process allowed on two or more CPUs")
def test_bench_one_cpu_pins_the_graph_and_its_pool_then_restores(redis_server, tmp_path):
    import langgraph.graph as lg

    from xmrt.bench.checkpoint import BenchState, Mode, _Runner, one_cpu, run_checkpoint_bench

    allowed = os.sched_getaffinity(0)
    seen: dict[str, set[int]] = {}

    def node(name):
        def run(state):
            seen[name] = os.sched_getaffinity(0)
            return {"log": [name]}
        return run

    builder = lg.StateGraph(BenchState)
    for name in "abc":
        builder.add_node(name, node(name))
    builder.add_edge(lg.START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("a", "c")  # b and c run on langgraph's pool threads
    runner = _Runner(Mode("pinned", "none", one_cpu=True), builder.compile(), "fresh", "t")
    assert runner.invoke() > 0
    assert seen["a"] == seen["b"] == seen["c"] == {min(allowed)}
    assert os.sched_getaffinity(0) == allowed  # restored
    with pytest.raises(RuntimeError), one_cpu():
        raise RuntimeError("boom")
    assert os.sched_getaffinity(0) == allowed  # restored after an error too

    config = make_config(tmp_path, redis_server.port, REDIS_URL=redis_server.url, XMRT_KEY_PREFIX="benchcpu")
    modes = [Mode("FastRedisSaver (ours) sync", "redis-fast", "sync"),
             Mode("FastRedisSaver (ours) sync, one CPU", "redis-fast", "sync", one_cpu=True)]
    report = run_checkpoint_bench(config, iterations=3, warmup=1, graphs=("linear3",), patterns=("fresh",),
                                  modes=modes, conversation_messages=0)
    rows = {r["mode"]: r for r in report["rows"]}
    assert set(rows) == {"none", "none, one CPU", "FastRedisSaver (ours) sync", "FastRedisSaver (ours) sync, one CPU"}
    assert rows["none, one CPU"]["one_cpu"] is True and rows["none, one CPU"]["overhead_p50_ms"] is None
    assert rows["FastRedisSaver (ours) sync, one CPU"]["overhead_p50_ms"] is not None
    # the target is judged on the default (unpinned) rows only; the pinned figure is reported beside it
    assert report["target"]["mode"] == "FastRedisSaver (ours) sync"
    assert report["target"]["overhead_p50_ms_max"] == rows["FastRedisSaver (ours) sync"]["overhead_p50_ms"]
    assert report["one_cpu"]["overhead_p50_ms_max"] == rows["FastRedisSaver (ours) sync, one CPU"]["overhead_p50_ms"]
    assert os.sched_getaffinity(0) == allowed


def test_bench_cli_starts_and_stops_its_own_redis(tmp_path, monkeypatch, capsys):
    import argparse

    from xmrt.cli import COMMAND_MODULES, CommandTree
    from xmrt.commands import bench_checkpoint

    assert "xmrt.commands.bench_checkpoint" in COMMAND_MODULES
    parser = argparse.ArgumentParser(prog="xmrt")
    bench_checkpoint.register(CommandTree(parser))  # only this command: others may be mid-edit
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    for name in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XMRT_DATA_DIR", str(tmp_path / "data"))
    bad = parser.parse_args(["bench", "checkpoint", "--conversation-messages", "-1"])
    with pytest.raises(UserError, match="--conversation-messages"):
        bad._handler(bad)
    args = parser.parse_args(["bench", "checkpoint", "--iterations", "2", "--warmup", "0",
                              "--conversation-messages", "0", "--json"])
    assert args._handler(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["conversation_reads"] is None  # 0 skips it
    assert report["redis"]["embedded"] is True
    modes = {r["mode"] for r in report["rows"]}
    assert {"none", "InMemorySaver", "FastRedisSaver (ours) sync", "FastRedisSaver (ours) async",
            "FastRedisSaver (ours) exit", "RedisSaver (library) sync",
            "ShallowRedisSaver (library) sync (isolated)", "round trips only (PING per save) sync"} <= modes
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        assert {"none, one CPU", "FastRedisSaver (ours) sync, one CPU"} <= modes
        assert report["one_cpu"]["mode"] == "FastRedisSaver (ours) sync, one CPU"
    assert {r["graph"] for r in report["rows"]} == {"linear3", "fanout2"}
    assert {r["pattern"] for r in report["rows"]} == {"fresh", "growing"}
