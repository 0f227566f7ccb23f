"""How a context field is declared: :func:`knob`, and the fields several graphs share. A leaf module.

A knob carries the description LangGraph Studio shows and its bounds or choices; the contexts themselves are in
graphs/context.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

PROMPT_MAX = 20_000
_NO_DEFAULT: Any = dataclasses.MISSING


def knob(default: Any = _NO_DEFAULT, description: str = "", *, default_factory: Any = _NO_DEFAULT,
         ge: float | None = None, le: float | None = None, choices: tuple[Any, ...] | None = None) -> Any:
    """A context field with a description and optional bounds (numbers, or a string's length) or choices."""
    meta: dict[str, Any] = {"description": description}
    meta.update((key, value) for key, value in (("ge", ge), ("le", le), ("choices", choices)) if value is not None)
    if default_factory is not _NO_DEFAULT:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def agent_knob(what: str = "The agent") -> Any:
    """The ``agent_id`` field every agent context has."""
    return knob("eliza", f"{what}'s id: its memories, ledger and model (scoped to the calling user when served "
                "with API keys).", ge=1, le=128)


def model_knob() -> Any:
    """The ``model`` field: a chat model name, "" for the configured one."""
    return knob("", "Chat model name; empty keeps the configured one (RAGLIGHT_LLM_MODEL).", le=200)


ANSWER_STYLES = ("auto", "generate", "quote")


def answer_style_knob() -> Any:
    """The ``answer_style`` field: who words an answer, the model or the evidence itself."""
    return knob("auto", "Who words the answer: 'generate' (the model writes it and only the sentences the evidence "
                "supports are shown, else the evidence is quoted), 'quote' (the evidence sentences that best answer, "
                "quoted with citations, no model call), or 'auto': generate with an OpenAI-compatible model, quote "
                "with the bundled offline model (whose own sentences were right less often than the quotes; "
                "BENCHMARKS.md).", choices=ANSWER_STYLES)
