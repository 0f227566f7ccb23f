"""Private API of ``langchain-core``: ``BaseChatModel._astream``, the generic async-over-sync streaming bridge.

A chat model that implements only the sync ``_stream`` gets async streaming from ``BaseChatModel._astream``,
which runs ``_stream`` in a worker thread. ``ChatHuggingFace`` overrides ``_astream`` with a version that only
talks to inference endpoints, so :class:`xmrt.llm.local.LocalChatModel` (a ``ChatHuggingFace`` on a local
pipeline) calls the base class's bridge past that override: :func:`astream_in_thread`.

Guarded by :data:`TESTED_VERSIONS`; tests/test_compat.py streams through it on the installed langchain-core.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk

from xmrt.compat import require

#: The langchain-core versions whose ``BaseChatModel._astream`` the suite has passed with.
TESTED_VERSIONS: tuple[str, ...] = ("1.8.3",)


async def astream_in_thread(model: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None = None,
                            run_manager: AsyncCallbackManagerForLLMRun | None = None,
                            **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
    """Stream ``model``'s sync ``_stream`` from a worker thread, as ``BaseChatModel._astream`` does.

    Raises:
        CompatError: The installed langchain-core is not one of :data:`TESTED_VERSIONS`.
    """
    require("langchain-core", TESTED_VERSIONS, "async streaming of the local chat model")
    async for chunk in BaseChatModel._astream(model, messages, stop, run_manager, **kwargs):
        yield chunk
