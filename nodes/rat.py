"""The RAT graph's nodes (graphs/rat.py; Retrieval-Augmented Thoughts, Wang et al. 2024): draft, revise, answer.

* ``draft``: a step-by-step draft. A reply that is not a step list is retried; then its sentences become the
  steps; with no usable reply at all the question itself is the one step.
* ``retrieve_for_step`` searches with the question plus the step under revision.
* ``revise_step``: the model revises that step against the retrieved passages and the reflection (query,
  sources, before, after, changed) is recorded. A step with no relevant passages, or whose revision is
  unusable after the retries, stays as it was.
* ``route_after_revision``: the loop passes over the draft step by step. It ends after ``reflection_steps``
  passes (a bound written into state as ``max_reflections``), or early after a pass in which no revision
  changed the draft.
* ``answer``: the final answer from the revised steps; an empty reply falls back to the steps themselves.
* ``score_confidence``: the share of answer sentences supported by a retrieved passage (embedding similarity
  at least ``support_threshold``). Computed, never a constant.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

import numpy as np
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from graphs.context import RatContext, context_of
from graphs.state import loop_cap
from nodes.citations import (
    clean_citations,
    format_passages,
    normalized,
    sources_of,
    split_sentences,
    strip_footer,
    with_footer,
)
from nodes.evidence import passage_units
from nodes.grounding import ground, hidden, stream_answer
from nodes.models import ask_text, bounded_model
from nodes.parsing import parse_steps, parse_text_reply, sentence_steps
from nodes.retrieval import embedder, search_passages
from xmrt import services

log = logging.getLogger(__name__)

_CITE = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
#: Supersteps of a run besides the reflection loop (draft, answer, score_confidence) plus one spare.
_FIXED_SUPERSTEPS = 4


def _embed(ctx: Any, texts: list[str]) -> np.ndarray:
    """Unit-length embeddings of ``texts`` with the configured model."""
    vectors = np.asarray(services.embeddings().embed_documents(texts), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def draft(state: dict[str, Any], runtime: Runtime, config: RunnableConfig) -> dict[str, Any]:
    """Draft a step-by-step answer and reset the previous question's loop state."""
    ctx = context_of(runtime, RatContext)
    question = (state.get("question") or "").strip()
    reset: dict[str, Any] = {"question": question, "reflection_count": -int(state.get("reflection_count") or 0),
                             "reflections": [], "evidence": [], "step_passages": [], "step_retrieval": {},
                             "fallbacks": [], "final_response": "", "generated_answer": "", "sources": [],
                             "confidence": 0.0, "support": []}
    if not question:
        return {**reset, "steps": [], "draft": [], "max_reflections": 0}
    max_steps = max(1, int(ctx.max_steps))
    prompt = [SystemMessage(ctx.draft_prompt.format(max_steps=max_steps)), HumanMessage(question)]
    seen: list[str] = []

    def parse(text: str) -> list[str] | None:
        seen.append(text)
        return parse_steps(text, max_steps)

    steps, _calls = ask_text(bounded_model(ctx), prompt, ctx.max_attempts, parse)
    fallbacks: list[str] = []
    if steps is None:
        last = next((t for t in reversed(seen) if t.strip()), "")
        steps = sentence_steps(last, max_steps) or [question]
        fallbacks.append("draft: not a step list, used its sentences" if last.strip()
                         else "draft: no reply, the question is the only step")
    budget = max(0, int(ctx.reflection_steps)) * len(steps)
    cap = loop_cap(config, _FIXED_SUPERSTEPS)
    if cap is not None and cap < budget:
        log.warning("recursion limit allows %d of %d reflections", cap, budget)
        budget = cap
    return {**reset, "steps": steps, "draft": list(steps), "max_reflections": budget, "fallbacks": fallbacks}


def retrieve_for_step(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Search with the question plus the step under revision."""
    ctx = context_of(runtime, RatContext)
    steps = state["steps"]
    index = state.get("reflection_count", 0) % len(steps)
    query = f"{state['question']} {steps[index]}".strip()
    info = search_passages(services.config(), ctx.collection, query, k=ctx.k, mode=ctx.search_mode,
                           min_similarity=ctx.min_similarity, relevance_ratio=ctx.relevance_ratio)
    passages = info.pop("passages")
    return {"step_passages": passages, "step_retrieval": info}


def route_after_draft(state: dict[str, Any]) -> Literal["retrieve_for_step", "answer"]:
    """Reflect when there is a step and a budget for it."""
    return "retrieve_for_step" if state.get("steps") and state.get("max_reflections", 0) > 0 else "answer"


def _renumber(text: str, mapping: dict[int, int]) -> str:
    """Rewrite the step-local citation numbers of a revision to the run's evidence numbers (unknown ones go)."""

    def sub(match: re.Match) -> str:
        nums = [mapping[int(n)] for n in re.split(r"\s*[,;]\s*", match.group(1)) if int(n) in mapping]
        return "[" + ", ".join(map(str, dict.fromkeys(nums))) + "]" if nums else ""

    return " ".join(_CITE.sub(sub, text).split())


def _merge_evidence(evidence: list[dict[str, Any]], passages: list[dict[str, Any]]) -> tuple[list, dict[int, int]]:
    """Add new passages to the evidence (numbered on), returning it and the step-local -> evidence numbers."""
    merged = list(evidence)
    by_id = {p["id"]: p["n"] for p in merged}
    mapping: dict[int, int] = {}
    for p in passages:
        if p["id"] not in by_id:
            by_id[p["id"]] = len(merged) + 1
            merged.append({**p, "n": by_id[p["id"]]})
        mapping[p["n"]] = by_id[p["id"]]
    return merged, mapping


def revise_step(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Revise the current step against its passages and record the reflection."""
    ctx = context_of(runtime, RatContext)
    steps = list(state["steps"])
    done = int(state.get("reflection_count") or 0)
    index = done % len(steps)
    before = steps[index]
    passages = state.get("step_passages") or []
    info = state.get("step_retrieval") or {}
    evidence, mapping = _merge_evidence(state.get("evidence") or [], passages)
    note = None
    after = before
    if not passages:
        note = "no relevant passages" + (f" ({info['error']})" if info.get("error") else "")
    else:
        prompt = [SystemMessage(ctx.revise_prompt), HumanMessage(
            f"Question: {state['question']}\n\nPassages:\n{format_passages(passages, ctx.max_passage_chars)}\n\n"
            f"Step {index + 1}: {before}\n\nRevised step {index + 1}:")]
        limit = max(400, 3 * len(before))
        revised, _calls = ask_text(bounded_model(ctx), prompt, ctx.max_attempts,
                                   lambda text: parse_text_reply(text, max_chars=limit))
        if revised is None:
            note = "revision unusable, step kept"
        else:
            after = _renumber(revised, mapping) or before
    changed = _changed(ctx, before, after)
    steps[index] = after
    reflection = {
        "round": done // len(steps) + 1,
        "step": index + 1,
        "query": info.get("query", ""),
        "sources": [{"n": mapping[p["n"]], "path": p["path"], "start_line": p.get("start_line"),
                     "similarity": p.get("similarity")} for p in passages],
        "before": before,
        "after": after,
        "changed": changed,
    }
    if note:
        reflection["note"] = note
    update: dict[str, Any] = {"steps": steps, "reflections": [*(state.get("reflections") or []), reflection],
                              "evidence": evidence, "reflection_count": 1}
    if note and note.startswith("revision unusable"):
        update["fallbacks"] = [*(state.get("fallbacks") or []), f"revise step {index + 1}: kept the step"]
    return update


def _changed(ctx: RatContext, before: str, after: str) -> bool:
    """Whether a revision changed the step: different words, and not a near-identical paraphrase."""
    if normalized(before) == normalized(after):
        return False
    vectors = _embed(ctx, [before, after])
    return float(vectors[0] @ vectors[1]) < ctx.unchanged_similarity


def route_after_revision(state: dict[str, Any]) -> Literal["retrieve_for_step", "answer"]:
    """Next step, or the answer: when the budget is spent, or a whole pass over the draft changed nothing."""
    n = len(state.get("steps") or [])
    done = int(state.get("reflection_count") or 0)
    if n == 0 or done >= int(state.get("max_reflections") or 0):
        return "answer"
    if done % n == 0 and not any(r["changed"] for r in (state.get("reflections") or [])[-n:]):
        return "answer"
    return "retrieve_for_step"


def answer(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Write the final answer from the revised steps; cite the evidence as [n]; footer with the source paths."""
    ctx = context_of(runtime, RatContext)
    steps = state.get("steps") or []
    evidence = state.get("evidence") or []
    if not steps:
        return {"final_response": "No question was asked.", "sources": []}
    listed = "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
    sources = "\n".join(f"[{p['n']}] {p['path']}" for p in evidence) or "(none)"
    prompt = [SystemMessage(ctx.answer_prompt), HumanMessage(
        f"Question: {state['question']}\n\nRevised reasoning steps:\n{listed}\n\nSources:\n{sources}\n\nAnswer:")]
    text, _calls = ask_text(hidden(bounded_model(ctx)), prompt, ctx.max_attempts)
    fallbacks = list(state.get("fallbacks") or [])
    if not text:
        fallbacks.append("answer: no reply, grounded on the revised steps")
        text = " ".join(steps)
    text, _ = clean_citations(text, (p["n"] for p in evidence))
    result = ground(text, state["question"], passage_units(evidence), embedder(),
                    threshold=ctx.grounding_threshold, min_coverage=ctx.min_coverage)
    if not result.grounded:
        fallbacks.append(f"answer: no supported sentence, {result.mode} answer")
    stream_answer(runtime, result.answer)
    out_sources = sources_of(evidence, result.cited)
    return {"final_response": with_footer(result.answer, out_sources), "sources": out_sources,
            "fallbacks": fallbacks, "generated_answer": text}


def answer_sentences(text: str) -> list[str]:
    """The sentences of an answer that make claims: no footer, no bracketed label line."""
    body = strip_footer(text)
    lines = [ln for ln in body.splitlines() if not re.match(r"^\s*\[[^\d\]]", ln)]
    return split_sentences("\n".join(lines))


def support_scores(ctx: Any, sentences: list[str], passages: list[dict[str, Any]]) -> list[float]:
    """For each sentence, its best similarity to a passage or to one of the passages' sentences."""
    if not sentences or not passages:
        return [0.0] * len(sentences)
    units = []
    for p in passages:
        units.append(" ".join(p.get("text", "").split()))
        units.extend(split_sentences(p.get("text", "")))
    units = [u for u in dict.fromkeys(units) if u]
    vectors = _embed(ctx, sentences + units)
    sims = vectors[: len(sentences)] @ vectors[len(sentences) :].T
    return [float(x) for x in sims.max(axis=1)]


def score_confidence(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Confidence = supported sentences / sentences of the model's answer, by embedding similarity to the evidence."""
    ctx = context_of(runtime, RatContext)
    # The model's own answer is scored (what the user sees is only its supported part, or quotes).
    sentences = answer_sentences(state.get("generated_answer") or state.get("final_response") or "")
    scores = support_scores(ctx, sentences, state.get("evidence") or [])
    support = [{"sentence": s, "similarity": round(x, 4), "supported": x >= ctx.support_threshold}
               for s, x in zip(sentences, scores, strict=True)]
    confidence = sum(s["supported"] for s in support) / len(support) if support else 0.0
    return {"confidence": round(confidence, 4), "support": support}
