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


class TurnState(TypedDict, total=False):
    """What every turn of a conversational answering graph (rag, agentic_rag) holds; each adds its own keys."""

    messages: Annotated[list[AnyMessage], add_messages]
    question: str
    final_response: str
    sources: list[dict[str, Any]]


class AnsweredTurn(TypedDict):
    """Output contract of the conversational answering graphs: the thread, the answer and the sources it cites."""

    messages: list[AnyMessage]
    final_response: str
    sources: list[dict[str, Any]]


def last_human_index(messages: list[AnyMessage]) -> int | None:
    """Position of the most recent human message (where the current turn starts), or None."""
    for i in range(len(messages) - 1, -1, -1):
        if getattr(messages[i], "type", None) == "human":
            return i
    return None


def last_human_text(messages: list[AnyMessage]) -> str:
    """Text of the most recent human message, or ""."""
    i = last_human_index(messages)
    return "" if i is None else message_text(messages[i])


def loop_cap(config: Any, fixed_supersteps: int) -> int | None:
    """Most passes of a two-superstep loop that fit the run's recursion limit, or None without a limit.

    Args:
        config: The run's ``RunnableConfig`` (its ``recursion_limit``).
        fixed_supersteps: Supersteps of the run outside the loop, plus one spare.
    """
    limit = (config or {}).get("recursion_limit")
    if not limit:
        return None
    return max(0, (int(limit) - fixed_supersteps) // 2)


def message_text(message: Any) -> str:
    """Plain text of a message whose content may be a string or a list of content blocks."""
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b if isinstance(b, str) else str(b.get("text", "")) for b in content if b)
    return str(content or "")
