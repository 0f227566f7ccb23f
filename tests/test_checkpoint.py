"""RedisCheckpointSaver on the real Redis: langgraph semantics against InMemorySaver, its key layout,
isolation, TTL, both flavours (sync and async) in one class, failures, resume after a killed process,
and the benchmark."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Annotated, TypedDict

import pytest
import redis
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Interrupt, Send

from tests.checkpoint_graphs import (
    LogState,
    _step,
    assert_consistent,
    branching_graph,
    interrupt_graph,
    linear_graph,
    parent_with_subgraph,
)
from tests.conftest import free_port, make_config
from xmrt.errors import UserError
from xmrt.redis.checkpoint import (
    CheckpointStoreError,
    RedisCheckpointSaver,
    async_checkpointer,
    make_checkpointer,
)
from xmrt.redis.server import EmbeddedRedis, RedisSetupError, server_binary

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def saver(config):
    s = make_checkpointer(config)
    yield s
    s.close()


def _cfg(thread: str, **extra) -> dict:
    return {"configurable": {"thread_id": thread, **extra}}


def _keys(client, prefix: str) -> list[str]:
    return sorted(k.decode() for k in client.scan_iter(match=f"{prefix}:*", count=1000))


# ---------------------------------------------------------------------------------------------
# basics and the factories


def test_factory_builds_one_saver_under_the_prefix_with_one_hash_tag_per_thread(config, saver, redis_client):
    assert isinstance(saver, RedisCheckpointSaver) and not saver.cluster
    graph = linear_graph(saver)
    assert graph.invoke({"log": []}, _cfg("t1")) == {"steps": 3, "log": ["a", "b", "c"]}
    graph.invoke({"log": []}, _cfg("t{2}"))  # braces in a thread id cannot break the hash tag
    keys = _keys(redis_client, config.key_prefix)
    assert keys and all(k.startswith(f"{config.key_prefix}:checkpoint:") for k in keys)
    assert f"{config.key_prefix}:checkpoint:{{t1}}" in keys
    for tag in ("{t1}", "{t%7B2%7D}"):  # every key of a thread carries its hash tag, first
        mine = [k for k in keys if tag in k]
        assert len(mine) >= 4 and all(k[k.index("{"):k.index("}") + 1] == tag for k in mine)
    assert not list(redis_client.scan_iter(match="write_keys_zset:*t1*"))  # nothing outside the prefix
    assert redis_client.type(f"{config.key_prefix}:checkpoint:{{t1}}") == b"hash"
    threads = assert_consistent(redis_client, config.key_prefix, ttl=False)
    assert {t: {ns: len(ids) for ns, ids in v.items()} for t, v in threads.items()} == {"t1": {"": 5}, "t{2}": {"": 5}}


def test_history_matches_the_in_memory_reference(saver):
    ours, ref = linear_graph(saver), linear_graph(InMemorySaver())
    for graph in (ours, ref):
        graph.invoke({"log": []}, _cfg("h"))
        graph.invoke({"log": ["x"]}, _cfg("h"))

    def shape(graph, **kwargs):
        return [
            (s.metadata["source"], s.metadata["step"], s.values, s.next, len(s.tasks))
            for s in graph.get_state_history(_cfg("h"), **kwargs)
        ]

    assert shape(ours) == shape(ref)
    history = list(ours.get_state_history(_cfg("h")))
    assert len(history) == 10
    # parents chain back to the first checkpoint, newest first
    for newer, older in zip(history, history[1:], strict=False):
        assert newer.parent_config["configurable"]["checkpoint_id"] == older.config["configurable"]["checkpoint_id"]
    assert history[-1].parent_config is None
    # limit / before / filter, as the reference answers them
    assert shape(ours, limit=3) == shape(ref, limit=3) and len(shape(ours, limit=3)) == 3
    before = history[4].config
    older = list(ours.get_state_history(_cfg("h"), before=before))
    assert [s.config for s in older] == [s.config for s in history[5:]]
    assert len(list(ours.get_state_history(_cfg("h"), before=before, limit=2))) == 2
    for flt in ({"source": "input"}, {"step": 2}, {"source": "loop", "step": 1}, {"nope": 1}):
        assert shape(ours, filter=flt) == shape(ref, filter=flt), flt
    inputs = ours.get_state_history(_cfg("h"), filter={"source": "input"})
    assert [s.metadata["source"] for s in inputs] == ["input"] * 2


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


def test_pending_writes_of_a_failed_parallel_branch_are_kept(saver):
    calls = {"ok": 0, "flaky": 0}
    fail = {"on": True}
    graph = branching_graph(saver, calls, fail)
    with pytest.raises(RuntimeError, match="boom"):
        graph.invoke({"log": []}, _cfg("p"))
    tup = saver.get_tuple(_cfg("p"))
    assert ["ok"] in [value for _, channel, value in tup.pending_writes if channel == "log"]
    assert any(channel == "__error__" for _, channel, _ in tup.pending_writes)

    fail["on"] = False
    out = graph.invoke(None, _cfg("p"))
    assert calls == {"ok": 1, "flaky": 2}  # the branch that succeeded was not run again
    assert sorted(out["log"]) == ["flaky", "join", "ok", "start"] and out["steps"] == 4


@pytest.mark.parametrize("durability", ["async", "exit"])
def test_pending_writes_survive_background_saves(config, saver, durability):
    """Writes saved before their checkpoint (async saves run out of order) are never lost."""
    for i in range(8):
        calls, fail = {"ok": 0, "flaky": 0}, {"on": True}
        graph = branching_graph(saver, calls, fail)
        with pytest.raises(RuntimeError):
            graph.invoke({"log": []}, _cfg(f"bg-{durability}-{i}"), durability=durability)
        for reader in (saver, make_checkpointer(config)):  # a new reader has no cache
            writes = reader.get_tuple(_cfg(f"bg-{durability}-{i}")).pending_writes
            assert ["ok"] in [v for _, c, v in writes if c == "log"], (reader, i)
        fail["on"] = False
        graph.invoke(None, _cfg(f"bg-{durability}-{i}"), durability=durability)
        assert calls == {"ok": 1, "flaky": 2}


def test_subgraph_namespaces_and_interrupts(saver):
    results = {}
    for name, cp in (("ours", saver), ("reference", InMemorySaver())):
        graph = parent_with_subgraph(cp)
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
    results: Annotated[list[int], lambda a, b: a + b]


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
    run = {"configurable": {"thread_id": "gone", "run_id": "run-gone"}}
    graph.invoke({"log": []}, run)
    graph.invoke({"log": []}, _cfg("kept"))
    assert redis_client.smembers(f"{config.key_prefix}:checkpoint_run:{{run-gone}}") == {b"gone"}
    saver.delete_thread("gone")
    assert saver.get_tuple(_cfg("gone")) is None
    assert list(saver.list(_cfg("gone"))) == []
    assert [k for k in _keys(redis_client, config.key_prefix) if "gone" in k] == []
    assert saver.get_tuple(_cfg("kept")) is not None


def _racing(saver, name: str, attempts: list, change) -> None:
    """Make ``saver.<name>`` run ``change()`` right after its WATCHed read, on the first attempt only."""
    from xmrt.redis.checkpoint.format import _Watch

    original = getattr(saver, name)

    def racing(*args):
        attempts.append(1)
        inner = original(*args)
        request = next(inner)
        while True:
            results = yield request
            if isinstance(request, _Watch) and len(attempts) == 1:
                change()  # another process saves into the watched thread meanwhile
            try:
                request = inner.send(results)
            except StopIteration as stop:
                return stop.value

    setattr(saver, name, racing)


@pytest.mark.parametrize("operation", ["prune", "delete_thread", "copy_thread"])
def test_operations_on_a_thread_that_changes_under_them_start_again(config, redis_client, operation):
    saver, other = make_checkpointer(config), make_checkpointer(config)
    linear_graph(saver).invoke({"log": []}, _cfg("race"))
    attempts: list = []
    change = lambda: linear_graph(other).invoke({"log": []}, _cfg("race" if operation != "copy_thread" else "dst"))  # noqa: E731
    name = {"prune": "_delete_checkpoints_steps", "delete_thread": "_delete_thread_steps",
            "copy_thread": "_copy_thread_steps"}[operation]
    _racing(saver, name, attempts, change)
    if operation == "prune":
        saver.prune(["race"])
        kept = list(saver.list(_cfg("race")))
        assert len(kept) == 1 and kept[0].checkpoint["channel_values"]["log"] == ["a", "b", "c"] * 2
    elif operation == "delete_thread":
        saver.delete_thread("race")
        assert list(saver.list(_cfg("race"))) == [] and not _keys(redis_client, config.key_prefix)
    else:
        saver.copy_thread("race", "dst")
        assert len(list(saver.list(_cfg("dst")))) == 10  # its own 5 and the 5 copied
        assert saver.get_tuple(_cfg("dst")).checkpoint["channel_values"]["log"] == ["a", "b", "c"]
    assert len(attempts) == 2  # the first attempt's transaction was refused (WATCH), the second ran
    assert_consistent(redis_client, config.key_prefix, ttl=False)


# ---------------------------------------------------------------------------------------------
# values round-trip as the reference saver returns them


@dataclasses.dataclass
class Note:
    text: str
    tags: list[str]


def _rich_values() -> dict:
    return {
        "messages": [HumanMessage(content="hi", id="m1"), AIMessage(content="hello ünï", id="m2")],
        "misc": {"tuple": (1, 2), "set": {3}, "note": Note("n", ["x"]), "none": None, "big": 2**62},
        "send": [Send("node", {"k": 1})],
        "interrupt": Interrupt(value={"q": 1}, id="int-1"),
        "raw": {"data": b"\x00\x01binary"},
    }


def test_values_metadata_and_writes_round_trip_like_the_reference(saver):
    ref = InMemorySaver()
    results = []
    for s in (saver, ref):
        values = _rich_values()
        versions = {k: s.get_next_version(None, None) for k in values}
        cp = {"v": 4, "id": "1f0000000000000000000001", "ts": "2025-01-01T00:00:00+00:00",
              "channel_values": values, "channel_versions": versions,
              "versions_seen": {"node": {"messages": versions["messages"]}}, "updated_channels": ["messages"]}
        meta = {"source": "loop", "step": 3, "parents": {}, "score": 4.5, "tags": ["a"], "nested": {"k": [1]}}
        stored = s.put(_cfg("rich", checkpoint_ns="", checkpoint_id="parent-1", user_key="u"), cp, meta, versions)
        s.put_writes(stored, [("messages", [AIMessage(content="w")]), ("misc", {"t": (1,)})], "task-1", "~path")
        s.put_writes(stored, [("__error__", ValueError("bad")), ("__interrupt__", [Interrupt(value="v")])], "task-2")
        tup = s.get_tuple(_cfg("rich"))
        results.append(tup)
    ours, theirs = results
    assert ours.checkpoint["channel_values"] == theirs.checkpoint["channel_values"]
    assert isinstance(ours.checkpoint["channel_values"]["messages"][1], AIMessage)
    assert ours.checkpoint["channel_values"]["misc"]["note"] == Note("n", ["x"])
    assert ours.metadata == theirs.metadata and ours.metadata["user_key"] == "u"
    assert ours.parent_config["configurable"]["checkpoint_id"] == "parent-1"
    assert [(t, c) for t, c, _ in ours.pending_writes] == [(t, c) for t, c, _ in theirs.pending_writes]
    assert ours.pending_writes[0][2] == theirs.pending_writes[0][2]
    assert repr(ours.pending_writes) == repr(theirs.pending_writes)


# ---------------------------------------------------------------------------------------------
# isolation, caching across savers, TTL


def test_two_prefixes_on_one_server_do_not_see_each_other(redis_server, tmp_path):
    one = make_checkpointer(make_config(tmp_path / "a", redis_server.port, XMRT_KEY_PREFIX=f"iso-a-{os.getpid()}"))
    two = make_checkpointer(make_config(tmp_path / "b", redis_server.port, XMRT_KEY_PREFIX=f"iso-b-{os.getpid()}"))
    g1, g2 = linear_graph(one, "ab"), linear_graph(two, "xyz")
    g1.invoke({"log": []}, _cfg("same-thread"))
    g2.invoke({"log": []}, _cfg("same-thread"))
    assert g1.get_state(_cfg("same-thread")).values["log"] == ["a", "b"]
    assert g2.get_state(_cfg("same-thread")).values["log"] == ["x", "y", "z"]
    assert len(list(one.list(None))) == 4 and len(list(two.list(None))) == 5
    one.delete_thread("same-thread")
    assert one.get_tuple(_cfg("same-thread")) is None
    assert g2.get_state(_cfg("same-thread")).values["log"] == ["x", "y", "z"]


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
    graph = interrupt_graph(s)
    graph.invoke({"log": []}, {"configurable": {"thread_id": "ttl", "run_id": "run-ttl"}})
    keys = _keys(redis_client, config.key_prefix)
    assert len(keys) >= 4 and any(":writes:" in k for k in keys) and any("checkpoint_run" in k for k in keys)
    assert all(0 < redis_client.ttl(k) <= 600 for k in keys), {k: redis_client.ttl(k) for k in keys}
    thread_key = f"{config.key_prefix}:checkpoint:{{ttl}}"
    redis_client.expire(thread_key, 30)
    s.get_tuple(_cfg("ttl"))
    assert redis_client.ttl(thread_key) > 30  # reading the thread extended it again
    persistent = make_checkpointer(config)  # no TTL: keys stay persistent, and reads leave them so
    linear_graph(persistent).invoke({"log": []}, _cfg("forever"))
    persistent.get_tuple(_cfg("forever"))
    assert all(redis_client.ttl(k) == -1 for k in _keys(redis_client, config.key_prefix) if "forever" in k)


# ---------------------------------------------------------------------------------------------
# sync and async in one class


def test_async_saver_runs_graphs_and_resumes(config):
    async def scenario():
        async with async_checkpointer(config) as asaver:
            assert isinstance(asaver, RedisCheckpointSaver)
            graph = interrupt_graph(asaver)
            out = await graph.ainvoke({"log": []}, _cfg("a1"))
            assert out["__interrupt__"][0].value["question"] == "approve?"
        async with async_checkpointer(config) as asaver:  # a new client, as after a restart
            graph = interrupt_graph(asaver)
            final = await graph.ainvoke(Command(resume="async"), _cfg("a1"))
            history = [s async for s in graph.aget_state_history(_cfg("a1"))]
            sync_view = await asyncio.to_thread(asaver.get_tuple, _cfg("a1"))  # its sync methods work too
            await asaver.adelete_thread("a1")
            gone = await asaver.aget_tuple(_cfg("a1"))
        return final, history, sync_view, gone

    final, history, sync_view, gone = asyncio.run(scenario())
    assert final == {"steps": 3, "log": ["before", "answer:async", "after"]}
    assert [s.metadata["step"] for s in history] == [3, 2, 1, 0, -1]
    assert sync_view.checkpoint["channel_values"]["log"] == final["log"]
    assert gone is None


def test_the_sync_factory_saver_also_serves_ainvoke_on_any_event_loop(config):
    from xmrt.redis.persistence import redis_graph

    graph = redis_graph(linear_graph(None).builder, config)  # the graph Python callers get
    out = asyncio.run(graph.ainvoke({"log": []}, _cfg("ainvoke")))  # NotImplementedError before issue 13
    assert out == {"steps": 3, "log": ["a", "b", "c"]}
    again = asyncio.run(graph.ainvoke({"log": ["z"]}, _cfg("ainvoke")))  # a second loop, the same saver
    assert again["log"] == ["a", "b", "c", "z", "a", "b", "c"]
    assert graph.invoke(None, _cfg("ainvoke"))["steps"] == 6  # and the sync path on the same saver
    history = [s.metadata["step"] for s in graph.get_state_history(_cfg("ainvoke"))]
    assert history[0] == 8 and history[-1] == -1
    saver = graph.checkpointer
    assert not hasattr(saver, "_aclients") and saver._aclient is None  # no client is left per event loop


# ---------------------------------------------------------------------------------------------
# failures: no modules, unreachable server, server stopped mid-run, process killed mid-run


def test_the_saver_needs_no_module_and_an_unreachable_server_fails_with_one_line(tmp_path):
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
        assert client.module_list() == [] or all(m[b"name"] not in (b"search", b"ReJSON") for m in client.module_list())
        config = make_config(tmp_path, port, REDIS_URL=f"redis://127.0.0.1:{port}/0", XMRT_KEY_PREFIX="plain")
        saver = make_checkpointer(config)
        graph = interrupt_graph(saver)
        graph.invoke({"log": []}, _cfg("plain"))
        assert graph.invoke(Command(resume="y"), _cfg("plain"))["log"] == ["before", "answer:y", "after"]

        async def run_async():
            async with async_checkpointer(config) as asaver:
                return len([s async for s in asaver.alist(_cfg("plain"))])

        assert asyncio.run(run_async()) == 5
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    dead = make_config(tmp_path, free_port(), REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(RedisSetupError) as err:
        make_checkpointer(dead)
    assert "\n" not in str(err.value) and "Cannot reach Redis" in str(err.value)


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
            # "sync": step 1's checkpoint is stored before b runs (with "async" it races b's stopping Redis)
            graph.invoke({"log": []}, _cfg("fault"), durability="sync")
        message = str(err.value)
        assert "\n" not in message and f"127.0.0.1:{server.port}" in message and "'fault'" in message
        assert isinstance(err.value, redis.ConnectionError)

        server.start()  # same data directory: AOF brings the saved super-steps back
        client = server.client()
        assert len(assert_consistent(client, "fault")["fault"][""]) == 3  # steps -1, 0 and 1: b never finished
        resumed = make_checkpointer(config)
        graph = builder.compile(checkpointer=resumed)
        state = graph.get_state(_cfg("fault"))
        assert state.values["log"] == ["a"] and state.next == ("b",)
        final = graph.invoke(None, _cfg("fault"))
        assert final == {"steps": 3, "log": ["a", "b", "c"]}
        assert [s.metadata["step"] for s in graph.get_state_history(_cfg("fault"))] == [3, 2, 1, 0, -1]
        assert len(assert_consistent(client, "fault")["fault"][""]) == 5
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
        saver = RedisCheckpointSaver(client, key_prefix="blip")

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
        assert restarted.wait(timeout=30)  # the restart thread sets it just after start() returns: no race
        assert [s.metadata["step"] for s in graph.get_state_history(_cfg("blip"))] == [3, 2, 1, 0, -1]
        assert len(assert_consistent(server.client(), "blip")["blip"][""]) == 5
    finally:
        restarted.wait(timeout=30)
        server.stop()


CHILD = textwrap.dedent(
    """
    import json, os, sys, time, operator
    from pathlib import Path
    from typing import Annotated, TypedDict
    from langgraph.graph import END, START, StateGraph
    from xmrt.redis.checkpoint import make_checkpointer
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
    from benchmarks.checkpoint import Mode, format_report, run_checkpoint_bench, sqlite_available

    config = make_config(tmp_path, redis_server.port, REDIS_URL=redis_server.url, XMRT_KEY_PREFIX="benchtest")
    modes = [Mode("none", "none"), Mode("SqliteSaver file (WAL)", "sqlite", "sync"),
             Mode("RedisSaver (library) sync", "redis-lib", "sync"),
             Mode("RedisCheckpointSaver (ours) sync", "redis-fast", "sync"),
             Mode("round trips only", "redis-ping", "sync")]
    report = run_checkpoint_bench(config, iterations=3, warmup=1, graphs=("linear3",), modes=modes,
                                  conversation_messages=10)
    assert report["super_steps"] == {"linear3": 4}
    rows = {(r["pattern"], r["mode"]): r for r in report["rows"]}
    assert len(rows) == (10 if sqlite_available() else 8)  # SqliteSaver needs langgraph-checkpoint-sqlite
    # the floor makes ours' round trips but the get_tuple (5 put + 4 put_writes) and stores nothing
    assert 9 <= rows[("fresh", "round trips only")]["round_trips_per_invoke"] < 10
    fast, lib = rows[("fresh", "RedisCheckpointSaver (ours) sync")], rows[("fresh", "RedisSaver (library) sync")]
    # 1 get_tuple + 5 put + 4 put_writes (a new pooled connection's handshake can add a packet)
    assert 10 <= fast["round_trips_per_invoke"] < 11
    assert lib["round_trips_per_invoke"] >= 19
    assert 10 <= rows[("growing", "RedisCheckpointSaver (ours) sync")]["round_trips_per_invoke"] < 11
    for row in report["rows"]:
        assert row["invoke_p50_ms"] > 0 and row["invoke_p95_ms"] >= row["invoke_p50_ms"]
        if row["saver"] != "none":
            assert row["overhead_p50_ms"] is not None
            assert (row["ratio_to_sqlite"] is not None) == sqlite_available()
    assert report["target"]["mode"] == "RedisCheckpointSaver (ours) sync" and report["target"]["met"] in (True, False)
    assert report["redis"]["embedded"] is False
    conversation = report["conversation_reads"]
    assert [r["mode"] for r in conversation["rows"]] == ["RedisSaver (library)", "RedisCheckpointSaver (ours)"]
    for row in conversation["rows"]:
        assert row["messages"] == 10 and 0 < row["p50_ms"] <= row["p95_ms"] and row["x_ours"] > 0
    text = format_report(report)
    assert "linear3, growing threads" in text and "RedisCheckpointSaver (ours) sync" in text
    assert "get_state of a 10-message conversation thread" in text
    # nothing of the run is left on the shared server
    assert list(redis_client.scan_iter(match="benchtest-bench-*")) == []
    assert list(redis_client.scan_iter(match="write_keys_zset:benchtest-bench-*")) == []
    assert not [i for i in redis_client.execute_command("FT._LIST") if i.startswith(b"benchtest-bench-")]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs a Linux process allowed on two or more CPUs")
def test_bench_one_cpu_pins_the_graph_and_its_pool_then_restores(redis_server, tmp_path):
    import langgraph.graph as lg

    from benchmarks.checkpoint import BenchState, Mode, _Runner, one_cpu, run_checkpoint_bench

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
    modes = [Mode("RedisCheckpointSaver (ours) sync", "redis-fast", "sync"),
             Mode("RedisCheckpointSaver (ours) sync, one CPU", "redis-fast", "sync", one_cpu=True)]
    report = run_checkpoint_bench(config, iterations=3, warmup=1, graphs=("linear3",), patterns=("fresh",),
                                  modes=modes, conversation_messages=0)
    rows = {r["mode"]: r for r in report["rows"]}
    ours, pinned = "RedisCheckpointSaver (ours) sync", "RedisCheckpointSaver (ours) sync, one CPU"
    assert set(rows) == {"none", "none, one CPU", ours, pinned}
    assert rows["none, one CPU"]["one_cpu"] is True and rows["none, one CPU"]["overhead_p50_ms"] is None
    assert rows["RedisCheckpointSaver (ours) sync, one CPU"]["overhead_p50_ms"] is not None
    # the target is judged on the default (unpinned) rows only; the pinned figure is reported beside it
    assert report["target"]["mode"] == "RedisCheckpointSaver (ours) sync"
    assert report["target"]["overhead_p50_ms_max"] == rows["RedisCheckpointSaver (ours) sync"]["overhead_p50_ms"]
    assert report["one_cpu"]["overhead_p50_ms_max"] == rows[pinned]["overhead_p50_ms"]
    assert os.sched_getaffinity(0) == allowed


def test_bench_cli_starts_and_stops_its_own_redis(tmp_path, monkeypatch, capsys):
    import argparse

    from benchmarks.commands import checkpoint as bench_checkpoint
    from xmrt.cli import COMMAND_MODULES, CommandTree

    assert "benchmarks.commands.checkpoint" in COMMAND_MODULES
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
    assert {"none", "InMemorySaver", "RedisCheckpointSaver (ours) sync", "RedisCheckpointSaver (ours) async",
            "RedisCheckpointSaver (ours) exit", "RedisSaver (library) sync",
            "ShallowRedisSaver (library) sync (isolated)", "round trips only (PING per save) sync"} <= modes
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        assert {"none, one CPU", "RedisCheckpointSaver (ours) sync, one CPU"} <= modes
        assert report["one_cpu"]["mode"] == "RedisCheckpointSaver (ours) sync, one CPU"
    assert {r["graph"] for r in report["rows"]} == {"linear3", "fanout2"}
    assert {r["pattern"] for r in report["rows"]} == {"fresh", "growing"}
