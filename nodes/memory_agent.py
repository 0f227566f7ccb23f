"""The memory_agent graph's nodes (graphs/memory_agent.py): recall memories, answer with them, remember the exchange."""

from __future__ import annotations

import logging
from typing import Any

from langchain_core.messages import AIMessage, SystemMessage
from langgraph.runtime import Runtime

from graphs.context import MemoryAgentContext, context_of
from graphs.state import last_human_text, message_text
from nodes.evidence import Unit, prose_sentences
from nodes.grounding import Checker, hidden, stream_answer, stream_checked
from nodes.models import ask_text, chat_model, writes_answers
from nodes.retrieval import embedder
from xmrt import services
from xmrt.eliza.memory import AgentMemory
from xmrt.policy import current_principal

log = logging.getLogger(__name__)


def _memory(runtime: Runtime) -> AgentMemory:
    if runtime.store is None:
        raise RuntimeError("this graph needs a store: compile it with xmrt.redis.persistence.redis_graph or serve it")
    return services.agent_memory(runtime.store, current_principal())


def recall(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Search the agent's memories for the latest question; keep those above the similarity threshold."""
    ctx = context_of(runtime, MemoryAgentContext)
    question = last_human_text(state["messages"])
    if not question.strip():
        return {"recalled": []}
    found = _memory(runtime).search(ctx.agent_id, question, limit=ctx.recall_k)
    kept = [m.to_dict() for m in found if (m.score or 0.0) >= ctx.min_similarity]
    log.debug("recalled %d of %d memories for %r", len(kept), len(found), question[:60])
    return {"recalled": kept}


def format_memories(memories: list[dict[str, Any]]) -> str:
    """Memories as a bulleted list for a prompt ("(none)" when empty)."""
    if not memories:
        return "(none)"
    return "\n".join(f"- {m['text']}" for m in memories)


def respond_with_memories(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Answer the conversation, with the recalled memories in the system prompt.

    With ``grounded`` (the default) the model's tokens are kept off the stream and its reply is checked sentence
    by sentence against what the user said (recalled memories and earlier messages of the thread; never the
    agent's own earlier answers): supported sentences are streamed at once, and when none is supported the
    answer quotes what the user said, or says that nothing is remembered (nodes.grounding).
    """
    ctx = context_of(runtime, MemoryAgentContext)
    recalled = state.get("recalled") or []
    system = SystemMessage(ctx.system_prompt.format(memories=format_memories(recalled)))
    history = state["messages"][-ctx.max_history :]
    if ctx.grounded:
        units = memory_units(recalled, state["messages"])
        if not units:  # nothing to ground an answer in: do not spend a model call on a guess
            stream_answer(runtime, ctx.no_memory_message)
            return {"messages": [AIMessage(ctx.no_memory_message)]}
        checker = Checker(last_human_text(state["messages"]), units, embedder(), threshold=ctx.grounding_threshold,
                          min_coverage=ctx.min_coverage)
        quote = not writes_answers(ctx)
        if not quote:
            stream_checked(hidden(chat_model(ctx.model)), [system, *history], checker,
                           lambda sentence: stream_answer(runtime, sentence + " "), attempts=ctx.max_attempts,
                           max_unsupported=ctx.max_unsupported)
        if checker.support or quote:
            result = checker.result(intro="From what I remember:", dont_know=ctx.no_memory_message)
            if not result.grounded:
                stream_answer(runtime, result.answer)
            return {"messages": [AIMessage(result.answer)]}
        text = None
    else:
        text, _calls = ask_text(chat_model(ctx.model), [system, *history], ctx.max_attempts)
    if not text:
        text = (
            "I could not generate an answer (the model returned nothing usable). "
            + (f"Here is what I remember that may help:\n{format_memories(recalled)}" if recalled else "")
        ).strip()
        if ctx.grounded:
            stream_answer(runtime, text)
    return {"messages": [AIMessage(text)]}


def memory_units(recalled: list[dict[str, Any]], messages: list) -> list[Unit]:
    """What the user said that an answer may state: in recalled memories, and earlier in this thread.

    The agent's own earlier answers (stored in an exchange's memory, or in the thread) are not evidence: they
    are model output.
    """
    units: list[Unit] = []
    for memory in recalled:
        said = str(memory.get("text") or "").split("\nAssistant answered:", 1)[0].removeprefix("User said:")
        units.extend(Unit(s, "memory") for s in prose_sentences(said.strip()))
    for message in messages[:-1]:
        if getattr(message, "type", None) == "human":
            units.extend(Unit(s, "you said") for s in prose_sentences(message_text(message)))
    return units


def remember(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Store the exchange (question and answer) as a new memory of the agent."""
    ctx = context_of(runtime, MemoryAgentContext)
    if not ctx.remember:
        return {}
    question = last_human_text(state["messages"])
    answer = message_text(state["messages"][-1]) if state["messages"] else ""
    if not question.strip():
        return {}
    text = f"User said: {question.strip()}"
    if answer.strip():
        text += f"\nAssistant answered: {answer.strip()[: ctx.max_answer_chars]}"
    key = _memory(runtime).remember(ctx.agent_id, text, data={"kind": "exchange", "question": question.strip()})
    return {"remembered": [key]}
