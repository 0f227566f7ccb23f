"""How nodes get their chat model: the configured provider, or a scripted model installed by a test."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from langchain_core.language_models import BaseChatModel

_scripted: contextvars.ContextVar[BaseChatModel | None] = contextvars.ContextVar("xmrt_scripted_model", default=None)


@contextlib.contextmanager
def scripted_model(model: BaseChatModel) -> Iterator[BaseChatModel]:
    """Make every node in this context use ``model`` (a scripted fake in tests and benchmarks)."""
    token = _scripted.set(model)
    try:
        yield model
    finally:
        _scripted.reset(token)


def chat_model(model_name: str = "") -> BaseChatModel:
    """The chat model for a node: a scripted one if installed, else the configured provider's.

    Args:
        model_name: Overrides the configured model name (Context ``model`` field); "" keeps it.
    """
    scripted = _scripted.get()
    if scripted is not None:
        return scripted
    from xmrt.config import get_config
    from xmrt.llm.providers import get_chat_model

    return get_chat_model(get_config(), model=model_name or None)
