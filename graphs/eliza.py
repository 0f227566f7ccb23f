"""The Eliza agent: one decision cycle over a batch of DAO proposals or events.

load_context → assess → decide → reflect → act → learn. Each cycle ends; state is checkpointed on the
agent's thread. Input ``{"proposals": [...]}``; output the decisions (id, decision, score, rationale,
sources), the reflections, the actions taken, invalid inputs with their errors, and the metrics.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from graphs.context import ElizaContext
from nodes.eliza import act, assess, decide, learn, load_context, reflect


class Input(TypedDict):
    """Proposals or events to decide; see README "Proposal, decision and outcome interface"."""

    proposals: list[dict[str, Any]]


class Output(TypedDict):
    """What a cycle returns."""

    decisions: list[dict[str, Any]]
    reflections: list[dict[str, Any]]
    actions: list[dict[str, Any]]
    invalid: list[dict[str, Any]]
    metrics: dict[str, Any]


class State(Input, Output):
    """Everything a cycle works with (all checkpointed)."""

    model: dict[str, Any]
    instructions: str
    prompt_version: int
    lessons: list[dict[str, Any]]
    recent_metrics: dict[str, Any]
    assessed: list[dict[str, Any]]
    knowledge: dict[str, list[dict[str, Any]]]
    kb_note: str


builder = StateGraph(State, context_schema=ElizaContext, input_schema=Input, output_schema=Output)
builder.add_sequence([("load_context", load_context), ("assess", assess), ("decide", decide), ("reflect", reflect),
                      ("act", act), ("learn", learn)])
builder.add_edge(START, "load_context")
builder.add_edge("learn", END)

graph = builder.compile(name="eliza")
