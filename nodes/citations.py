"""Passages, citations and fallbacks shared by the reasoning graphs (pure functions, no I/O).

A *passage* is a retrieved chunk as a plain dict (it lives in graph state, so it must serialize)::

    {"n": 1, "id": "...", "path": "docs/guide.md", "start_line": 3, "text": "...",
     "score": 0.91, "similarity": 0.62}

``n`` is the number the model cites as ``[n]``. Sources given back to callers are passages without
their text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

_CITATION = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z])")
_LIST_MARK = re.compile(r"^\s*(?:[-*•]|\d+[.)]|step\s*\d+\s*[:.)-]?)\s*", re.I)
_SPACES = re.compile(r"\s+")
SOURCES_HEADING = "Sources:"


def number_passages(passages: Iterable[dict[str, Any]], start: int = 1) -> list[dict[str, Any]]:
    """Copies of the passages numbered ``start``, ``start + 1``, ... in order."""
    return [{**p, "n": i} for i, p in enumerate(passages, start)]


def format_passages(passages: Sequence[dict[str, Any]], max_chars: int = 700) -> str:
    """Passages as a prompt block: ``[n] (path) text``, each text cut to ``max_chars``."""
    if not passages:
        return "(no passages)"
    return "\n\n".join(f"[{p['n']}] ({source_label(p)}) {shorten(p.get('text', ''), max_chars)}" for p in passages)


def source_label(passage: dict[str, Any]) -> str:
    """``path`` or ``path:line`` of a passage."""
    path = passage.get("path") or "unknown"
    line = passage.get("start_line")
    return f"{path}:{line}" if line not in (None, "", 0) else str(path)


def shorten(text: str, max_chars: int) -> str:
    """``text`` with whitespace collapsed, cut at a word boundary to at most ``max_chars`` characters."""
    text = _SPACES.sub(" ", text or "").strip()
    if len(text) <= max_chars:
        return text
    cut = text[: max(1, max_chars - 1)]
    if " " in cut[len(cut) // 2 :]:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip() + "…"


def clean_citations(text: str, valid: Iterable[int]) -> tuple[str, list[int]]:
    """Drop citation numbers that name no passage; returns the text and the valid numbers cited, in order.

    ``[2, 9]`` with passages 1..3 becomes ``[2]``; ``[9]`` disappears entirely.
    """
    allowed = set(valid)
    cited: list[int] = []

    def keep(match: re.Match) -> str:
        nums = [int(x) for x in re.split(r"\s*[,;]\s*", match.group(1))]
        good = [n for n in nums if n in allowed]
        for n in good:
            if n not in cited:
                cited.append(n)
        return "[" + ", ".join(map(str, good)) + "]" if good else ""

    cleaned = _CITATION.sub(keep, text)
    cleaned = re.sub(r"[ \t]+([.,;:!?])", r"\1", cleaned)
    cleaned = re.sub(r"[ \t]{2,}", " ", cleaned)
    return cleaned.strip(), cited


def sources_of(passages: Sequence[dict[str, Any]], cited: Iterable[int] = ()) -> list[dict[str, Any]]:
    """Passages without their text, for callers: ``n``, ``path``, ``start_line``, scores, ``cited``."""
    cited_set = set(cited)
    out = []
    for p in passages:
        item = {k: p.get(k) for k in ("n", "path", "start_line", "score", "similarity", "id")}
        item["cited"] = p.get("n") in cited_set
        out.append(item)
    return out


def sources_footer(sources: Sequence[dict[str, Any]]) -> str:
    """``Sources:`` followed by one ``[n] path:line`` line per source ("" without sources)."""
    if not sources:
        return ""
    return SOURCES_HEADING + "\n" + "\n".join(f"[{s['n']}] {source_label(s)}" for s in sources)


def with_footer(answer: str, sources: Sequence[dict[str, Any]]) -> str:
    """The answer followed by a blank line and its sources footer."""
    footer = sources_footer(sources)
    return f"{answer.rstrip()}\n\n{footer}" if footer else answer.rstrip()


def strip_footer(text: str) -> str:
    """The answer without a trailing ``Sources:`` footer."""
    idx = text.rfind("\n" + SOURCES_HEADING)
    return text[:idx].rstrip() if idx >= 0 else text.strip()


def split_sentences(text: str) -> list[str]:
    """Sentences of a text: split on line breaks, list markers and sentence ends; citations removed."""
    out: list[str] = []
    for line in (text or "").splitlines():
        line = _LIST_MARK.sub("", line).strip()
        if not line:
            continue
        for part in _SENTENCE_END.split(line):
            part = _CITATION.sub("", part)
            part = re.sub(r"\s+([.,;:!?])", r"\1", _SPACES.sub(" ", part)).strip(" -*•")
            if sum(c.isalnum() for c in part) >= 3:
                out.append(part)
    return out


def normalized(text: str) -> str:
    """Lower-case words only: two texts equal under this differ only in case, spacing or punctuation."""
    return " ".join(re.findall(r"[a-z0-9]+", (text or "").lower()))
