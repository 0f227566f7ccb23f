"""The memory agent: recall relevant long-term memories, answer with the configured LLM, remember the exchange.

Its conversation is checkpointed per ``thread_id``; its memories live in the Redis store per ``agent_id``
and outlive threads, so a new thread still recalls what an earlier one learned.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

from langchain_core.messages import AnyMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from graphs.context import MemoryAgentContext
from graphs.state import MessagesInput
from nodes.memory_agent import recall, remember, respond_with_memories


class State(TypedDict):
    """Conversation, the memories recalled for the last question, and the keys of memories stored."""

    messages: Annotated[list[AnyMessage], add_messages]
    recalled: list[dict[str, Any]]
    remembered: Annotated[list[str], operator.add]


class Output(TypedDict):
    """What callers get back."""

    messages: list[AnyMessage]
    recalled: list[dict[str, Any]]


builder = StateGraph(State, context_schema=MemoryAgentContext, input_schema=MessagesInput, output_schema=Output)
builder.add_sequence([("recall", recall), ("respond", respond_with_memories), ("remember", remember)])
builder.add_edge(START, "recall")
builder.add_edge("remember", END)

graph = builder.compile(name="memory_agent")
