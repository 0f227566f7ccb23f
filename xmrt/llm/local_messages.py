"""Messages to and from the local model: chat-template role dicts, turns dropped to fit, stop sequences cut."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGenerationChunk

from xmrt.llm.tools import render_tool_call


def _chunk(text: str) -> ChatGenerationChunk:
    return ChatGenerationChunk(message=AIMessageChunk(content=text))


def _cut_at_stop(pieces: Iterator[str], stop: Sequence[str]) -> Iterator[str]:
    """Pass text through until a stop sequence appears; the stop and what follows are dropped."""
    stop = [s for s in stop if s]
    if not stop:
        yield from pieces
        return
    hold = max(len(s) for s in stop) - 1
    pending = ""
    try:
        for piece in pieces:
            pending += piece
            hits = [i for i in (pending.find(s) for s in stop) if i >= 0]
            if hits:
                if min(hits):
                    yield pending[: min(hits)]
                return
            if len(pending) > hold:
                cut = len(pending) - hold
                yield pending[:cut]
                pending = pending[cut:]
        if pending:
            yield pending
    finally:
        close = getattr(pieces, "close", None)
        if close:
            close()


def _text_of(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return str(message.text)


def _to_role_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """Messages as chat-template dicts; tool traffic as text, and same-role neighbours merged."""
    names_by_id: dict[str, str] = {}
    dicts: list[dict[str, str]] = []
    for message in messages:
        text = _text_of(message)
        if isinstance(message, SystemMessage):
            role = "system"
        elif isinstance(message, HumanMessage):
            role = "user"
        elif isinstance(message, AIMessage):
            role = "assistant"
            calls = [render_tool_call(c["name"], c["args"]) for c in message.tool_calls]
            for call in message.tool_calls:
                names_by_id[call.get("id") or ""] = call["name"]
            text = "\n".join([text.strip(), *calls] if text.strip() else calls)
        elif isinstance(message, ToolMessage):
            role = "user"
            name = message.name or names_by_id.get(message.tool_call_id, "the tool")
            text = f"Result of {name}:\n{text}"
        elif isinstance(message, FunctionMessage):
            role, text = "user", f"Result of {message.name}:\n{text}"
        elif isinstance(message, ChatMessage):
            role = message.role if message.role in ("system", "user", "assistant") else "user"
        else:
            role = "user"
        if dicts and dicts[-1]["role"] == role and role != "system":
            dicts[-1] = {"role": role, "content": f"{dicts[-1]['content']}\n\n{text}"}
        else:
            dicts.append({"role": role, "content": text})
    return dicts


def _drop_oldest_turn(dicts: list[dict[str, str]]) -> bool:
    """Remove the oldest non-system message, keeping the last one; False when nothing can go."""
    candidates = [i for i, d in enumerate(dicts[:-1]) if d["role"] != "system"]
    if not candidates:
        return False
    del dicts[candidates[0]]
    return True
