import json
import time

import pytest
from langchain_core.messages import AIMessage, ToolCall
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from xmrt.eliza.memory import AgentMemory, agent_label
from xmrt.errors import UserError

EDGE_LABELS = ["a", "Z", "7", ":", "-", "@", ".", "a b", "user:42", "x-y", "me@example.com", "ünïcødé 日本語 🚀",
               "is", "the", "{*}|()", "ab", "abc", "*", "%"]


@pytest.fixture
def memory(config):
    from xmrt.redis.persistence import make_store

    return AgentMemory(config, store=make_store(config))


def test_agent_ids_map_to_distinct_labels_the_store_accepts():
    labels = [agent_label(a) for a in {*EDGE_LABELS, "a.b", "a%2Eb", "%2E", "%"}]
    assert len(set(labels)) == len(labels)
    assert all("." not in label and label for label in labels)


def test_memories_are_owned_by_the_local_user_unless_a_tenant_is_named(memory, config):
    from xmrt.policy import Principal

    memory.remember("eliza", "local secret", key="s")
    alice = AgentMemory(config, store=memory.store, principal=Principal("alice", remote=True, tenant="alice"))
    alice.remember("eliza", "alice secret", key="s")
    assert memory.recall("eliza", "s").text == "local secret"
    assert alice.recall("eliza", "s").text == "alice secret"
    assert [m.text for m in alice.search("eliza", "secret")] == ["alice secret"]
    assert memory.store.get(("local", "memories", "eliza"), "s") is not None
    assert memory.store.get(("alice", "memories", "eliza"), "s") is not None


def test_namespace_edge_cases_round_trip_without_leaking(memory):
    for label in EDGE_LABELS:
        memory.remember(label, f"the secret of agent {label}", key="secret")
        memory.remember(label, "the XMRT treasury holds 1200 XMR", key=f"treasury:{label}")
    for label in EDGE_LABELS:
        got = memory.recall(label, "secret")
        assert got is not None and got.text == f"the secret of agent {label}", label
        listed = memory.list(label)
        assert {m.key for m in listed} == {"secret", f"treasury:{label}"}, label
        found = memory.search(label, "how big is the treasury?", limit=5)
        assert [m.key for m in found][0] == f"treasury:{label}", label
        assert all(m.key in {"secret", f"treasury:{label}"} for m in found), label


def test_set_get_overwrite_delete(memory):
    key = memory.remember("eliza", "first version", key="k")
    assert key == "k"
    memory.remember("eliza", "second version", key="k", data={"source": "test"})
    got = memory.recall("eliza", "k")
    assert got.text == "second version" and got.data == {"source": "test"}
    assert len(memory.list("eliza")) == 1
    assert memory.forget("eliza", "k") is True
    assert memory.recall("eliza", "k") is None
    assert memory.forget("eliza", "k") is False


def test_semantic_search_ranks_by_meaning(memory):
    memory.remember("eliza", "Proposal 12 asked for 50 XMR to fund a mining pool audit", key="p12")
    memory.remember("eliza", "The community prefers short weekly governance calls", key="calls")
    memory.remember("eliza", "Alice's favourite colour is green", key="alice")
    found = memory.search("eliza", "which proposal wanted money for a security review?", limit=3)
    assert found[0].key == "p12"
    assert found[0].score > found[-1].score


def test_memory_ttl_expires(memory):
    memory.remember("eliza", "this memory expires quickly", key="short", ttl_minutes=1 / 60)
    memory.remember("eliza", "this memory stays", key="long")
    assert memory.recall("eliza", "short") is not None
    deadline = time.time() + 10
    while memory.recall("eliza", "short") is not None and time.time() < deadline:
        time.sleep(0.3)
    assert memory.recall("eliza", "short") is None
    assert memory.recall("eliza", "long") is not None


def test_agent_state_is_saved_in_the_store(memory):
    memory.save_state("agent 1", {"cycle": 3, "weights": {"alignment": 0.4}})
    item = memory.store.get(("local", "agentstate", "agent 1"), "state")
    assert item.value["state"] == {"cycle": 3, "weights": {"alignment": 0.4}}


def test_bad_input_is_rejected_and_nothing_is_lost(memory):
    memory.remember("eliza", "keep me", key="keep")
    for bad in (lambda: memory.remember("eliza", "  "), lambda: memory.remember("", "text"),
                lambda: memory.remember("eliza", "x", data={"obj": object()}), lambda: memory.search("eliza", ""),
                lambda: memory.save_state("eliza", ["not", "a", "dict"])):
        with pytest.raises(UserError):
            bad()
    assert memory.recall("eliza", "keep").text == "keep me"


def test_memory_tools_inside_a_graph_use_the_graph_store(config):
    from tools.memory import MEMORY_TOOLS
    from xmrt.redis.persistence import make_store

    store = make_store(config)
    script = iter([
        [ToolCall(name="save_memory", args={"text": "The DAO voted to fund node operators", "key": "vote"}, id="1")],
        [ToolCall(name="search_memories", args={"query": "what did the DAO vote for?"}, id="2")],
        [ToolCall(name="get_memory", args={"key": "vote"}, id="3"), ToolCall(name="list_memories", args={}, id="4")],
        [ToolCall(name="forget_memory", args={"key": "vote"}, id="5")],
        [ToolCall(name="get_memory", args={"key": "vote"}, id="6")],
    ])

    def agent(state):
        return {"messages": [AIMessage("", tool_calls=next(script))]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode(MEMORY_TOOLS))
    builder.add_edge(START, "agent")
    builder.add_edge("agent", "tools")
    builder.add_edge("tools", END)
    graph = builder.compile(store=store)
    cfg = {"configurable": {"agent_id": "tool-agent"}}
    out = graph.invoke({"messages": [("user", "remember")]}, cfg)
    assert out["messages"][-1].content == "saved memory vote"
    out = graph.invoke({"messages": [("user", "search")]}, cfg)
    hits = json.loads(out["messages"][-1].content)
    assert hits[0]["key"] == "vote" and "node operators" in hits[0]["text"]
    out = graph.invoke({"messages": [("user", "inspect")]}, cfg)
    results = [m.content for m in out["messages"][-2:]]
    assert json.loads(results[0])["key"] == "vote"
    assert [m["key"] for m in json.loads(results[1])] == ["vote"]
    assert graph.invoke({"messages": [("user", "forget")]}, cfg)["messages"][-1].content == "forgot vote"
    assert graph.invoke({"messages": [("user", "check")]}, cfg)["messages"][-1].content == "not found: vote"
    # The memory was written under the agent id from the run's configuration, in the graph's store.
    assert AgentMemory(config, store=store).search("tool-agent", "node operators") == []
