"""The graph ``xmrt bench api`` serves: one node answering with a scripted chat model (no LLM latency).

It measures the served API itself (threads, runs, checkpoints in Redis, state reads), not a model.
"""

from __future__ import annotations

from typing import Annotated

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AnyMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict


class BenchState(TypedDict):
    """A conversation."""

    messages: Annotated[list[AnyMessage], add_messages]


_MODEL = FakeListChatModel(responses=["Scripted reply: the treasury holds 1,200 XMR."])


def respond(state: BenchState) -> dict:
    """Answer with the scripted model."""
    return {"messages": [_MODEL.invoke(state["messages"])]}


builder = StateGraph(BenchState)
builder.add_node("respond", respond)
builder.add_edge(START, "respond")
builder.add_edge("respond", END)
graph = builder.compile()
graph.name = "bench_scripted"
