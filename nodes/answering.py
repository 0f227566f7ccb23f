"""RAG nodes: start a turn, rewrite a follow-up question, answer from passages with citations, or decline.

Every node that calls the model retries a bounded number of times (``max_attempts``) and then falls back
deterministically; no model reply can crash a run.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from graphs.context import RagContext, context_of
from graphs.state import last_human_text, message_text
from nodes.citations import clean_citations, format_passages, sources_of, with_footer
from nodes.generation import invoke_with_retries
from nodes.grounding import ground, hidden, passage_units, stream_answer
from nodes.models import chat_model
from nodes.parsing import first_line, parse_text_reply

log = logging.getLogger(__name__)


def bounded_model(ctx: Any):
    """The node's chat model, with the Context's per-reply token limit bound when one is set."""
    model = chat_model(getattr(ctx, "model", ""))
    limit = int(getattr(ctx, "max_new_tokens", 0) or 0)
    return model.bind(max_tokens=limit) if limit > 0 else model


def ask_text(model, messages: list, attempts: int, parse=None) -> tuple[str | None, int]:
    """Call the model until ``parse(reply)`` gives a value; returns (value or None, calls made).

    ``parse`` defaults to "non-empty text". Exceptions from the provider count as failed attempts.
    """
    parse = parse or (lambda text: text.strip() or None)
    attempts = max(1, int(attempts))
    for attempt in range(1, attempts + 1):
        text = invoke_with_retries(model, messages, 1)
        value = parse(text) if text else None
        if value is not None:
            return value, attempt
        log.info("model reply %d/%d unusable: %r", attempt, attempts, (text or "")[:120])
    return None, attempts


def _prior_messages(messages: list) -> list:
    """Messages before the last human message (the conversation so far)."""
    for i in range(len(messages) - 1, -1, -1):
        if getattr(messages[i], "type", None) == "human":
            return messages[:i]
    return []


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
              HumanMessage(f"Conversation:\n{history}\n\nLast question: {question}\n\nStandalone question:")]
    rewritten, _calls = ask_text(bounded_model(ctx), prompt, ctx.max_attempts, _standalone(question))
    if rewritten is None:
        earlier = [message_text(m).strip() for m in prior if m.type == "human"]
        rewritten = f"{earlier[-1]} {question}" if earlier else question
        return {"standalone_question": rewritten, "reformulated": True, "fallback": "reformulate"}
    return {"standalone_question": rewritten, "reformulated": True}


def route_retrieval(state: dict[str, Any]) -> Literal["generate", "no_answer"]:
    """Answer when something relevant was retrieved; otherwise say so."""
    return "generate" if state.get("passages") else "no_answer"


def embedder(ctx: Any):
    """``texts -> vectors`` with the knowledge base's embeddings (for the grounding check)."""
    from nodes.retrieval import kb_config
    from xmrt.llm.embeddings import get_embeddings

    return get_embeddings(kb_config(ctx)).embed_documents


def generate(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Answer from the numbered passages; only the sentences the passages support are shown (nodes.grounding).

    The model's own tokens are kept off the stream; the grounded answer is streamed word by word instead. When
    no generated sentence is supported (or the model gives nothing), the answer quotes the passage sentences that
    best answer the question, with their citations.
    """
    ctx = context_of(runtime, RagContext)
    passages = state["passages"]
    question = state.get("standalone_question") or state["question"]
    prompt = [SystemMessage(ctx.answer_prompt.format(passages=format_passages(passages, ctx.max_passage_chars))),
              HumanMessage(question)]
    text, _calls = ask_text(hidden(bounded_model(ctx)), prompt, ctx.max_attempts)
    generated, _ = clean_citations(text or "", (p["n"] for p in passages))
    result = ground(generated, question, passage_units(passages), embedder(ctx), threshold=ctx.grounding_threshold,
                    min_coverage=ctx.min_coverage)
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
