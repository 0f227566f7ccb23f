"""Atomicity of every save, by faults injected on the saver's own send path (tests/fault_proxy.py).

The saver talks to a real Redis (AOF on, as the embedded server runs) through a proxy that cuts the
connection between the commands of one save, halfway through a command, or holds a save while the
test kills Redis (SIGKILL) and restarts it from its AOF. After each fault the stored state is read
straight from Redis: nothing is half-written, and the thread resumes from its last complete
checkpoint to the same result as a run without faults.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest
import redis
import redis.asyncio
from langgraph.graph import END, START, StateGraph

from tests.checkpoint_graphs import LogState, _step, assert_consistent
from tests.conftest import free_port
from tests.fault_proxy import FaultProxy, Rule
from xmrt.redis.checkpoint import CheckpointStoreError, RedisCheckpointSaver, client_options, ttl_settings
from xmrt.redis.server import EmbeddedRedis

PREFIX = "faults"
#: b's writes and the checkpoint after b hold this channel (b's edge to c), no other save does.
AFTER_B = (b"branch:to:c",)
#: Of those, only b's writes go to a writes key: b's put_writes and nothing else.
B_WRITES = (b":writes:", b"branch:to:c")
THREAD = {"configurable": {"thread_id": "t"}}
#: The writes of b's task (on the checkpoint of step 1) and of c's (step 2), as saved.
B_TASK_WRITES = [("steps", 1), ("log", ["b"]), ("branch:to:c", None)]
C_TASK_WRITES = [("steps", 1), ("log", ["c"])]


@pytest.fixture
def server(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis", free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def proxy(server):
    proxy = FaultProxy(free_port(), server.port).start()
    yield proxy
    proxy.close()


def _saver(port: int, ttl: bool, *, asyncio_client: bool = False) -> RedisCheckpointSaver:
    """A saver on ``port``; with ``asyncio_client``, only an asyncio client (call it inside the event loop)."""
    ttl_config = ttl_settings(10) if ttl else None
    if asyncio_client:
        aclient = redis.asyncio.Redis(port=port, **client_options(asyncio_client=True))
        return RedisCheckpointSaver(aclient=aclient, key_prefix=PREFIX, ttl=ttl_config)
    return RedisCheckpointSaver(redis.Redis(port=port, **client_options()), key_prefix=PREFIX, ttl=ttl_config)


def _graph(saver, calls: dict, on_b=None):
    """a -> b -> c, counting the runs of b and c in ``calls``; ``on_b`` runs inside b's first run,
    before b's writes and the next checkpoint are saved."""

    def b(state):
        calls["b"] += 1
        if on_b is not None and calls["b"] == 1:
            on_b()
        return {"steps": 1, "log": ["b"]}

    def c(state):
        calls["c"] += 1
        return {"steps": 1, "log": ["c"]}

    builder = StateGraph(LogState)
    builder.add_node("a", _step("a"))
    builder.add_node("b", b)
    builder.add_node("c", c)
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", END)
    return builder.compile(checkpointer=saver)


def _resume_and_check(server: EmbeddedRedis, ttl: bool, calls: dict, *, b_writes_saved: bool,
                      later_saves: bool = False) -> None:
    """Every stored save is whole; a saver without faults finishes the thread like an unbroken run.

    ``b_writes_saved``: whether b's writes (on the checkpoint after a, step 1) must be in Redis, all of
    them, or none. ``later_saves``: only b's writes were struck, so what langgraph saved after them may
    be stored. It saves a task's writes in the background, beside the next checkpoint, and even with
    durability="sync" waits only for the checkpoint before the next step: the checkpoint after b (step
    2) may be stored, and then c may have run, and its writes (on step 2) and the last checkpoint (step
    3) may be stored too, in either order. Without ``later_saves`` the struck saves include the
    checkpoint after b, so only steps -1, 0 and 1 are stored.
    """
    client = server.client()
    stored = assert_consistent(client, PREFIX, ttl=ttl)["t"][""]
    fresh = _saver(server.port, ttl)
    by_step = {t.metadata["step"]: t for t in fresh.list(THREAD)}
    steps = sorted(by_step)
    assert len(steps) == len(stored), (steps, stored)
    assert steps in ([[-1, 0, 1], [-1, 0, 1, 2], [-1, 0, 1, 2, 3]] if later_saves else [[-1, 0, 1]]), steps

    def stored_writes(step: int, node_writes: list) -> bool:
        """Whether the writes of the one task of ``step`` are stored: all of them (True), or none (False)."""
        found = [(c, v) for _, c, v in by_step[step].pending_writes]
        assert found in ([], node_writes), found
        return found == node_writes

    assert stored_writes(1, B_TASK_WRITES) == b_writes_saved
    c_writes_saved = 2 in by_step and stored_writes(2, C_TASK_WRITES)
    last = steps[-1]
    graph = _graph(fresh, calls)
    # next lists the tasks still to run: a task is done once its writes are stored
    assert graph.get_state(THREAD).next == {1: () if b_writes_saved else ("b",),
                                            2: () if c_writes_saved else ("c",), 3: ()}[last]
    before = dict(calls)
    assert graph.invoke(None, THREAD, durability="sync") == {"steps": 3, "log": ["a", "b", "c"]}
    # a node runs again only if neither its writes nor a checkpoint after it were stored
    assert calls["b"] - before["b"] == (0 if b_writes_saved or last >= 2 else 1)
    assert calls["c"] - before["c"] == (0 if c_writes_saved or last == 3 else 1)
    assert [s.metadata["step"] for s in graph.get_state_history(THREAD)] == [3, 2, 1, 0, -1]
    assert len(assert_consistent(client, PREFIX, ttl=ttl)["t"][""]) == 5
    fresh.close()
    client.close()


@pytest.mark.parametrize("after", [0, 1, 2])
def test_a_connection_cut_between_the_commands_of_a_save_writes_nothing(server, proxy, after):
    """With a TTL every save is MULTI, HSET(NX), EXPIRE, EXEC; cut after ``after`` queued commands, always."""
    calls = {"b": 0, "c": 0}
    saver = _saver(proxy.port, ttl=True)
    graph = _graph(saver, calls, on_b=lambda: proxy.arm(Rule(in_multi_after=after, times=None, match=AFTER_B)))
    with pytest.raises(CheckpointStoreError) as err:
        graph.invoke({"log": []}, THREAD, durability="sync")
    assert "'t'" in str(err.value) and "\n" not in str(err.value)
    assert proxy.rule.strikes > 1  # the client retried the transaction, and every attempt was cut
    proxy.disarm()
    _resume_and_check(server, ttl=True, calls=calls, b_writes_saved=False)


def test_a_cut_that_the_retry_rides_out_saves_once(server, proxy):
    calls = {"b": 0, "c": 0}
    saver = _saver(proxy.port, ttl=True)
    graph = _graph(saver, calls, on_b=lambda: proxy.arm(Rule(in_multi_after=1, times=1, match=B_WRITES)))
    assert graph.invoke({"log": []}, THREAD, durability="sync") == {"steps": 3, "log": ["a", "b", "c"]}
    assert proxy.rule.strikes == 1 and calls["b"] == 1
    client = server.client()
    assert len(assert_consistent(client, PREFIX, ttl=True)["t"][""]) == 5
    writes = [k for k in client.scan_iter(match=f"{PREFIX}:*:writes:*")]
    assert all(len(client.hkeys(k)) == 1 for k in writes)  # each task's writes once: the retry added nothing


def test_a_command_cut_halfway_is_never_run(server, proxy):
    """Without a TTL each save is one command (HSET or HSETNX); half of it reaches Redis, then the cut."""
    calls = {"b": 0, "c": 0}
    saver = _saver(proxy.port, ttl=False)
    armed_at = []

    def arm():
        armed_at.append(len(proxy.commands))
        proxy.arm(Rule(partial=frozenset({"HSET", "HSETNX"}), times=None, match=AFTER_B))

    graph = _graph(saver, calls, on_b=arm)
    with pytest.raises(CheckpointStoreError):
        graph.invoke({"log": []}, THREAD, durability="sync")
    assert proxy.rule.strikes > 1
    proxy.disarm()
    after_b = [c for c in proxy.commands[armed_at[0]:] if any(AFTER_B[0] in arg for arg in c)]
    assert after_b == []  # neither b's writes nor the checkpoint after b was ever sent in full
    _resume_and_check(server, ttl=False, calls=calls, b_writes_saved=False)


def _wait_for_aof_write(server: EmbeddedRedis) -> None:
    """Until Redis has written every command it ran to its AOF (the OS has it: a SIGKILL keeps it).

    With ``appendfsync everysec`` Redis normally writes the AOF before sending replies, but while a
    background fsync is running it postpones that write (up to 2 s) and replies all the same: killed
    then, it loses transactions it acknowledged (each one whole). That is the durability everysec
    trades away, not atomicity, so the test waits it out.
    """
    client = server.client()
    deadline = time.monotonic() + 10
    while (unwritten := client.info("persistence")["aof_buffer_length"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert unwritten == 0, f"Redis kept {unwritten} bytes of its AOF unwritten for 10 s"
    client.close()


@pytest.mark.parametrize("point", ["before_exec", "after_exec"])
def test_redis_killed_mid_save_restarts_from_its_aof_with_whole_saves_only(server, proxy, point):
    """Hold b's first save at ``point`` (its EXEC not sent / sent but unanswered), SIGKILL Redis, restart it."""
    calls = {"b": 0, "c": 0}
    saver = _saver(proxy.port, ttl=True)
    rule = Rule(in_multi_after=2, hold=True, match=B_WRITES) if point == "before_exec" else \
        Rule(after_exec=True, hold=True, match=B_WRITES)
    graph = _graph(saver, calls, on_b=lambda: proxy.arm(rule))
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = graph.invoke({"log": []}, THREAD, durability="sync")
        except Exception as exc:  # noqa: BLE001 - examined below
            outcome["error"] = exc

    runner = threading.Thread(target=run)
    runner.start()
    assert proxy.struck.wait(timeout=60), "the save never reached the proxy (or Redis never answered its EXEC)"
    if point == "after_exec":
        assert proxy.exec_reply.startswith(b"*2\r\n"), proxy.exec_reply  # EXEC ran both commands
        _wait_for_aof_write(server)
    pid = server.pid()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while server.is_running() and time.monotonic() < deadline:
        time.sleep(0.02)
    proxy.release()
    runner.join(timeout=60)
    assert isinstance(outcome.get("error"), CheckpointStoreError), outcome
    server.start()  # the same directory: the AOF holds every save Redis ran
    # Before EXEC the transaction never ran; after it, Redis ran it whole and its AOF kept it.
    _resume_and_check(server, ttl=True, calls=calls, b_writes_saved=point == "after_exec", later_saves=True)


def test_the_async_path_is_just_as_atomic(server, proxy):
    calls = {"b": 0, "c": 0}

    async def run():
        saver = _saver(proxy.port, ttl=True, asyncio_client=True)
        graph = _graph(saver, calls, on_b=lambda: proxy.arm(Rule(in_multi_after=1, times=None, match=AFTER_B)))
        with pytest.raises(CheckpointStoreError):
            await graph.ainvoke({"log": []}, THREAD, durability="sync")
        await saver.aclose()

    asyncio.run(run())
    assert proxy.rule.strikes > 1
    proxy.disarm()
    _resume_and_check(server, ttl=True, calls=calls, b_writes_saved=False)


def test_a_run_whose_first_save_failed_is_still_registered_for_delete_for_runs(server, proxy):
    from langgraph.checkpoint.base import empty_checkpoint

    saver = _saver(proxy.port, ttl=False)
    config = {"configurable": {"thread_id": "r", "checkpoint_ns": "", "run_id": "run-1"}}
    proxy.arm(Rule(in_multi_after=0, times=None, match=(b"checkpoint_run",)))  # the run's first save
    with pytest.raises(CheckpointStoreError):
        saver.put(config, empty_checkpoint(), {"source": "input", "step": -1}, {})
    proxy.disarm()
    stored = saver.put(config, empty_checkpoint(), {"source": "input", "step": -1}, {})
    saver.put({"configurable": {**config["configurable"], **stored["configurable"]}}, empty_checkpoint(),
              {"source": "loop", "step": 0}, {})
    client = server.client()
    assert client.smembers(f"{PREFIX}:checkpoint_run:{{run-1}}") == {b"r"}
    assert len(list(saver.list({"configurable": {"thread_id": "r"}}))) == 2
    saver.delete_for_runs(["run-1"])
    assert list(saver.list({"configurable": {"thread_id": "r"}})) == []
    assert not list(client.scan_iter(match=f"{PREFIX}:*"))
