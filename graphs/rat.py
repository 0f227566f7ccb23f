"""RAT, Retrieval-Augmented Thoughts (Wang et al. 2024): draft step by step, revise each step against retrieval.

``draft -> (retrieve_for_step -> revise_step)* -> answer -> score_confidence``

* ``draft`` writes a numbered step list (a reply that is not a list is retried, then split into sentences).
* For the current step, ``retrieve_for_step`` searches the collection with the question plus the step, and
  ``revise_step`` revises the step against the relevant passages. Each reflection is recorded in state:
  round, step, query, retrieved sources, before, after, changed.
* ``route_after_revision`` loops over the steps in order, for at most ``reflection_steps`` passes over the draft
  (``max_reflections`` in state), and stops early after a pass in which no revision changed the draft.
* ``answer`` writes the final answer from the revised steps, citing the retrieved passages as [n], with a
  ``Sources:`` footer; ``score_confidence`` computes ``confidence``, the share of answer sentences supported
  by a retrieved passage (embedding similarity at least ``support_threshold``).

Input: ``{"question": "..."}``. Output: ``{"final_response", "reflections", "confidence", "sources"}``.
Tunables are on :class:`graphs.context.RatContext`::

    graph.invoke({"question": "Who approves treasury spending?"}, context=RatContext(collection="docs"))
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from graphs.context import RatContext
from graphs.state import Counter
from nodes.rat import (
    answer,
    draft,
    retrieve_for_step,
    revise_step,
    route_after_draft,
    route_after_revision,
    score_confidence,
)


class Input(TypedDict):
    """The question to answer."""

    question: str


class Output(TypedDict):
    """The answer (with a sources footer), the reflections that shaped it, its computed confidence, sources."""

    final_response: str
    reflections: list[dict[str, Any]]
    confidence: float
    sources: list[dict[str, Any]]


class State(TypedDict, total=False):
    """The draft, its revisions, the evidence retrieved for them, and the answer."""

    question: str
    draft: list[str]
    steps: list[str]
    max_reflections: int
    reflection_count: Counter
    step_passages: list[dict[str, Any]]
    step_retrieval: dict[str, Any]
    reflections: list[dict[str, Any]]
    evidence: list[dict[str, Any]]
    fallbacks: list[str]
    generated_answer: str
    final_response: str
    sources: list[dict[str, Any]]
    confidence: float
    support: list[dict[str, Any]]


builder = StateGraph(State, context_schema=RatContext, input_schema=Input, output_schema=Output)
builder.add_node(draft)
builder.add_sequence([retrieve_for_step, revise_step])
builder.add_sequence([answer, score_confidence])
builder.add_edge(START, "draft")
builder.add_conditional_edges("draft", route_after_draft, ["retrieve_for_step", "answer"])
builder.add_conditional_edges("revise_step", route_after_revision, ["retrieve_for_step", "answer"])
builder.add_edge("score_confidence", END)

graph = builder.compile(name="rat")
