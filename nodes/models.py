"""How nodes get and call their chat model, with bounded retries.

The model is the configured provider's, or a scripted model installed by a test.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator, Sequence
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
    from xmrt import services
    from xmrt.llm.providers import get_chat_model

    return get_chat_model(services.config(), model=model_name or None)


def bounded_model(ctx: Any):
    """The node's chat model, with the Context's per-reply token limit bound when one is set."""
    model = chat_model(getattr(ctx, "model", ""))
    limit = int(getattr(ctx, "max_new_tokens", 0) or 0)
    return model.bind(max_tokens=limit) if limit > 0 else model


def writes_answers(ctx: Any) -> bool:
    """Whether the model words the answer (``answer_style``), or the evidence is quoted without a model call.

    ``auto`` lets a scripted model (tests) or an OpenAI-compatible one write, and quotes with the bundled offline
    model: on the answer set of BENCHMARKS.md its own sentences passed the grounding check for 1 to 3 of 25
    questions and were mostly wrong, while the quotes were right for about three in four, in a fraction of the time.
    """
    style = getattr(ctx, "answer_style", "generate")
    if style != "auto":
        return style == "generate"
    if _scripted.get() is not None:
        return True
    from xmrt import services

    return services.config().llm_provider != "huggingface"


def ask_many(model, conversations: Sequence[list], attempts: int, parse: Callable[[Any], Any], *,
             max_concurrency: int | None = None) -> list[tuple[Any, int]]:
    """The one retry loop around model calls: ask until ``parse(reply)`` gives a value, at most ``attempts`` times.

    Each conversation is asked again only while its replies are unusable (``parse`` returned None) or the
    provider raised; several are sent together with ``model.batch``. Returns, per conversation, (value or None,
    the attempt that gave it or the last one made).
    """
    attempts = max(1, int(attempts))
    results: list[tuple[Any, int]] = [(None, 0)] * len(conversations)
    todo = list(range(len(conversations)))
    for attempt in range(1, attempts + 1):
        if not todo:
            break
        if len(todo) == 1:
            try:
                replies: list[Any] = [model.invoke(conversations[todo[0]])]
            except Exception as exc:  # noqa: BLE001 - model/provider errors are retried, then fall back
                replies = [exc]
        else:
            replies = model.batch([conversations[i] for i in todo], return_exceptions=True,
                                  config={"max_concurrency": max_concurrency} if max_concurrency else None)
        left = []
        for i, reply in zip(todo, replies, strict=True):
            value = None
            if isinstance(reply, Exception):
                log.warning("model call %d/%d failed: %s", attempt, attempts, reply)
            else:
                value = parse(reply)
                if value is None:
                    log.info("model reply %d/%d unusable: %r", attempt, attempts, message_text(reply)[:120])
            results[i] = (value, attempt)
            if value is None:
                left.append(i)
        todo = left
    return results


def ask(model, messages: list, attempts: int, parse: Callable[[Any], Any]) -> tuple[Any, int]:
    """:func:`ask_many` for one conversation: (``parse(reply)`` of the first usable reply or None, calls made)."""
    return ask_many(model, [messages], attempts, parse)[0]


def ask_text(model, messages: list, attempts: int, parse: Callable[[str], Any] | None = None) -> tuple[Any, int]:
    """:func:`ask` on the reply's text: until ``parse(text)`` gives a value (default: the non-empty text).

    Returns (value or None, calls made). An empty reply is unusable; provider errors count as failed attempts.
    """
    parse = parse or (lambda text: text or None)

    def on_text(reply: Any) -> Any:
        text = message_text(reply).strip()
        return parse(text) if text else None

    return ask(model, messages, attempts, on_text)
