"""State pieces and reducers shared by the graphs (a leaf module: nodes and tools may import it)."""

from __future__ import annotations

import operator
from typing import Annotated, Any

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

#: Counters take deltas: a node returns ``{"steps": 1}`` and the reducer adds it.
Counter = Annotated[int, operator.add]


class MessagesInput(TypedDict):
    """Input contract of the conversational graphs: new messages for the thread."""

    messages: Annotated[list[AnyMessage], add_messages]


def last_human_text(messages: list[AnyMessage]) -> str:
    """Text of the most recent human message, or ""."""
    for message in reversed(messages):
        if getattr(message, "type", None) == "human":
            return message_text(message)
    return ""


def message_text(message: Any) -> str:
    """Plain text of a message whose content may be a string or a list of content blocks."""
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b if isinstance(b, str) else str(b.get("text", "")) for b in content if b)
    return str(content or "")
