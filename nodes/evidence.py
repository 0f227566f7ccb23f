"""Evidence for grounded answers: the sentences of passages and memories, and the ones that best answer a question.

A document's text is read as a reader would: hard-wrapped lines of a paragraph are joined; a lead-in that ends
with a colon keeps the short code block it introduces (``is equivalent to: if __debug__: ...``) and the words
that continue it after the block; a sentence that opens with a pronoun ("It must be ...") carries the sentence
before it, which says what "it" is. :func:`best_quotes` picks the evidence sentences that best answer a
question: similar in meaning, sharing its words, and naming something the question does not.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import numpy as np

from nodes.citations import normalized, shorten, split_sentences

#: Words that carry no claim (function words, and the conversational words an assistant adds around a fact).
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers him
his how i if in into is it its itself just let like may me might more most must my no nor not now of off on once only
or other our ours out over own same shall she should so some such than that the their theirs them then there these
they this those through to too under until up upon very was we were what when where which while who whom why will
with would yes yet you your yours according based says said say answer question passage passages knowledge base
source sources context information given provided text document documents mentioned stated states also however
therefore thus hello hi thanks thank please sure okay ok noted remember remembered note told tell help glad happy
""".split())
_WORD = re.compile(r"[a-z0-9]+")
_NUMBER = re.compile(r"\d[\d,.]*\d|\d")
_NOT_QUOTABLE = re.compile(r"```|::=|^\s*#|[{}:]\s*$|[{}=].*;\s*$")  # code, grammar, headings, lead-ins
_TWO_PARTS = re.compile(r"\?.*\S.*\?|\b(?:and|or)\s+(?:who|whom|what|when|where|which|why|how)\b", re.I | re.S)
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*\s*$")
_RULE = re.compile(r"[*=~^#`_-]{3,}")  # heading underlines and rules of Markdown / reStructuredText
_LIST_START = re.compile(r"^(?:[-*•]|\d+[.)])\s")
# A sentence that says what it is about only with the one before it: a pronoun, or a connective ("Thus", "In
# either case").
_PRONOUN = re.compile(r"^(?:it|its|this|these|they|their|them|that|those|such|he|she|his|her|thus|hence|therefore|"
                      r"otherwise|then|so|in (?:either|both|that|this|such|each) cases?)\b", re.I)
# Names an answer is made of: quoted terms, CamelCase and dotted names, dunders, calls, options, numbers.
_NAMED = re.compile(r"\"[^\"\s][^\"]{0,40}\"|“[^”]{1,40}”|`[^`]{1,40}`|\b[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+\b"
                    r"|\b_{1,2}\w+_{0,2}\b|\b\w+\(\)|(?<![\w-])--?[A-Za-z][\w-]*|\b\d[\d.,]*\b")
_FOOTNOTE = re.compile(r"(?<=[.!?])\s*\[\d+\](?=\s|$)")  # "... the object. [1]  Here ..."
_QUESTION = re.compile(r"\?[\"'”’)\]]*\s*$")
_SPELLED_OUT = re.compile(r"\b(?:stands?\s+for|short\s+for|abbreviat\w*|acronym|expan\w*)\b", re.I)
_SHORT_CODE = 160  # characters of a code block kept with the lead-in that introduces it
DONT_KNOW = "I don't know: nothing in the knowledge base answers this."


def content_words(text: str) -> set[str]:
    """Lower-cased content words of a text, inflections folded (``votes``, ``voted``, ``voting`` -> ``vot``)."""
    out = set()
    for word in _WORD.findall((text or "").lower()):
        if word in STOPWORDS or (len(word) < 3 and not word.isdigit()):
            continue
        out.add(stem(word))
    return out


def stem(word: str) -> str:
    """A light suffix stripper: one of -ing, -ed, -es, -s, then a final -e (``raised``, ``raises`` -> ``rais``)."""
    if word.isdigit():
        return word
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and not word.endswith("ss") and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:-1] if word.endswith("e") and len(word) >= 4 else word


def numbers(text: str) -> set[str]:
    """The numbers in a text, without thousands separators or trailing dots (``1,200.`` -> ``1200``)."""
    return {n.replace(",", "").rstrip(".") for n in _NUMBER.findall(text or "")}


@dataclass
class Unit:
    """One piece of evidence: its text and the citation it gives (``[n]``, or a label such as ``memory``)."""

    text: str
    cite: str
    whole: bool = False  # a whole passage (quoted only when it is a single sentence)
    topic: str = ""  # what the text is about when it does not say (its heading or document); matched, not quoted

    @property
    def full(self) -> str:
        """The text with its topic: what is embedded and matched against a question."""
        return f"{self.topic}: {self.text}" if self.topic else self.text


def _paragraphs(text: str) -> list[tuple[str, list[str]]]:
    """(kind, lines) per paragraph, kind "code" (fenced or indented), "heading" or "prose"; rules dropped."""
    out: list[tuple[str, list[str]]] = []
    fenced = False
    for paragraph in re.split(r"\n\s*\n", text or ""):
        raw = [ln for ln in paragraph.splitlines() if ln.strip()]
        if not raw:
            continue
        fence = raw[0].lstrip().startswith("```")
        code = fenced or fence or all(ln[:1] in (" ", "\t") for ln in raw)
        if fence or fenced:
            fenced = (sum(ln.count("```") for ln in raw) % 2 == 1) != fenced
        lines = [ln.strip() for ln in raw if not _RULE.fullmatch(ln.strip()) and not ln.strip().startswith("```")]
        if not code and len(lines) > 1 and lines[0].startswith("#"):  # "# Title" with its text on the next line
            out.append(("heading", lines[:1]))
            lines = lines[1:]
        heading = (not code and len(lines) == 1 and len(lines[0].split()) <= 12
                   and (lines[0].startswith("#") or len(raw) == 2 and bool(_RULE.fullmatch(raw[1].strip()))))
        if lines:
            out.append(("code" if code else "heading" if heading else "prose", lines))
    return out


def _sentences(lines: list[str]) -> list[str]:
    lines = [_FOOTNOTE.sub("", ln) for ln in lines]
    if any(_LIST_START.match(ln) for ln in lines[1:]):  # a list: one item a line
        return split_sentences("\n".join(lines))
    return split_sentences(" ".join(lines))


def prose_sentences(text: str) -> list[str]:
    """The sentences of a document's text, each readable on its own (see the module docstring)."""
    return [sentence for _topic, sentence in evidence_sentences(text)]


def evidence_sentences(text: str, topic: str = "") -> list[tuple[str, str]]:
    """(topic, sentence) for each sentence of a text.

    The topic is the heading above the sentence (else ``topic``) when the sentence does not name it ("# Unix" ...
    "An interactive time-sharing operating system invented in 1969 by Ken Thompson").
    """
    out: list[tuple[str, str]] = []
    lead, has_code = None, False  # a sentence that introduces a block ("is equivalent to"), with its short blocks

    def add(sentence: str) -> None:
        named_topic = topic and content_words(topic) <= content_words(sentence)
        out.append(("" if named_topic else topic, sentence))

    for kind, lines in _paragraphs(text):
        joined = " ".join(lines)
        if kind == "code":
            if lead is not None and len(joined) <= _SHORT_CODE:
                lead, has_code = f"{lead} {joined}", True
            else:
                if has_code:
                    add(lead)
                lead, has_code = None, False
            continue
        if lead is not None and has_code and joined.endswith(":") and len(joined.split()) <= 3:
            lead = f"{lead} {joined}"  # "Or:" introduces another block of the same lead-in
            continue
        sentences = _sentences(lines)
        if has_code:
            if sentences and sentences[0][:1].islower():  # the lead-in goes on after its blocks
                sentences[0] = f"{lead} {sentences[0]}"
            else:
                add(lead)
        lead, has_code = None, False
        if kind == "heading":
            topic = joined.lstrip("#").strip()
            out.append(("", topic))
            continue
        for i, sentence in enumerate(sentences):
            before = sentences[i - 1] if i else (out[-1][1] if out and _joinable(out[-1][1]) else "")
            if before and _PRONOUN.match(sentence):  # across a paragraph too: "The Ellipsis Object: This object"
                sentence = f"{before} {sentence}" if _SENTENCE_END.search(before) else f"{before}: {sentence}"
            add(sentence)
        if sentences and not _SENTENCE_END.search(sentences[-1]):
            lead = out[-1][1]  # ends with a colon or in mid-sentence: a block follows
    if has_code:
        add(lead)
    return [(t, s) for t, s in out if not _RULE.search(s)]


def _joinable(before: str) -> bool:
    """Whether the last sentence of a paragraph can say what the next paragraph's "This ..." is.

    A sentence or a heading (a short line without a colon) can; a lead-in, with or without its block, cannot.
    """
    return bool(_SENTENCE_END.search(before)) or (len(before.split()) <= 8 and not before.endswith((":", ";")))


def passage_units(passages: Sequence[dict[str, Any]]) -> list[Unit]:
    """Each passage, and each of its sentences, as evidence citing ``[n]``."""
    units: list[Unit] = []
    for p in passages:
        cite = f"[{p['n']}]"
        whole = " ".join(_RULE.sub(" ", p.get("text") or "").split())
        sentences = evidence_sentences(p.get("text") or "", document_topic(p.get("path")))
        if whole:
            units.append(Unit(whole, cite, whole=len(sentences) > 1))
        units.extend(Unit(s, cite, topic=topic) for topic, s in sentences)
    return units


def document_topic(path: str | None) -> str:
    """What a document's name says it is about: ``docs/Turing_Machine.md`` -> ``Turing Machine``."""
    if not path or "://" in path:
        return ""
    stem = PurePath(path).stem
    return "" if stem.lower() in ("readme", "index", "__init__") else " ".join(re.split(r"[_\-\s]+", stem)).strip()


def expands(acronym: str, text: str) -> bool:
    """Whether ``text`` spells ``acronym`` out in capitalised words ("Beginner's All-purpose ..." for BASIC)."""
    return len(acronym) >= 3 and acronym.upper() in "".join(w[0] for w in re.findall(r"[A-Za-z][\w'-]*", text))


def named(text: str) -> set[str]:
    """The names in a text an answer is made of (quoted terms, CamelCase, calls, options, numbers), lower-cased."""
    return {m.strip('"“”`').lower() for m in _NAMED.findall(text or "")}


def best_quotes(question: str, units: Sequence[Unit], unit_v: np.ndarray, q_v: np.ndarray, extract: int = 2,
                max_chars: int = 400) -> list[Unit]:
    """The evidence sentences that best answer ``question``, best first (``unit_v``/``q_v``: unit embeddings).

    A sentence scores its embedding similarity to the question, plus half the share of the question's content
    words it holds, plus a little when it names something the question does not (an answer names its answer).
    """
    unit_names = [{stem(n) for n in named(u.full)} for u in units]
    unit_words = [content_words(u.full) for u in units]
    # The question's words, and its function words that the evidence quotes as names ("while", "pass").
    keywords = {stem(w) for w in _WORD.findall(question.lower())} & set().union(*unit_names)
    wanted = content_words(question) | keywords
    asked = {stem(n) for n in named(question)} | wanted
    scored = []
    quotable = [i for i, u in enumerate(units) if not u.whole and not _NOT_QUOTABLE.search(u.text)
                and not _QUESTION.search(u.text)  # a question is no answer, nor is a heading
                and (_SENTENCE_END.search(u.text) or len(u.text.split()) >= 8)]
    acronyms = set(re.findall(r"\b[A-Z]{3,}\b", question)) if _SPELLED_OUT.search(question) else set()
    for i in quotable or range(len(units)):
        unit = units[i]
        words = unit_words[i] | (unit_names[i] & keywords)
        overlap = len(words & wanted) / len(wanted) if wanted else 0.0
        brevity = 0.05 if len(unit.text) > max_chars else 0.0  # prefer a sentence to a whole passage
        names = 0.05 if unit_names[i] - asked else 0.0
        names += 0.3 if acronyms and any(expands(a, unit.text) for a in acronyms) else 0.0  # "What does X stand for"
        scored.append((float(unit_v[i] @ q_v) + 0.5 * overlap + names - brevity, i))
    chosen, seen, covered = [], set(), set()
    two_parts = bool(_TWO_PARTS.search(question))
    ranked = sorted(scored, reverse=True)
    # A further quote when it answers nearly as well, or when it holds words of the question the quotes so far
    # lack (a question of two parts) and still answers reasonably well.
    floor = ranked[0][0] - 0.15 if ranked else 0.0
    for score, i in ranked:
        words = (unit_words[i] | unit_names[i]) & wanted
        if chosen and score < floor and not (two_parts and words - covered and score >= floor - 0.25):
            continue
        key = normalized(units[i].text)
        if any(key in s for s in seen):  # says nothing a chosen quote does not
            continue
        seen.add(key)
        covered |= words
        longer = [j for j, c in enumerate(chosen) if normalized(c.text) in key]
        if longer:  # the same sentence with the one it depends on ("... not allowed. This is for ...")
            chosen[longer[0]] = units[i]
            for j in reversed(longer[1:]):
                del chosen[j]
            continue
        chosen.append(units[i])
        if len(chosen) >= max(1, extract):
            break
    return chosen


def quoted(units: Sequence[Unit], max_chars: int = 400) -> str:
    """Units as quotes with their citations: ``“…” [n]``, or ``“…” (memory)``."""
    return " ".join(f"“{shorten(u.text, max_chars)}” {u.cite}" if u.cite.startswith("[")
                    else f"“{shorten(u.text, max_chars)}” ({u.cite})" for u in units)


def cited(cites) -> list[int]:
    """The passage numbers of ``[n]`` citations, each once, in order (memories are not numbered)."""
    out: list[int] = []
    for cite in cites:
        match = re.fullmatch(r"\[(\d+)\]", cite or "")
        if match and int(match.group(1)) not in out:
            out.append(int(match.group(1)))
    return out


