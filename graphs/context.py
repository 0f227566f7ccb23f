"""Context schemas (``runtime.context``): every tunable of a graph, with defaults. A leaf module.

Nodes read their settings from here; when a caller passes no context, the defaults apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

MEMORY_AGENT_PROMPT = (
    "You are Eliza, the XMRT DAO assistant. Answer briefly and truthfully.\n"
    "Things you remember from earlier conversations:\n{memories}\n"
    "Use them when they are relevant; never invent memories."
)


@dataclass(kw_only=True)
class MemoryAgentContext:
    """Tunables of the memory agent."""

    agent_id: str = "eliza"
    model: str = ""
    recall_k: int = 4
    min_similarity: float = 0.3
    max_history: int = 12
    max_attempts: int = 2
    max_answer_chars: int = 600
    remember: bool = True
    system_prompt: str = MEMORY_AGENT_PROMPT


def context_of(runtime: Any, schema: type[T]) -> T:
    """The run's context, or the schema's defaults when the caller passed none."""
    ctx = getattr(runtime, "context", None)
    if ctx is None:
        return schema()
    if isinstance(ctx, dict):
        return schema(**ctx)
    return ctx
