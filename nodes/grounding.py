"""Grounding: a generated answer may show only sentences its evidence supports; otherwise the evidence speaks.

Every answer the reasoning graphs and the memory agent give goes through :func:`ground`:

1. The generated text is split into sentences; a sentence that repeats an earlier one (a small model looping) is
   dropped.
2. A sentence is **supported** when all of these hold: its embedding is at least ``threshold`` similar to one
   unit of evidence (a passage, one of its sentences, or a recalled memory), or all its content words occur in
   one of the three units most similar to the question (a short answer such as "Seven days."); at least
   ``min_coverage`` of its content words occur in that unit's source (its passage, or its memory) or the
   question; every name it uses ("StopIteration", `Exception`, ``breakpoint()``) occurs in that source or the
   question; every number in it occurs in the evidence or the question; and it says something the question
   does not (a word or number of its own; not a question). Supported sentences keep a citation of the unit
   that supports them (``[n]`` for passage ``n``).
3. When no sentence is supported, the answer is **extractive**: the evidence sentences that best answer the
   question (nodes.evidence ``best_quotes``), quoted with their citations. With no evidence at all the answer
   says that it does not know.

So an offline model that rambles cannot put a claim in front of the user that the knowledge base (or memory)
does not make. The check is deterministic given the embeddings, and every verdict is returned (``support``) so a
graph can write it into state.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphs.state import message_text
from nodes.citations import normalized, split_sentences
from nodes.evidence import (
    DONT_KNOW,
    Unit,
    best_quotes,
    cited,
    content_words,
    named,
    numbers,
    quoted,
)

log = logging.getLogger(__name__)

Embed = Callable[[list[str]], Any]

# Code, grammar, headings, lead-ins, and a chat template's control tokens leaking into the text ("<|im_start|>").
_NOT_PROSE = re.compile(r"```|\*\*|::=|<\||\|>|^\s*#|^\s*(?:def|class|import|returns?)\b|[{};:]\s*$", re.I)
_ANY_END = re.compile(r"(?<=[.!?])\s+(?=\S)")  # a looping model's sentences need not start with a capital



@dataclass
class Grounded:
    """The grounded answer and how it was made."""

    answer: str
    mode: str  # "generated" (only supported sentences), "extractive" (quoted evidence), or "none"
    cited: list[int] = field(default_factory=list)
    support: list[dict[str, Any]] = field(default_factory=list)

    @property
    def grounded(self) -> bool:
        """Whether any generated sentence survived the check."""
        return self.mode == "generated"


def unique_sentences(text: str) -> list[str]:
    """The sentences of ``text`` in order, each only once (case, spacing and punctuation ignored)."""
    seen: set[str] = set()
    out = []
    pieces = [part.strip() for s in split_sentences(text) for part in _ANY_END.split(s) if part.strip()]
    for sentence in pieces:
        key = normalized(sentence)
        if key and key not in seen:
            seen.add(key)
            out.append(sentence)
    return out


def _unit_vectors(embed: Embed, texts: list[str]) -> np.ndarray:
    vectors = np.asarray(embed(texts), dtype=np.float32)
    if vectors.ndim != 2 or not len(vectors):
        return np.zeros((len(texts), 1), dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def ground(answer: str, question: str, units: Sequence[Unit], embed: Embed, *, threshold: float = 0.6,
           min_coverage: float = 0.75, extract: int = 2, max_chars: int = 400,
           intro: str = "The knowledge base says:", dont_know: str = DONT_KNOW) -> Grounded:
    """Keep the supported sentences of ``answer``, or answer from the evidence itself (see the module docstring).

    Args:
        answer: The generated text (citations and a sources footer are ignored).
        question: What was asked; its words and numbers may be repeated freely.
        units: The evidence.
        embed: ``texts -> vectors`` (the configured embeddings' ``embed_documents``).
        threshold: Least cosine similarity between a sentence and a unit that supports it.
        min_coverage: Least share of a sentence's content words found in the evidence or the question.
        extract: Evidence sentences quoted by an extractive answer.
        max_chars: Longest quote.
        intro: What an extractive answer starts with.
        dont_know: The answer when there is no evidence at all.
    """
    checker = Checker(question, units, embed, threshold=threshold, min_coverage=min_coverage)
    checker.check(unique_sentences(answer))
    return checker.result(extract=extract, max_chars=max_chars, intro=intro, dont_know=dont_know)


class Checker:
    """The grounding check of one question's answer, sentence by sentence (the evidence is embedded once).

    :func:`ground` checks a whole answer; :func:`ground_stream` checks a streamed one as its sentences complete,
    so supported sentences can be shown at once and a model whose sentences fail can be stopped early.
    """

    def __init__(self, question: str, units: Sequence[Unit], embed: Embed, *, threshold: float = 0.6,
                 min_coverage: float = 0.75) -> None:
        self.question, self.embed = question, embed
        self.threshold, self.min_coverage = threshold, min_coverage
        self.units = [u for u in units if u.text.strip()]
        self.kept: list[str] = []
        self.support: list[dict[str, Any]] = []
        self._seen: set[str] = set()
        if not self.units:
            return
        vectors = _unit_vectors(embed, [*(u.full for u in self.units), question])
        self.unit_v, self.q_v = vectors[:-1], vectors[-1]
        self.asked_words, self.asked_numbers = content_words(question), numbers(question)
        self.asked_names = named(question)
        self.unit_words = [content_words(u.full) for u in self.units]
        self.allowed_words = self.asked_words.union(*self.unit_words)
        # What one cited source says (a passage and its sentences, or one memory): a sentence must hold to one.
        self.source_words: dict[str, set[str]] = {}
        self.source_text: dict[str, str] = {}
        for unit, unit_words in zip(self.units, self.unit_words, strict=True):
            self.source_words.setdefault(unit.cite, set()).update(unit_words)
            self.source_text[unit.cite] = self.source_text.get(unit.cite, "") + " " + unit.full.lower()
        self.allowed_numbers = self.asked_numbers.union(*(numbers(u.full) for u in self.units))
        self.relevant = np.zeros(len(self.units), dtype=np.float32)  # the units that best answer the question
        self.relevant[np.argsort(-(self.unit_v @ self.q_v))[:3]] = 1.0

    def new(self, sentence: str) -> bool:
        """Whether ``sentence`` was not seen before in this answer (case, spacing and punctuation ignored)."""
        key = normalized(sentence)
        return bool(key) and key not in self._seen

    def check(self, sentences: Sequence[str]) -> list[str]:
        """Check sentences not seen before; returns the supported ones with their citations (also in ``kept``)."""
        fresh = []
        for sentence in sentences:
            if self.new(sentence):
                self._seen.add(normalized(sentence))
                fresh.append(sentence)
        if not fresh:
            return []
        if not self.units:
            self.support.extend({"sentence": s, "supported": False, "why": "no evidence"} for s in fresh)
            return []
        sims = _unit_vectors(self.embed, fresh) @ self.unit_v.T
        out = []
        for i, sentence in enumerate(fresh):
            entry = self._verdict(sentence, sims[i])
            self.support.append(entry)
            if entry["supported"]:
                out.append(_with_cite(sentence, entry["cite"]))
        self.kept.extend(out)
        return out

    def _verdict(self, sentence: str, sims: np.ndarray) -> dict[str, Any]:
        words = content_words(sentence)
        holds = np.array([bool(words) and words <= w for w in self.unit_words], dtype=np.float32)
        best = int(np.argmax(sims + holds))  # a unit that holds every word of the sentence cites it first
        similarity = float(sims[best])
        cite = self.units[best].cite
        coverage = len(words & (self.source_words[cite] | self.asked_words)) / len(words) if words else 1.0
        missing_numbers = sorted(numbers(sentence) - self.allowed_numbers)
        # Every name it uses ("StopIteration", `Exception`, breakpoint()) is in its source or the question.
        missing_names = sorted(n for n in named(sentence) - self.asked_names if n not in self.source_text[cite])
        new_info = (words - self.asked_words) or (numbers(sentence) - self.asked_numbers)
        # Similar in meaning to one unit, or (a short answer such as "Seven days.") all its words in one of the
        # units that best answer the question. Code, grammar rules and headings are never an answer.
        inside = bool((holds * self.relevant).any())
        prose = not _NOT_PROSE.search(sentence) and bool(words or numbers(sentence))
        ok = ((similarity >= self.threshold or inside) and coverage >= self.min_coverage and not missing_numbers
              and not missing_names and bool(new_info) and prose and "?" not in sentence)
        why = ("supported" if ok else "not similar enough to any evidence" if similarity < self.threshold
               else f"numbers not in the evidence: {', '.join(missing_numbers)}" if missing_numbers
               else f"names not in its source: {', '.join(missing_names)}" if missing_names
               else "words not in the evidence" if coverage < self.min_coverage
               else "not a sentence of prose" if not prose
               else "adds nothing to the question")
        return {"sentence": sentence, "similarity": round(similarity, 4), "coverage": round(coverage, 3),
                "supported": ok, "why": why, "cite": cite}

    def result(self, *, extract: int = 2, max_chars: int = 400, intro: str = "The knowledge base says:",
               dont_know: str = DONT_KNOW) -> Grounded:
        """The grounded answer: the supported sentences, else quotes of the evidence, else "I don't know"."""
        if not self.units:
            return Grounded(dont_know, "none", support=self.support)
        if self.kept:
            return Grounded(" ".join(self.kept), "generated",
                            cited(s["cite"] for s in self.support if s["supported"]), self.support)
        chosen = best_quotes(self.question, self.units, self.unit_v, self.q_v, extract, max_chars)
        return Grounded(f"{intro} {quoted(chosen, max_chars)}", "extractive", cited(u.cite for u in chosen),
                        self.support)


_BOUNDARY = re.compile(r"(?<=[.!?])\s+(?=\S)")


def ground_stream(pieces: Iterable[str], checker: Checker, emit: Callable[[str], None], *,
                  clean: Callable[[str], str] = lambda text: text, max_unsupported: int = 2) -> bool:
    """Check a streamed answer sentence by sentence; ``emit`` each supported sentence as soon as it is checked.

    Stops reading ``pieces`` (closing it, which stops a streaming model) when the model repeats a sentence (it
    loops) or when ``max_unsupported`` of its sentences failed the check. Returns whether any text came.
    """
    buffer, came, failed = "", False, 0

    def take(text: str) -> bool:
        """Check the complete sentences in ``text``; False when the model should be stopped."""
        nonlocal failed
        sentences = unique_sentences(clean(text))
        looping = any(not checker.new(s) for s in sentences)
        before = len(checker.support)
        for sentence in checker.check(sentences):
            emit(sentence)
        failed += sum(1 for s in checker.support[before:] if not s["supported"])
        return not looping and failed < max(1, max_unsupported)

    try:
        for piece in pieces:
            if not piece:
                continue
            came = True
            buffer += piece
            ends = list(_BOUNDARY.finditer(buffer))
            if not ends:
                continue
            done, buffer = buffer[: ends[-1].start()], buffer[ends[-1].end():]
            if not take(done):
                return came
        if buffer.strip():
            take(buffer)
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
    return came


def stream_checked(model: Any, messages: list, checker: Checker, emit: Callable[[str], None], *, attempts: int,
                   clean: Callable[[str], str] = lambda text: text, max_unsupported: int = 2) -> None:
    """Stream the model's reply through ``checker`` (:func:`ground_stream`).

    A reply that brought no sentence (empty, or the provider failed first) is retried up to ``attempts`` calls.
    """
    for attempt in range(1, max(1, int(attempts)) + 1):
        try:
            ground_stream((message_text(chunk) for chunk in model.stream(messages)), checker, emit,
                          clean=clean, max_unsupported=max_unsupported)
        except Exception as exc:  # noqa: BLE001 - any provider failure is a failed attempt
            log.warning("model call %d/%d failed: %s", attempt, attempts, exc)
        if checker.support:
            return
        log.info("model reply %d/%d brought no sentence", attempt, attempts)


def _with_cite(sentence: str, cite: str) -> str:
    """``The sentence [n].``: a passage's citation before the closing punctuation (memories are not cited)."""
    if not cite.startswith("["):
        return sentence
    body, end = (sentence[:-1], sentence[-1]) if sentence[-1:] in ".!?" else (sentence, ".")
    return f"{body.rstrip()} {cite}{end}"


def stream_answer(runtime: Any, text: str) -> None:
    """Stream a (grounded) answer word by word on the run's ``custom`` stream as ``{"token": ...}`` chunks."""
    writer = getattr(runtime, "stream_writer", None)
    if writer is None:
        return
    for piece in re.findall(r"\S+\s*", text):
        writer({"token": piece})


def hidden(model: Any) -> Any:
    """The model with its tokens kept off the ``messages`` stream: only the grounded answer is streamed."""
    from langgraph.constants import TAG_NOSTREAM

    return model.with_config(tags=[TAG_NOSTREAM])
