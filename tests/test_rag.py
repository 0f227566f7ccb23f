"""RAG graph: routes, citations, declining without relevant passages, history per thread, garbage replies.

Real Redis (checkpointer), real Chroma and MiniLM embeddings; only the chat model is scripted.
"""

from __future__ import annotations

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk

from graphs import rag
from graphs.context import RagContext
from nodes.citations import clean_citations, split_sentences
from nodes.models import scripted_model
from nodes.parsing import parse_steps, parse_text_reply
from nodes.retrieval import relevance_threshold
from tests.fakes import ScriptedChat
from tests.reasoning_corpus import DOCS, fill, ingest, local_llm  # noqa: F401 - fixture
from xmrt.redis.persistence import redis_graph


@pytest.fixture
def kb(config):
    return config, fill(config)


def ctx(kb, **kw) -> RagContext:
    config, collection = kb
    return RagContext(collection=collection, **kw)


def ask(graph, question, context, thread="t"):
    return graph.invoke({"messages": [("user", question)]}, {"configurable": {"thread_id": thread}}, context=context)


# ------------------------------------------------------------------------------------------------ pure helpers
def test_clean_citations_drops_numbers_that_name_no_passage():
    text, cited = clean_citations("Holds 1,200 XMR [1]. Needs a multisig [2, 9]. Invented [7].", [1, 2, 3])
    assert text == "Holds 1,200 XMR [1]. Needs a multisig [2]. Invented."
    assert cited == [1, 2]


def test_relevance_threshold_is_computed_from_the_scores():
    assert relevance_threshold([0.74, 0.31, 0.28], 0.2, 0.5) == pytest.approx(0.37)
    assert relevance_threshold([0.07, 0.05], 0.2, 0.5) == 0.2
    assert relevance_threshold([], 0.2, 0.5) == 0.2


def test_parsers_tolerate_garbage():
    assert parse_steps("Sure!\n1. Find the treasury.\n   It is in docs.\n2) Read it.\n", 5) == [
        "Find the treasury. It is in docs.", "Read it."]
    assert parse_steps('{"steps": ["a step", {"text": "b step"}]}', 5) == ["a step", "b step"]
    assert parse_steps('{"steps": ["a", "b"', 5) is None
    assert parse_steps("Just one sentence. And another.", 5) is None
    assert parse_text_reply('Revised step 2: "The treasury holds 1,200 XMR."') == "The treasury holds 1,200 XMR."
    assert parse_text_reply('{"revised": "x y z"}') == "x y z"
    assert parse_text_reply('{"revised": "x y') is None
    assert parse_text_reply("   ") is None
    assert parse_text_reply("[1] The treasury.") == "[1] The treasury."


def test_parsers_unwrap_code_fences_like_the_tool_call_parser():
    """One fence pattern (xmrt.llm.tools.FENCE) serves both: closed, cut off, or followed by chatter."""
    assert parse_text_reply('```json\n{"revised": "x y z"}\n```') == "x y z"
    assert parse_text_reply('```json\n{"revised": "x y z"}') == "x y z"
    assert parse_text_reply("```\nThe treasury.\n```\nHope this helps!") == "The treasury."
    assert parse_steps("```\n1. Find the treasury.\n2. Read it.", 5) == ["Find the treasury.", "Read it."]
    assert split_sentences("1. One thing [1]. Two things!\n- Three, e.g. 4.5 XMR.") == [
        "One thing.", "Two things!", "Three, e.g. 4.5 XMR."]


# ------------------------------------------------------------------------------------------------------- graph
def test_module_exports_builder_and_graph_without_checkpointer():
    assert rag.graph.checkpointer is None and rag.graph.name == "rag"
    assert set(rag.graph.get_input_jsonschema()["properties"]) == {"messages"}
    assert set(rag.graph.get_output_jsonschema()["properties"]) == {
        "messages", "final_response", "sources", "standalone_question", "grounding"}
    assert set(rag.builder.nodes) == {"start_turn", "reformulate", "retrieve", "generate", "no_answer"}


def test_answers_with_valid_citations_and_source_paths(kb):
    model = ScriptedChat(replies=["The treasury holds 1,200 XMR [1]. Spending needs a multisig [1][7]."])
    with scripted_model(model):
        out = rag.graph.invoke({"messages": [("user", "How much XMR does the treasury hold?")]}, context=ctx(kb))
    assert len(model.calls) == 1  # no history: no reformulation
    system = model.calls[0][0].content
    assert "[1] (docs/treasury.md:1)" in system and "1,200 XMR" in system
    answer = out["final_response"]
    assert answer.startswith("The treasury holds 1,200 XMR [1]. Spending needs a multisig [1].")
    assert "[7]" not in answer
    assert answer.endswith("Sources:\n[1] docs/treasury.md:1")
    assert out["sources"][0]["path"] == "docs/treasury.md" and out["sources"][0]["cited"] is True
    assert out["sources"][0]["similarity"] > 0.5
    assert out["standalone_question"] == "How much XMR does the treasury hold?"
    assert out["messages"][-1].content == answer


def test_nothing_relevant_declines_without_calling_the_model(kb):
    model = ScriptedChat(replies=["Invented answer."])
    with scripted_model(model):
        out = rag.graph.invoke({"messages": [("user", "What is a good recipe for chocolate cake?")]}, context=ctx(kb))
    assert model.calls == []
    assert out["final_response"].startswith("I found nothing in the knowledge base")
    assert "'reasoning'" in out["final_response"] and out["sources"] == []


def test_relevance_floor_is_a_context_tunable(kb):
    model = ScriptedChat(replies=["Something [1]."])
    with scripted_model(model):
        out = rag.graph.invoke({"messages": [("user", "How much XMR does the treasury hold?")]},
                               context=ctx(kb, min_similarity=0.95))
    assert model.calls == [] and out["sources"] == []
    assert "threshold 0.95" in out["final_response"]


def test_missing_collection_is_named(kb):
    config, _ = kb
    with scripted_model(ScriptedChat(replies=["x"])):
        out = rag.graph.invoke({"messages": [("user", "treasury?")]},
                               context=RagContext(collection="nope-missing"))
    assert "no knowledge-base collection named 'nope-missing'" in out["final_response"]
    assert "reasoning" in out["final_response"]


def test_follow_up_is_reformulated_and_history_persists_per_thread(kb):
    graph = redis_graph(rag.builder, kb[0])
    model = ScriptedChat(replies=[
        "It holds 1,200 XMR [1].",
        "Standalone question: Who approves spending from the XMRT treasury?",
        "A 3-of-5 multisig of the council [1].",
    ])
    with scripted_model(model):
        first = ask(graph, "How much XMR does the treasury hold?", ctx(kb), "follow")
        second = ask(graph, "And who approves spending it?", ctx(kb), "follow")
        other = ask(graph, "How long is voting on proposals?", ctx(kb), "other-thread")
    assert first["standalone_question"] == "How much XMR does the treasury hold?"
    # Second turn: rewriter saw the conversation, retrieval used the rewrite.
    rewrite_prompt = model.calls[1][1].content
    assert "User: How much XMR does the treasury hold?" in rewrite_prompt
    assert "Assistant: It holds 1,200 XMR [1]." in rewrite_prompt
    assert second["standalone_question"] == "Who approves spending from the XMRT treasury?"
    assert model.calls[2][-1].content == "Who approves spending from the XMRT treasury?"
    assert second["sources"][0]["path"] == "docs/treasury.md"
    # A new thread has no history, so no rewrite (4 model calls in all, the last one answering directly).
    assert len(model.calls) == 4 and other["standalone_question"] == "How long is voting on proposals?"
    state = graph.get_state({"configurable": {"thread_id": "follow"}}).values
    assert [m.type for m in state["messages"]] == ["human", "ai", "human", "ai"]
    assert state["reformulated"] is True


def test_garbage_replies_fall_back_after_bounded_retries(kb):
    graph = redis_graph(rag.builder, kb[0])
    model = ScriptedChat(replies=[
        "It holds 1,200 XMR [1].",          # turn 1 answer
        '{"question": "Who appr',          # broken JSON rewrite
        "   ",                             # empty rewrite -> fallback: previous question + this one
        "",                                # empty answer
        "[3]",                             # nothing but an invalid citation -> empty after cleaning
    ])
    with scripted_model(model):
        ask(graph, "How much XMR does the treasury hold?", ctx(kb), "garbage")
        out = ask(graph, "and who approves the spending?", ctx(kb, max_attempts=2), "garbage")
    assert len(model.calls) == 5  # 1 + 2 rewrite attempts + 2 answer attempts, then deterministic fallbacks
    assert out["standalone_question"] == "How much XMR does the treasury hold? and who approves the spending?"
    answer = out["final_response"]
    # Nothing generated survives: the answer quotes the passage sentences that best answer the question.
    assert answer.startswith("The knowledge base says: “") and "[1]" in answer
    assert "3-of-5 multisig approval by the council" in answer
    assert "Sources:\n[1] docs/treasury.md:1" in answer
    state = graph.get_state({"configurable": {"thread_id": "garbage"}}).values
    assert state["fallback"] == "generate"


def test_answer_streams_token_by_token(kb):
    """The grounded answer streams word by word (custom stream); the model's raw tokens never reach the user."""
    text = "The treasury holds 1,200 XMR according to the treasury notes [1]. The DAO owns a yacht [1]."
    model = GenericFakeChatModel(messages=iter([AIMessage(text)]))
    tokens, raw = [], []
    with scripted_model(model):
        for mode, chunk in rag.graph.stream({"messages": [("user", "How much XMR does the treasury hold?")]},
                                            context=ctx(kb), stream_mode=["custom", "messages"]):
            if mode == "custom":
                tokens.append(chunk["token"])
            elif isinstance(chunk[0], AIMessageChunk) and chunk[1]["langgraph_node"] == "generate":
                raw.append(chunk[0].content)
    assert len(tokens) > 5 and raw == []
    assert "".join(tokens).strip() == "The treasury holds 1,200 XMR according to the treasury notes [1]."


# ------------------------------------------------------------------------------------ real local model (slow)
@pytest.mark.slow
@pytest.mark.usefixtures("local_llm")
def test_real_local_model_answers_and_rewrites_a_follow_up(config, tmp_path):
    """SmolLM2 on an ingested corpus: structure, not wording."""
    collection = ingest(config, tmp_path / "corpus")
    graph = redis_graph(rag.builder, config)
    context = RagContext(collection=collection, max_new_tokens=32, k=3, answer_style="generate")
    first = ask(graph, "How much XMR does the treasury hold?", context, "slow-rag")
    second = ask(graph, "Who approves spending it?", context, "slow-rag")
    for out in (first, second):
        assert out["final_response"].strip()
        assert out["sources"] and all(s["path"] in DOCS for s in out["sources"])
        assert "\n\nSources:\n[1] " in out["final_response"]
    assert first["sources"][0]["path"] == "docs/treasury.md"
    assert second["standalone_question"].strip()  # the model's rewrite, or the deterministic fallback
    state = graph.get_state({"configurable": {"thread_id": "slow-rag"}}).values
    assert [m.type for m in state["messages"]] == ["human", "ai", "human", "ai"] and state["reformulated"]


@pytest.mark.usefixtures("local_llm")
def test_with_the_offline_model_auto_quotes_the_passages_without_loading_the_model(config, tmp_path):
    """answer_style auto: the bundled offline model does not word answers; the best passage sentence is quoted."""
    from xmrt.llm import providers

    collection = ingest(config, tmp_path / "corpus")
    graph = redis_graph(rag.builder, config)
    providers.clear_model_cache()
    out = ask(graph, "How much XMR does the treasury hold?", RagContext(collection=collection, k=3), "auto-rag")
    assert providers._local_chat.cache_info().currsize == 0  # never built, so never loaded
    assert out["grounding"]["mode"] == "extractive"
    assert out["final_response"].startswith("The knowledge base says: “") and "1,200 XMR" in out["final_response"]
    assert out["sources"][0]["path"] == "docs/treasury.md"
