"""Agentic RAG: tool use within a budget counted in state, prompt injection, malformed calls, memory and code tools.

Real Chroma, MiniLM embeddings and Redis (checkpointer and store); only the chat model is scripted.
"""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, ToolMessage

from graphs import agentic_rag
from graphs.context import AgenticRagContext
from nodes.agentic_rag import route_after_tools, route_agent
from nodes.models import scripted_model
from tests.reasoning_corpus import DOCS, INJECTION, ScriptedToolChat, call, fill, ingest, local_llm  # noqa: F401
from xmrt.eliza.memory import AgentMemory
from xmrt.kb.index import KnowledgeIndex
from xmrt.redis.persistence import redis_graph


@pytest.fixture
def kb(config):
    collection = fill(config)
    index = KnowledgeIndex(config, collection)
    try:
        index.upsert(["sig-deposit"], ["Ledger.deposit: def deposit(self, amount: int) -> int"],
                     [{"source": "src/ledger.py", "start_line": 2, "kind": "signature", "symbol": "Ledger.deposit",
                       "symbol_kind": "method", "signatures": "def deposit(self, amount: int) -> int"}])
    finally:
        index.close()
    return config, collection


def ctx(kb, **kw) -> AgenticRagContext:
    config, collection = kb
    return AgenticRagContext(collection=collection, **kw)


def tool_messages(messages) -> list[ToolMessage]:
    return [m for m in messages if isinstance(m, ToolMessage)]


def test_module_exports_builder_and_graph_without_checkpointer():
    assert agentic_rag.graph.checkpointer is None and agentic_rag.graph.name == "agentic_rag"
    assert set(agentic_rag.graph.get_input_jsonschema()["properties"]) == {"messages"}
    assert set(agentic_rag.graph.get_output_jsonschema()["properties"]) == {"messages", "final_response", "sources"}
    assert set(agentic_rag.builder.nodes) == {"start_turn", "agent", "tools", "final_answer", "finish"}


def test_routers_are_pure():
    assert route_agent({"agent_outcome": "tools"}) == "tools"
    assert route_agent({"agent_outcome": "answer"}) == "finish"
    assert route_agent({"agent_outcome": "no_reply"}) == "final_answer"
    assert route_after_tools({"tool_calls_used": 2, "tool_budget": 3}) == "agent"
    assert route_after_tools({"tool_calls_used": 3, "tool_budget": 3}) == "final_answer"


def test_searches_the_knowledge_base_then_answers_with_sources(kb):
    model = ScriptedToolChat(replies=[
        AIMessage("", tool_calls=[call("search_knowledge", query="who approves treasury spending", k=2)]),
        "A 3-of-5 multisig of the council approves spending, see docs/treasury.md.",
    ])
    with scripted_model(model):
        out = agentic_rag.graph.invoke({"messages": [("user", "Who approves treasury spending?")]}, context=ctx(kb))
    assert len(model.calls) == 2
    assert set(model.tool_sets[0]) == {"search_knowledge", "search_code_signatures", "list_knowledge_collections",
                                       "search_memories", "save_memory"}
    assert "at most 6 tool calls for this question (left: 6)" in model.calls[0][0].content
    hits = json.loads(tool_messages(out["messages"])[0].content)
    assert hits[0]["source"] == "docs/treasury.md"  # the tool searched the run's collection and config
    # The second call saw the tool result.
    assert any(isinstance(m, ToolMessage) for m in model.calls[1])
    answer = out["final_response"]
    assert answer.startswith("A 3-of-5 multisig of the council approves spending, see docs/treasury.md [1].")
    assert "Sources:\n[1] docs/treasury.md:1" in answer
    assert out["sources"][0]["path"] == "docs/treasury.md" and out["sources"][0]["cited"]


def test_prompt_injection_cannot_push_the_agent_past_its_budget(kb):
    config, collection = kb
    fill(config, collection, {"docs/audit.md": INJECTION})
    # A model that obeys the injected passage: every reply asks for five more searches (and a bogus tool).
    greedy = AIMessage("", tool_calls=[call("search_knowledge", query="treasury") for _ in range(5)]
                       + [call("delete_everything")])
    model = ScriptedToolChat(replies=[greedy])
    graph = redis_graph(agentic_rag.builder, config)
    cfg = {"configurable": {"thread_id": "injection"}}
    with scripted_model(model):
        out = graph.invoke({"messages": [("user", "When is the treasury audit?")]}, cfg,
                           context=ctx(kb, max_tool_calls=4, max_calls_per_step=3, max_attempts=2))
    state = graph.get_state(cfg).values
    assert state["tool_calls_used"] == 4 and state["tool_budget"] == 4
    assert len(tool_messages(state["messages"])) == 4  # 3 + 1: the per-step limit, then the budget
    assert INJECTION[:40] in tool_messages(state["messages"])[0].content  # the passage was read, as data
    # 2 agent steps, then 2 attempts at a tool-less final answer (the greedy replies hold no text).
    assert len(model.calls) == 4
    assert model.tool_sets[2] is None and model.tool_sets[3] is None
    # The budget is spent and the model wrote nothing: the answer quotes what the tools returned.
    assert out["final_response"].startswith("The knowledge base says: “The treasury audit happens every quarter.”")
    assert state["fallbacks"] == ["final_answer: no reply (the tool budget of 4 calls is spent), grounded on the "
                                  "tool results"]


def test_budget_is_capped_to_fit_the_recursion_limit(kb):
    greedy = AIMessage("", tool_calls=[call("search_knowledge", query="treasury")])
    model = ScriptedToolChat(replies=[greedy, greedy, greedy, "The treasury holds 1,200 XMR."])
    with scripted_model(model):
        out = agentic_rag.graph.with_config(recursion_limit=10).invoke(
            {"messages": [("user", "treasury?")]}, context=ctx(kb, max_tool_calls=50))
    assert len(tool_messages(out["messages"])) == 3  # (10 - 4) // 2
    assert out["final_response"].startswith("The treasury holds 1,200 XMR [1].")


def test_malformed_calls_and_errors_fall_back_without_crashing(kb):
    def explode(n, _messages):
        if n == 1:
            raise RuntimeError("provider hiccup")

    model = ScriptedToolChat(on_call=explode, replies=[
        "unused (the first call raises)",
        AIMessage("", invalid_tool_calls=[{"name": "search_knowledge", "args": '{"query": ', "id": "bad",
                                           "error": "bad JSON", "type": "invalid_tool_call"}]),
        AIMessage('{"name": "search_knowledge", "arguments": {"query": '),
        AIMessage("", tool_calls=[call("rm_rf", path="/")]),
    ])
    with scripted_model(model):
        out = agentic_rag.graph.invoke({"messages": [("user", "Who approves treasury spending?")]},
                                       context=ctx(kb, max_attempts=3))
    # 3 agent attempts (error, invalid call, broken JSON), then 3 final attempts (unknown-tool call, no text).
    assert len(model.calls) == 6
    assert tool_messages(out["messages"]) == []
    assert out["final_response"].startswith("I don't know: the tools returned nothing")  # nothing to ground on


def test_code_signature_and_memory_tools(kb):
    config, _ = kb
    graph = redis_graph(agentic_rag.builder, config)
    model = ScriptedToolChat(replies=[
        AIMessage("", tool_calls=[call("search_code_signatures", query="deposit an amount into the ledger", k=3),
                                  call("save_memory", text="Deposits go through Ledger.deposit in src/ledger.py")]),
        "Call Ledger.deposit(amount) in src/ledger.py.",
    ])
    with scripted_model(model):
        out = graph.invoke({"messages": [("user", "How do I deposit into the ledger?")]},
                           {"configurable": {"thread_id": "code"}}, context=ctx(kb, agent_id="agentic-test"))
    sigs = json.loads(tool_messages(out["messages"])[0].content)
    assert sigs[0]["symbol"] == "Ledger.deposit" and sigs[0]["source"] == "src/ledger.py"
    assert tool_messages(out["messages"])[1].content.startswith("saved memory")
    memories = AgentMemory(config, store=graph.store).list("agentic-test")
    assert [m.text for m in memories] == ["Deposits go through Ledger.deposit in src/ledger.py"]
    assert out["sources"][0]["path"] == "src/ledger.py" and out["sources"][0]["cited"]


def test_each_turn_gets_a_fresh_budget_and_text_only_history(kb):
    config, _ = kb
    graph = redis_graph(agentic_rag.builder, config)
    cfg = {"configurable": {"thread_id": "turns"}}
    model = ScriptedToolChat(replies=[
        AIMessage("", tool_calls=[call("search_knowledge", query="treasury")]),
        AIMessage("", tool_calls=[call("search_knowledge", query="treasury spending")]),
        "It holds 1,200 XMR.",
        AIMessage("", tool_calls=[call("search_knowledge", query="voting period")]),
        "Seven days.",
    ])
    with scripted_model(model):
        graph.invoke({"messages": [("user", "How much is in the treasury?")]}, cfg, context=ctx(kb, max_tool_calls=2))
        out = graph.invoke({"messages": [("user", "How long is voting?")]}, cfg, context=ctx(kb, max_tool_calls=2))
    state = graph.get_state(cfg).values
    assert state["tool_calls_used"] == 1 and out["final_response"].startswith("Seven days [1].")
    # The first turn used its whole budget (2), then answered from the gathered results.
    assert [m.type for m in model.calls[3]] == ["system", "human", "ai", "human"]  # earlier turn as text only
    assert model.calls[3][2].content.startswith("It holds 1,200 XMR [1].")  # the grounded earlier answer
    assert out["sources"][0]["path"] == "docs/governance.md"


def test_zero_budget_answers_without_tools(kb):
    model = ScriptedToolChat(replies=["I answer directly."])
    with scripted_model(model):
        out = agentic_rag.graph.invoke({"messages": [("user", "hi")]}, context=ctx(kb, max_tool_calls=0))
    # No tools, so no evidence: an unverifiable reply is not shown (nodes.grounding).
    assert model.tool_sets == [None] and out["final_response"].startswith("I don't know")
    assert out["sources"] == []


def test_first_tool_is_forced_on_the_first_step_only(kb):
    model = ScriptedToolChat(replies=[
        AIMessage("", tool_calls=[call("search_knowledge", query="voting period")]),
        "Seven days.",
    ])
    with scripted_model(model):
        out = agentic_rag.graph.invoke({"messages": [("user", "How long is voting?")]},
                                       context=ctx(kb, first_tool="search_knowledge"))
    assert model.tool_choices == ["search_knowledge", None]
    assert out["sources"][0]["path"] == "docs/governance.md"


# ------------------------------------------------------------------------------------ real local model (slow)
@pytest.mark.slow
@pytest.mark.usefixtures("local_llm")
def test_real_local_model_calls_a_tool_and_answers_within_budget(config, tmp_path):
    """SmolLM2 with prompted tool calls on an ingested corpus: structure, not wording."""
    collection = ingest(config, tmp_path / "corpus")
    graph = redis_graph(agentic_rag.builder, config)
    cfg = {"configurable": {"thread_id": "slow-agent"}}
    out = graph.invoke({"messages": [("user", "How much XMR does the treasury hold?")]}, cfg, context=AgenticRagContext(
        collection=collection, max_new_tokens=48, max_tool_calls=2, tools=("search_knowledge",),
        first_tool="search_knowledge"))
    state = graph.get_state(cfg).values
    results = tool_messages(state["messages"])
    assert 1 <= len(results) <= 2 and state["tool_calls_used"] <= 2
    assert results[0].name == "search_knowledge"
    assert all(h["source"] in DOCS for h in json.loads(results[0].content))
    assert out["final_response"].strip()
    assert out["sources"] and all(s["path"] in DOCS for s in out["sources"])
