"""Graphs that only the served-API tests register: no LLM, so they measure the server and not a model."""

from __future__ import annotations

import operator
from typing import Annotated

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class EchoState(TypedDict, total=False):
    """The text to echo and how many times the thread has run."""

    text: str
    echo: str
    runs: Annotated[int, operator.add]


def echo(state: EchoState) -> dict:
    """Echo the text back and count the run."""
    return {"echo": f"echo: {state.get('text', '')}", "runs": 1}


builder = StateGraph(EchoState)
builder.add_node("echo", echo)
builder.add_edge(START, "echo")
builder.add_edge("echo", END)
graph = builder.compile()
graph.name = "echo"
