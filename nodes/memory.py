"""Memory nodes: recall relevant long-term memories before answering, store what was learned after."""

from __future__ import annotations

import logging
from typing import Any

from langgraph.runtime import Runtime

from graphs.context import MemoryAgentContext, context_of
from graphs.state import last_human_text, message_text
from xmrt.config import get_config
from xmrt.eliza.memory import AgentMemory
from xmrt.policy import current_principal

log = logging.getLogger(__name__)


def _memory(runtime: Runtime) -> AgentMemory:
    if runtime.store is None:
        raise RuntimeError("this graph needs a store: compile it with xmrt.redis.persistence.redis_graph or serve it")
    return AgentMemory(get_config(), store=runtime.store, principal=current_principal())


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
