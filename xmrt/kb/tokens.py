"""The BM25 index's tokenizer: words, code identifiers split at case changes and underscores, stopwords."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

#: English stopwords, dropped only by ``Tokenizer(stopwords=True)`` (a common IR list, ~120 words).
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
    nor not now of off on once only or other our ours ourselves out over own same she should so some such than
    that the their theirs them themselves then there these they this those through to too under until up very
    was we were what when where which while who whom why will with would you your yours yourself yourselves""".split()
)

_WORD = re.compile(r"\w+", re.UNICODE)


def _camel_parts(piece: str) -> list[str]:
    """Split at lower->upper transitions and before the last capital of an acronym: ``XMLHttpRequest``."""
    parts: list[str] = []
    start = 0
    for i in range(1, len(piece)):
        prev, cur = piece[i - 1], piece[i]
        nxt = piece[i + 1] if i + 1 < len(piece) else ""
        if (prev.islower() or prev.isdigit()) and cur.isupper() or prev.isupper() and cur.isupper() and nxt.islower():
            parts.append(piece[start:i])
            start = i
    parts.append(piece[start:])
    return parts


def _split_identifier(word: str) -> list[str]:
    """``get_HTTPResponse`` -> ``get``, ``http``, ``response``; a plain word stays whole; ``__init__`` -> ``init``."""
    out: list[str] = []
    for piece in word.split("_"):
        if not piece:
            continue
        if piece.islower() or piece.isupper() or piece[1:].islower() or not piece.isalnum():
            out.append(piece.lower())
        else:
            out.extend(p.lower() for p in _camel_parts(piece))
    return out


@dataclass(frozen=True)
class Tokenizer:
    r"""Turns text into BM25 terms.

    NFKC-normalise, split on Unicode word characters (``\w+``), split identifiers written in snake_case or
    camelCase into their words (so ``get_embeddings`` and ``getEmbeddings`` both match "get embeddings"),
    lowercase, and optionally drop English stopwords.
    """

    stopwords: bool = False

    @property
    def spec(self) -> str:
        """A string naming this tokenizer; an index built with another spec must be rebuilt."""
        return f"nfkc-w+-idsplit-lower{'-stop1' if self.stopwords else ''}"

    def __call__(self, text: str) -> list[str]:
        """Split ``text`` into terms."""
        terms = [t for w in _WORD.findall(unicodedata.normalize("NFKC", text)) for t in _split_identifier(w)]
        if self.stopwords:
            return [t for t in terms if t not in STOPWORDS]
        return terms


DEFAULT_TOKENIZER = Tokenizer()
TOKENIZER_SPEC = DEFAULT_TOKENIZER.spec
