"""Scripted chat models that drive graph logic in tests (never a stand-in for Redis or Chroma)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field


class ScriptedChat(BaseChatModel):
    """Replies from a script, in order (the last reply repeats); records every prompt it was given.

    ``on_call(n, messages)`` runs before reply ``n`` (1-based), e.g. to sleep or stop a server.
    """

    replies: list[Any] = Field(default_factory=lambda: ["ok"])
    calls: list[list[BaseMessage]] = Field(default_factory=list)
    on_call: Callable[[int, list[BaseMessage]], None] | None = None

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        self.calls.append(list(messages))
        if self.on_call is not None:
            self.on_call(len(self.calls), list(messages))
        reply = self.replies[min(len(self.calls), len(self.replies)) - 1]
        message = reply if isinstance(reply, BaseMessage) else AIMessage(str(reply))
        return ChatResult(generations=[ChatGeneration(message=message)])


def sleep_on(call_number: int, seconds: float, marker: str = "IN_MODEL") -> Callable:
    """An ``on_call`` hook that prints ``marker`` and sleeps on the given call (to be killed there)."""

    def hook(n: int, _messages) -> None:
        if n == call_number:
            print(marker, flush=True, file=sys.stdout)
            time.sleep(seconds)

    return hook
