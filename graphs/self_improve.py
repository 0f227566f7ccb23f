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
builder.add_sequence([("record_outcomes", record_outcomes), ("review", review), ("update_weights", update_weights),
                      ("write_lessons", write_lessons), ("revise_prompt", revise_prompt), ("report", report)])
builder.add_edge(START, "record_outcomes")
builder.add_edge("report", END)

graph = builder.compile(name="self_improve")
