"""RAG over a knowledge-base collection: rewrite a follow-up, retrieve (hybrid), answer with [n] citations.

``start_turn -> [reformulate] -> retrieve -> generate | no_answer``

* ``reformulate`` runs only when the thread has earlier messages (``route_question``): the model rewrites the
  follow-up into a standalone question; an unusable rewrite falls back to the previous question plus this one.
* ``retrieve`` searches ``collection`` (hybrid by default, ``k`` hits) and keeps the hits whose cosine
  similarity to the question passes a per-query threshold (see :mod:`nodes.retrieval`).
* ``route_retrieval``: with relevant passages, ``generate`` answers from them, citing ``[n]``, and appends a
  ``Sources:`` footer with each passage's path; without any, ``no_answer`` says so and never calls the model.

The conversation (``messages``) persists per ``thread_id`` in the checkpointer. Input:
``{"messages": [...]}``; output: ``{"messages", "final_response", "sources", "standalone_question"}``.
Tunables are on :class:`graphs.context.RagContext`::

    graph.invoke({"messages": [("user", "Who approves treasury spending?")]},
                 context=RagContext(collection="docs", k=4))
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph

from graphs.context import RagContext
from graphs.state import AnsweredTurn, MessagesInput, TurnState
from nodes.rag import generate, no_answer, reformulate, retrieve, route_question, route_retrieval, start_turn


class State(TurnState, total=False):
    """The conversation and the current turn's question, passages and answer."""

    standalone_question: str
    reformulated: bool
    passages: list[dict[str, Any]]
    retrieval: dict[str, Any]
    fallback: str | None
    grounding: dict[str, Any]


class Output(AnsweredTurn):
    """What callers get back: the answer (with its sources footer), its sources, and the question searched."""

    standalone_question: str
    grounding: dict[str, Any]


builder = StateGraph(State, context_schema=RagContext, input_schema=MessagesInput, output_schema=Output)
builder.add_node(start_turn)
builder.add_sequence([reformulate, retrieve])
builder.add_node(generate)
builder.add_node(no_answer)
builder.add_edge(START, "start_turn")
builder.add_conditional_edges("start_turn", route_question, ["reformulate", "retrieve"])
builder.add_conditional_edges("retrieve", route_retrieval, ["generate", "no_answer"])
builder.add_edge("generate", END)
builder.add_edge("no_answer", END)

graph = builder.compile(name="rag")
