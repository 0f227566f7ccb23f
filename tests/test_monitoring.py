"""Performance monitoring: the callback handler records node durations, LLM calls and retrieval in Redis."""


import pytest
import redis
from langgraph.graph import END, START, StateGraph
from redis.backoff import NoBackoff
from redis.retry import Retry
from typing_extensions import TypedDict

from tests.fakes import ScriptedChat
from xmrt.redis.monitoring import PerfMonitor, PerfRecorder, percentile, read_node_latencies, read_perf


class S(TypedDict, total=False):
    x: int
    answer: str


def _graphs(llm):
    def inner_step(state):
        return {"x": state["x"] + 1}

    inner = StateGraph(S)
    inner.add_node("inner_step", inner_step)
    inner.add_edge(START, "inner_step")
    inner_graph = inner.compile()
    inner_graph.name = "inner"

    def retrieve(state):
        return {"x": state["x"] + 1}

    def generate(state):
        return {"answer": llm.invoke("question").content}

    def delegate(state):
        return inner_graph.invoke({"x": state["x"]})

    def fail(state):
        raise RuntimeError("boom")

    outer = StateGraph(S)
    for name, fn in (("retrieve", retrieve), ("generate", generate), ("delegate", delegate)):
        outer.add_node(name, fn)
    outer.add_edge(START, "retrieve")
    outer.add_edge("retrieve", "generate")
    outer.add_edge("generate", "delegate")
    outer.add_edge("delegate", END)
    graph = outer.compile()
    graph.name = "outer"

    broken = StateGraph(S)
    broken.add_node("fail", fail)
    broken.add_edge(START, "fail")
    failing = broken.compile()
    failing.name = "broken"
    return graph, failing


def test_monitor_records_nodes_llm_calls_and_retrieval(config, redis_client):
    llm = ScriptedChat(replies=["an answer"])
    graph, failing = _graphs(llm)
    monitor = PerfMonitor(config, redis_client)
    for _ in range(3):
        assert graph.invoke({"x": 0}, {"callbacks": [monitor]})["answer"] == "an answer"
    perf = read_perf(config, redis_client)
    # Nested graphs are labelled by their own name; routers and the hidden start node are not nodes.
    assert {"node:outer.retrieve", "node:outer.generate", "node:outer.delegate", "node:inner.inner_step",
            "graph:outer", "llm", "retrieval"} <= set(perf)
    assert not any("__start__" in k for k in perf)
    for name in ("node:outer.retrieve", "node:inner.inner_step", "llm", "retrieval", "graph:outer"):
        stats = perf[name]
        assert stats["count"] == 3 and stats["errors"] == 0 and stats["window"] == 3
        assert 0 <= stats["p50_ms"] <= stats["p95_ms"] and stats["mean_ms"] >= 0
    # The parent's time includes its child's.
    assert perf["node:outer.delegate"]["total_ms"] >= perf["node:inner.inner_step"]["total_ms"]
    samples = redis_client.lrange(f"{config.key_prefix}:perf:samples:node:outer.generate", 0, -1)
    assert len(samples) == 3
    # A failing node is recorded as an error; the exception still reaches the caller.
    with pytest.raises(RuntimeError, match="boom"):
        failing.invoke({"x": 0}, {"callbacks": [monitor]})
    assert read_perf(config, redis_client)["node:broken.fail"]["errors"] == 1

    latencies = read_node_latencies(config, redis_client)
    assert latencies["nodes"]["outer.generate"]["count"] == 3 and latencies["llm"]["count"] == 3
    assert latencies["retrieval"]["count"] == 3 and "outer" in latencies["graphs"]


def test_recorder_batches_caps_the_window_and_keeps_exact_counts(config, redis_client):
    recorder = PerfRecorder(config, redis_client, window=5)
    for ms in range(1, 13):
        recorder.add("node:x.y", float(ms))
    assert recorder.flush() == 12 and recorder.flush() == 0
    recorder.add("node:x.y", 1.0, error=True)
    recorder.flush()
    assert redis_client.hget(f"{config.key_prefix}:perf:stats", "node:x.y|count") == b"13"
    stats = read_perf(config, redis_client)["node:x.y"]  # p50 over the window: the last 5 samples (9..12, 1)
    assert stats["count"] == 13 and stats["total_ms"] == sum(range(1, 13)) + 1 and stats["window"] == 5
    assert stats["errors"] == 1 and stats["p50_ms"] == 10.0 and stats["last_ms"] == 1.0
    assert percentile([1, 2, 3, 4], 0.5) == 2.5 and percentile([], 0.5) is None


def test_monitor_never_breaks_a_run_when_redis_is_down(config):
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    llm = ScriptedChat(replies=["fine"])
    graph, _ = _graphs(llm)
    monitor = PerfMonitor(config, dead)
    assert graph.invoke({"x": 0}, {"callbacks": [monitor]})["answer"] == "fine"
    assert monitor.recorder._buffer == []  # the batch was dropped, with a warning


def test_orchestrator_does_not_add_a_second_monitor(app_config, redis_client):
    from graphs.context import OrchestratorContext
    from graphs.orchestrator import builder
    from xmrt.redis.persistence import redis_graph

    monitor = PerfMonitor(app_config, redis_client)
    request = {"type": "proposal", "id": "m1", "title": "Fund monitoring", "criteria": {"alignment": 0.9}}
    out = redis_graph(builder).invoke({"request": request}, {"configurable": {"thread_id": "mon"},
                                                             "callbacks": [monitor]},
                                      context=OrchestratorContext(use_llm=False, agent_id="mon"))
    assert out["results"][0]["ok"]
    perf = read_perf(app_config, redis_client)
    assert perf["node:eliza.decide"]["count"] == 1  # once, not twice
    assert perf["node:classify"]["count"] == 1  # an unnamed root graph ("LangGraph") labels nodes by name only
