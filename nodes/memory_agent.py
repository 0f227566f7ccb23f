"""The memory_agent graph's nodes (graphs/memory_agent.py): recall memories, answer with them, remember the exchange."""

from __future__ import annotations

import logging
from typing import Any

from langchain_core.messages import AIMessage, SystemMessage
from langgraph.runtime import Runtime

from graphs.context import MemoryAgentContext, context_of
from graphs.state import last_human_text, message_text
from nodes.models import ask_text, chat_model
from xmrt import services
from xmrt.memory import AgentMemory
from xmrt.policy import current_principal

log = logging.getLogger(__name__)


def _memory(runtime: Runtime) -> AgentMemory:
    if runtime.store is None:
        raise RuntimeError("this graph needs a store: compile it with xmrt.persistence.redis_graph or serve it")
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
    """Answer the conversation, with the recalled memories in the system prompt."""
    ctx = context_of(runtime, MemoryAgentContext)
    system = SystemMessage(ctx.system_prompt.format(memories=format_memories(state.get("recalled") or [])))
    history = state["messages"][-ctx.max_history :]
    text, _calls = ask_text(chat_model(ctx.model), [system, *history], ctx.max_attempts)
    if not text:
        recalled = state.get("recalled") or []
        text = (
            "I could not generate an answer (the model returned nothing usable). "
            + (f"Here is what I remember that may help:\n{format_memories(recalled)}" if recalled else "")
        ).strip()
    return {"messages": [AIMessage(text)]}


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
