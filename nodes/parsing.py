"""Parsing untrusted model output: step lists, single-text replies and JSON-ish wrappers. Pure; never raises.

Each parser returns ``None`` when the reply is unusable, so the calling node can retry and then fall back.
"""

from __future__ import annotations

import json
import re
from typing import Any

from nodes.citations import split_sentences
from xmrt.llm.tools import FENCE

_ITEM = re.compile(r"^\s*(?:(?:step\s*)?\d{1,2}\s*[.):-]\s+|[-*•]\s+|step\s*\d{1,2}\s*[.):-]?\s*)(?=\S)", re.I)
_TEXT_KEYS = ("revised_step", "revised", "step", "question", "standalone_question", "answer", "text", "content")
_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:revised\s+step(?:\s*\d+)?|step\s*\d+|standalone\s+question|rewritten\s+question|"
    r"question|answer|revision)\s*(?:\*\*)?\s*[:.)-]\s*",
    re.I,
)


def _unfence(text: str) -> str:
    text = text.strip()
    match = FENCE.match(text)
    return match.group(1).strip() if match else text


def _json_value(text: str) -> tuple[bool, Any]:
    """(looks like JSON, decoded value or None). A reply starting with { or [ that does not decode is broken."""
    body = _unfence(text)
    if not body or body[0] not in "{[":
        return False, None
    if body[0] == "[" and not body[1:].lstrip().startswith(("{", "[", '"', "]")):
        return False, None  # "[1] some text" is text with a citation, not JSON
    try:
        value, _end = json.JSONDecoder().raw_decode(body)
    except ValueError:
        return True, None
    return True, value


def _text_in(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, dict):
        for key in _TEXT_KEYS:
            if isinstance(value.get(key), str) and value[key].strip():
                return value[key].strip()
        strings = [v for v in value.values() if isinstance(v, str) and v.strip()]
        return strings[0].strip() if len(strings) == 1 else None
    return None


def parse_steps(text: str, max_steps: int) -> list[str] | None:
    """Steps of a numbered or bulleted list (or a JSON list / ``{"steps": [...]}``); None if there is none.

    Lines that follow an item without a marker of their own continue that item. Text before the first item
    (an introduction) is ignored. At most ``max_steps`` steps are kept.
    """
    looks_json, value = _json_value(text or "")
    if looks_json:
        if isinstance(value, dict):
            value = value.get("steps")
        if isinstance(value, list):
            steps = [s for s in (_text_in(v) for v in value) if s]
            return [" ".join(s.split()) for s in steps][:max_steps] or None
        return None
    steps: list[str] = []
    for line in _unfence(text or "").splitlines():
        if not line.strip():
            continue
        match = _ITEM.match(line)
        if match:
            steps.append(_strip_markers(line))
        elif steps:
            steps[-1] = f"{steps[-1]} {line.strip()}"
    steps = [" ".join(s.split()) for s in steps if any(c.isalnum() for c in s)]
    return steps[:max_steps] or None


def _strip_markers(line: str) -> str:
    """A list item without its markers; small models repeat them ("1. 1. Find ...")."""
    for _ in range(3):
        match = _ITEM.match(line)
        if not match:
            break
        line = line[match.end() :]
    return line.strip()


def sentence_steps(text: str, max_steps: int) -> list[str]:
    """The deterministic fallback for a draft that is not a list: its sentences are the steps."""
    return split_sentences(text)[:max_steps]


def parse_text_reply(text: str, max_chars: int = 2000) -> str | None:
    """A single piece of text (a revised step, a rewritten question): labels, quotes and JSON wrappers removed.

    Returns None for an empty reply, or a reply that starts like JSON but does not decode to text.
    The result is cut to ``max_chars`` at a sentence end when possible.
    """
    looks_json, value = _json_value(text or "")
    if looks_json:
        found = _text_in(value)
        if found is None:
            return None
        text = found
    text = _unfence(text or "")
    text = _strip_markers(_LABEL.sub("", text, count=1).strip())
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    text = " ".join(text.split())
    if not any(c.isalnum() for c in text):
        return None
    if len(text) > max_chars:
        cut = text[:max_chars]
        end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
        text = cut[: end + 1] if end > max_chars // 3 else cut.rstrip() + "…"
    return text


def first_line(text: str) -> str:
    """The first non-empty line of a text."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""
