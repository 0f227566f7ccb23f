"""How nodes get and call their chat model, with bounded retries.

The model is the configured provider's, or a scripted model installed by a test.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import Any

from langchain_core.language_models import BaseChatModel

from graphs.state import message_text

log = logging.getLogger(__name__)

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
    from xmrt.llm import get_chat_model

    return get_chat_model(get_config(), model=model_name or None)


def bounded_model(ctx: Any):
    """The node's chat model, with the Context's per-reply token limit bound when one is set."""
    model = chat_model(getattr(ctx, "model", ""))
    limit = int(getattr(ctx, "max_new_tokens", 0) or 0)
    return model.bind(max_tokens=limit) if limit > 0 else model


def ask_text(model, messages: list, attempts: int, parse=None) -> tuple[str | None, int]:
    """Call the model until ``parse(reply)`` gives a value; returns (value or None, calls made).

    ``parse`` defaults to "non-empty text". Exceptions from the provider count as failed attempts.
    """
    parse = parse or (lambda text: text.strip() or None)
    attempts = max(1, int(attempts))
    for attempt in range(1, attempts + 1):
        text = invoke_with_retries(model, messages, 1)
        value = parse(text) if text else None
        if value is not None:
            return value, attempt
        log.info("model reply %d/%d unusable: %r", attempt, attempts, (text or "")[:120])
    return None, attempts


def invoke_with_retries(model, messages: list, attempts: int) -> str:
    """Call the model up to ``attempts`` times until it returns non-empty text; "" if it never does."""
    for attempt in range(1, max(1, attempts) + 1):
        try:
            text = message_text(model.invoke(messages)).strip()
        except Exception as exc:  # noqa: BLE001 - model/provider errors are retried, then fall back
            log.warning("model call %d/%d failed: %s", attempt, attempts, exc)
            continue
        if text:
            return text
        log.warning("model call %d/%d returned an empty reply", attempt, attempts)
    return ""
