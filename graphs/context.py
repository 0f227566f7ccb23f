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


ELIZA_INSTRUCTIONS = (
    "You are Eliza, the decision agent of the XMRT DAO. Judge whether the proposal below will succeed "
    "if the DAO approves it, using the criteria, the knowledge-base passages and the lessons from past "
    "outcomes. Reply with JSON only: "
    '{"verdict": "approve" | "reject" | "defer", "reason": "<one sentence>"}'
)


@dataclass(kw_only=True)
class ElizaContext:
    """Tunables of one Eliza decision cycle (graphs/eliza.py)."""

    agent_id: str = "eliza"
    model: str = ""
    use_llm: bool = True
    #: Use recorded outcomes (similar past cases) when reflecting; off = the no-learning agent.
    learn: bool = True
    collection: str = "default"
    knowledge_k: int = 3
    lessons_k: int = 3
    defer_margin: float = 0.05
    #: Decisions whose probability is within this margin of 0.5 are reflected on.
    reflect_margin: float = 0.15
    max_reflections: int = 50
    neighbors_k: int = 15
    min_neighbors: int = 5
    #: Pseudo-count of the model's own estimate when blending in the neighbours' success rate.
    neighbor_prior: float = 10.0
    max_attempts: int = 2
    max_new_tokens: int = 96
    instructions: str = ELIZA_INSTRUCTIONS


@dataclass(kw_only=True)
class SelfImproveContext:
    """Tunables of the self-improvement graph (graphs/self_improve.py)."""

    agent_id: str = "eliza"
    model: str = ""
    learn: bool = True
    learning_rate: float = 0.01
    epochs: int = 30
    l2: float = 1e-4
    lesson_min_cases: int = 5
    lesson_min_gap: float = 0.25
    max_lessons: int = 5
    #: Let the LLM rewrite the decision instructions: "auto" (only with the openai provider), "on" or "off".
    prompt_optimizer: str = "auto"
    max_attempts: int = 2


def context_of(runtime: Any, schema: type[T]) -> T:
    """The run's context, or the schema's defaults when the caller passed none."""
    ctx = getattr(runtime, "context", None)
    if ctx is None:
        return schema()
    if isinstance(ctx, dict):
        return schema(**ctx)
    return ctx
