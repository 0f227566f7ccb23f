"""The RAG graph's nodes (graphs/rag.py): start a turn, rewrite, retrieve, answer with citations, or decline.

Every node that calls the model retries a bounded number of times (``max_attempts``) and then falls back
deterministically; no model reply can crash a run.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from graphs.context import RagContext, context_of
from graphs.state import last_human_index, last_human_text, message_text
from nodes.citations import clean_citations, format_passages, sources_of, with_footer
from nodes.evidence import passage_units
from nodes.grounding import Checker, hidden, stream_answer, stream_checked
from nodes.models import ask_text, bounded_model, writes_answers
from nodes.parsing import first_line, parse_text_reply
from nodes.retrieval import embedder, search_passages
from xmrt import services

log = logging.getLogger(__name__)


def _prior_messages(messages: list) -> list:
    """Messages before the last human message (the conversation so far)."""
    start = last_human_index(messages)
    return [] if start is None else messages[:start]


def start_turn(state: dict[str, Any]) -> dict[str, Any]:
    """Take the new question from the last human message; reset what the previous turn left behind."""
    question = last_human_text(state.get("messages") or []).strip()
    return {"question": question, "standalone_question": question, "reformulated": False, "passages": [],
            "retrieval": {}, "sources": [], "final_response": "", "fallback": None}


def route_question(state: dict[str, Any]) -> Literal["reformulate", "retrieve"]:
    """Rewrite the question only when there is a conversation before it."""
    prior = _prior_messages(state.get("messages") or [])
    return "reformulate" if any(message_text(m).strip() for m in prior) else "retrieve"


def _standalone(question: str):
    limit = max(400, 3 * len(question))

    def parse(text: str) -> str | None:
        whole = text.lstrip().startswith(("{", "[", "```"))
        found = parse_text_reply(text if whole else first_line(text), max_chars=limit)
        return found if found and len(found) >= 3 else None

    return parse


def reformulate(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Rewrite a follow-up as a standalone question; fall back to the previous question plus this one."""
    ctx = context_of(runtime, RagContext)
    question = state["question"]
    prior = [m for m in _prior_messages(state["messages"]) if m.type in ("human", "ai") and message_text(m).strip()]
    prior = prior[-ctx.max_history :]
    history = "\n".join(f"{'User' if m.type == 'human' else 'Assistant'}: {message_text(m).strip()[:500]}"
                        for m in prior)
    prompt = [SystemMessage(ctx.reformulate_prompt),
              HumanMessage(ctx.reformulate_input.format(history=history, question=question))]
    rewritten, _calls = ask_text(bounded_model(ctx), prompt, ctx.max_attempts, _standalone(question))
    if rewritten is None:
        earlier = [message_text(m).strip() for m in prior if m.type == "human"]
        rewritten = f"{earlier[-1]} {question}" if earlier else question
        return {"standalone_question": rewritten, "reformulated": True, "fallback": "reformulate"}
    return {"standalone_question": rewritten, "reformulated": True}


def retrieve(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Search the collection for the (standalone) question; keep the passages above the threshold."""
    ctx = context_of(runtime, RagContext)
    query = state.get("standalone_question") or state.get("question") or ""
    info = search_passages(services.config(), ctx.collection, query, k=ctx.k, mode=ctx.search_mode,
                           min_similarity=ctx.min_similarity, relevance_ratio=ctx.relevance_ratio)
    passages = info.pop("passages")
    log.debug("retrieved %d relevant of %d hits for %r", len(passages), info["candidates"], query[:60])
    return {"passages": passages, "retrieval": info}


def route_retrieval(state: dict[str, Any]) -> Literal["generate", "no_answer"]:
    """Answer when something relevant was retrieved; otherwise say so."""
    return "generate" if state.get("passages") else "no_answer"


def generate(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Answer from the numbered passages; only the sentences the passages support are shown (nodes.grounding).

    The model's own tokens are kept off the stream. Its reply is checked sentence by sentence as it is generated
    (``stream_checked``): each supported sentence is streamed at once, and the model is stopped when it loops or
    ``max_unsupported`` of its sentences failed. When no generated sentence is supported (or the model gives
    nothing, or ``answer_style`` says quote), the answer quotes the passage sentences that best answer the
    question, with their citations.
    """
    ctx = context_of(runtime, RagContext)
    passages = state["passages"]
    question = state.get("standalone_question") or state["question"]
    prompt = [SystemMessage(ctx.answer_prompt.format(passages=format_passages(passages, ctx.max_passage_chars))),
              HumanMessage(question)]
    checker = Checker(question, passage_units(passages), embedder(), threshold=ctx.grounding_threshold,
                      min_coverage=ctx.min_coverage)
    numbers = [p["n"] for p in passages]
    if writes_answers(ctx):
        stream_checked(hidden(bounded_model(ctx)), prompt, checker, lambda s: stream_answer(runtime, s + " "),
                       attempts=ctx.max_attempts, clean=lambda text: clean_citations(text, numbers)[0],
                       max_unsupported=ctx.max_unsupported)
    result = checker.result()
    if not result.grounded:
        stream_answer(runtime, result.answer)
    sources = sources_of(passages, result.cited)
    final = with_footer(result.answer, sources)
    update: dict[str, Any] = {"final_response": final, "sources": sources, "messages": [AIMessage(final)],
                              "grounding": {"mode": result.mode, "support": result.support}}
    if not result.grounded:
        update["fallback"] = "generate"
    else:
        update["fallback"] = None
    return update


def no_answer(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Decline: nothing relevant was retrieved (or the collection is missing). No model call."""
    ctx = context_of(runtime, RagContext)
    info = state.get("retrieval") or {}
    error = f" ({info['error']})" if info.get("error") else ""
    text = ctx.no_answer_message.format(collection=ctx.collection, best=float(info.get("best_similarity") or 0.0),
                                        threshold=float(info.get("threshold") or ctx.min_similarity), error=error,
                                        question=state.get("question", ""))
    return {"final_response": text, "sources": [], "messages": [AIMessage(text)]}
