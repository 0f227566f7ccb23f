"""Generation nodes: answer with the configured chat model, with bounded retries and a deterministic fallback."""

from __future__ import annotations

import logging
from typing import Any

from langchain_core.messages import AIMessage, SystemMessage
from langgraph.runtime import Runtime

from graphs.context import MemoryAgentContext, context_of
from graphs.state import message_text
from nodes.models import chat_model

log = logging.getLogger(__name__)


def format_memories(memories: list[dict[str, Any]]) -> str:
    """Memories as a bulleted list for a prompt ("(none)" when empty)."""
    if not memories:
        return "(none)"
    return "\n".join(f"- {m['text']}" for m in memories)


def invoke_with_retries(model, messages: list, attempts: int) -> str:
    """Call the model up to ``attempts`` times until it returns non-empty text; "" if it never does."""
    for attempt in range(1, max(1, attempts) + 1):
        try:
            text = message_text(model.invoke(messages)).strip()
        except Exception as exc:  # noqa: BLE001 - model/provider errors are retried, then fall back
            log.warning("model call %d/%d failed: %s", attempt, attempts, exc)
            continue
        if text:
            return text
        log.warning("model call %d/%d returned an empty reply", attempt, attempts)
    return ""


def respond_with_memories(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Answer the conversation, with the recalled memories in the system prompt."""
    ctx = context_of(runtime, MemoryAgentContext)
    system = SystemMessage(ctx.system_prompt.format(memories=format_memories(state.get("recalled") or [])))
    history = state["messages"][-ctx.max_history :]
    text = invoke_with_retries(chat_model(ctx.model), [system, *history], ctx.max_attempts)
    if not text:
        recalled = state.get("recalled") or []
        text = (
            "I could not generate an answer (the model returned nothing usable). "
            + (f"Here is what I remember that may help:\n{format_memories(recalled)}" if recalled else "")
        ).strip()
    return {"messages": [AIMessage(text)]}
