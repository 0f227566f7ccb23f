"""The graphs ``xmrt bench api`` serves besides the project's own: no LLM latency, so the figures measure the server.

* ``bench_scripted``: one node answering with a scripted chat model (the served API's floor).
* ``rag_scripted``: the real ``rag`` graph (graphs/rag.py: retrieval over the knowledge base, hybrid search,
  citations) with its chat model replaced by a scripted one. It is a graph *factory*: langgraph-api enters it
  around each run, in the run's own context, so the scripted model reaches every node of that run only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AnyMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from nodes.models import scripted_model


class BenchState(TypedDict):
    """A conversation."""

    messages: Annotated[list[AnyMessage], add_messages]


_MODEL = FakeListChatModel(responses=["Scripted reply: the treasury holds 1,200 XMR."])
_RAG_MODEL = FakeListChatModel(responses=["Spending above 100 XMR needs a governance vote [1]."])


def respond(state: BenchState) -> dict:
    """Answer with the scripted model."""
    return {"messages": [_MODEL.invoke(state["messages"])]}


builder = StateGraph(BenchState)
builder.add_node("respond", respond)
builder.add_edge(START, "respond")
builder.add_edge("respond", END)
graph = builder.compile(name="bench_scripted")


@contextlib.contextmanager
def rag_scripted(config: Any) -> Iterator[Any]:
    """The real ``rag`` graph, answering with a scripted chat model (a graph factory for langgraph-api)."""
    from graphs.rag import graph as rag

    with scripted_model(_RAG_MODEL):
        yield rag
