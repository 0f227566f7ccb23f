from typing import TypedDict

from langgraph.graph import END, START, StateGraph

from tests.conftest import make_config
from xmrt.redis.persistence import make_checkpointer, redis_graph


class S(TypedDict, total=False):
    n: int
    seen_step: int


def _builder(check):
    b = StateGraph(S)
    b.add_node("first", lambda s: {"n": 1})
    b.add_node("second", check)
    b.add_edge(START, "first")
    b.add_edge("first", "second")
    b.add_edge("second", END)
    return b


def test_redis_graph_persists_each_step_before_the_next_by_default(config):
    fresh_reader = make_checkpointer(config)  # another saver: it sees only what is in Redis

    def second(state, config):
        latest = fresh_reader.get_tuple({"configurable": {"thread_id": config["configurable"]["thread_id"]}})
        return {"seen_step": latest.metadata["step"]}

    graph = redis_graph(_builder(second), config)
    out = graph.invoke({"n": 0}, {"configurable": {"thread_id": "durable"}})
    assert out["seen_step"] == 1  # the checkpoint after `first` was in Redis when `second` ran


def test_durability_mode_comes_from_the_configuration(redis_server, tmp_path):
    from langgraph._internal._constants import CONFIG_KEY_DURABILITY

    for mode in ("sync", "async", "exit"):
        cfg = make_config(tmp_path / mode, redis_server.port, XMRT_DURABILITY=mode, XMRT_KEY_PREFIX=f"dur-{mode}")
        graph = redis_graph(_builder(lambda s: {"n": 2}), cfg)
        assert graph.config["configurable"][CONFIG_KEY_DURABILITY] == mode
        assert graph.invoke({"n": 0}, {"configurable": {"thread_id": "t"}})["n"] == 2
