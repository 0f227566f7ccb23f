"""Self-improvement: learn from recorded outcomes.

record_outcomes → review → update_weights → write_lessons → revise_prompt → report. Input
``{"outcomes": [{"id": ..., "success": true|false}, ...]}`` (may be empty: then it learns from the
outcomes already recorded). Weights, lessons and prompt versions persist in Redis.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from graphs.context import SelfImproveContext
from nodes.self_improve import record_outcomes, report, review, revise_prompt, update_weights, write_lessons


class Input(TypedDict, total=False):
    """Outcomes to record before learning."""

    outcomes: list[dict[str, Any]]


class Output(TypedDict):
    """What a self-improvement run reports."""

    recorded: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    metrics_before: dict[str, Any]
    training: dict[str, Any]
    lessons: list[dict[str, Any]]
    prompt_update: dict[str, Any]
    metrics_after: dict[str, Any]


class State(Input, Output):
    """All checkpointed."""


builder = StateGraph(State, context_schema=SelfImproveContext, input_schema=Input, output_schema=Output)
for name, fn in (("record_outcomes", record_outcomes), ("review", review), ("update_weights", update_weights),
                 ("write_lessons", write_lessons), ("revise_prompt", revise_prompt), ("report", report)):
    builder.add_node(name, fn)
builder.add_edge(START, "record_outcomes")
builder.add_edge("record_outcomes", "review")
builder.add_edge("review", "update_weights")
builder.add_edge("update_weights", "write_lessons")
builder.add_edge("write_lessons", "revise_prompt")
builder.add_edge("revise_prompt", "report")
builder.add_edge("report", END)

graph = builder.compile()
graph.name = "self_improve"
