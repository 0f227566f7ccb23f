"""The model's verdicts on proposals, for the eliza graph's ``decide`` node (nodes/eliza.py).

A local model is scored in one forward pass per prompt (:func:`score_verdicts`); any other is asked for JSON
with bounded retries (:func:`parse_verdict` reads it defensively). Verdicts are cached in the agent's ledger.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage

from graphs.context import ElizaContext
from graphs.state import message_text
from nodes.models import ask_many, chat_model
from xmrt.eliza import DecisionLedger

log = logging.getLogger(__name__)

VERDICT_VALUE = {"approve": 1.0, "defer": 0.5, "reject": 0.0}
VERDICT_PREFILL = '{"verdict": "'
_JSON_OBJECT = re.compile(r"\{.*?\}", re.S)
_VERDICT_WORD = re.compile(r"\b(approve|reject|defer)\b", re.I)


def parse_verdict(text: str) -> tuple[str | None, str]:
    """The verdict and reason in a model reply: JSON first, then a bare verdict word; (None, "") if neither."""
    for candidate in _JSON_OBJECT.findall(text or ""):
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        verdict = str(data.get("verdict", "")).strip().lower() if isinstance(data, dict) else ""
        if verdict in VERDICT_VALUE:
            return verdict, str(data.get("reason", "")).strip()[:500]
    match = _VERDICT_WORD.search(text or "")
    if match:
        return match.group(1).lower(), (text or "").strip()[:300]
    return None, ""


def verdict_prompt(instructions: str, template: str, proposal: dict, passages: list, lessons: list) -> list:
    """The conversation asking for one proposal's verdict: ``instructions``, then ``template`` filled in."""
    criteria = ", ".join(f"{k}={v:.2f}" for k, v in proposal["criteria"].items()) or "(none)"
    knowledge = "\n".join(f"[{i + 1}] {p['path']}: {p['text'][:300]}" for i, p in enumerate(passages)) or "(none)"
    memory = "\n".join(f"- {m['text']}" for m in lessons) or "(none)"
    amount = "not given" if proposal.get("amount_xmr") is None else f"{proposal['amount_xmr']} XMR"
    prompt = template.format(id=proposal["id"], title=proposal["title"], description=proposal["description"][:1500],
                             category=proposal["category"], amount=amount, criteria=criteria, knowledge=knowledge,
                             lessons=memory)
    return [SystemMessage(instructions), HumanMessage(prompt)]


def _model_id(model: Any, ctx: ElizaContext) -> str:
    name = getattr(model, "model_id", None) or getattr(model, "model_name", None) or ctx.model
    return f"{type(model).__name__}:{name}"


def _cache_key(model_id: str, messages: list) -> str:
    text = model_id + "\x00" + "\x00".join(str(m.content) for m in messages)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _local_scorer(model: Any):
    """The local model's network and tokenizer when verdicts can be scored in one forward pass, else None."""
    pipeline = getattr(getattr(model, "llm", None), "pipeline", None)
    net, tokenizer = getattr(pipeline, "model", None), getattr(model, "tokenizer", None)
    if net is None or tokenizer is None or not hasattr(model, "build_prompt"):
        return None
    return net, tokenizer


def score_verdicts(model: Any, conversations: list[list], batch_size: int = 4) -> list[dict[str, Any]]:
    """Score the three verdicts with a local model: one forward pass per prompt, batched, no generation.

    The prompt ends with the assistant's reply opened as ``{"verdict": "``; the model's next-token probabilities
    of approve, reject and defer (renormalised over the three) are its verdict distribution. Its output cannot be
    malformed, so no retry is needed, and it says how confident the model is.
    """
    import torch

    net, tokenizer = _local_scorer(model)
    first = {v: tokenizer(v, add_special_tokens=False)["input_ids"][0] for v in VERDICT_VALUE}
    prompts = [model.build_prompt(c) + VERDICT_PREFILL for c in conversations]
    out: list[dict[str, Any]] = []
    side = getattr(tokenizer, "padding_side", "right")
    with getattr(model, "generation_lock", None) or contextlib.nullcontext():
        try:
            tokenizer.padding_side = "left"
            for i in range(0, len(prompts), max(1, batch_size)):
                enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True,
                                add_special_tokens=False)
                with torch.no_grad():
                    logits = net(**enc).logits[:, -1, :]
                for row in logits:
                    chosen = torch.stack([row[first[v]] for v in VERDICT_VALUE])
                    probs = dict(zip(VERDICT_VALUE, torch.softmax(chosen.float(), 0).tolist(), strict=True))
                    out.append({"probabilities": {k: round(v, 4) for k, v in probs.items()}})
        finally:
            tokenizer.padding_side = side
    for result in out:
        probs = result["probabilities"]
        verdict = max(probs, key=probs.get)
        result.update(verdict=verdict, confidence=probs[verdict], method="scored",
                      value=round(0.5 + 0.5 * (probs["approve"] - probs["reject"]), 4))
    return out


def _generate_verdicts(model: Any, conversations: list[list], ctx: ElizaContext) -> list[dict[str, Any]]:
    """Ask for JSON verdicts (batched, bounded retries of the unparseable ones); None verdicts when none comes."""

    def verdict_of(reply: Any) -> tuple[str, str] | None:
        verdict, reason = parse_verdict(message_text(reply))
        return (verdict, reason) if verdict else None

    results: list[dict[str, Any]] = []
    for found, attempts in ask_many(model, conversations, ctx.max_attempts, verdict_of,
                                    max_concurrency=ctx.llm_concurrency):
        if found is None:  # provider errors and unparseable replies were retried; the fallback decides
            results.append({"verdict": None, "reason": "", "attempts": attempts, "error": "no parseable verdict"})
        else:
            verdict, reason = found
            results.append({"verdict": verdict, "reason": reason, "attempts": attempts, "method": "generated",
                            "value": VERDICT_VALUE[verdict]})
    return results


def llm_verdicts(ctx: ElizaContext, ledger: DecisionLedger, instructions: str, proposals: list[dict],
                 knowledge: dict, lessons: list) -> dict[str, dict[str, Any]]:
    """The model's verdicts on ``proposals``, by id: cached ones from Redis, the rest in one batch.

    A local model is scored (:func:`score_verdicts`); any other is asked to generate JSON (bounded retries). Every
    result has ``verdict`` (None when the model gave none, with ``error``), ``value`` (the ``llm_verdict`` feature)
    and, when scored, ``probabilities`` and ``confidence``.
    """
    if not proposals:
        return {}
    try:
        model = chat_model(ctx.model)
    except Exception as exc:  # noqa: BLE001 - no model: the weighted signals decide alone
        return {p["id"]: {"verdict": None, "error": f"LLM unavailable: {exc}", "attempts": 0} for p in proposals}
    conversations = {p["id"]: verdict_prompt(instructions, ctx.proposal_prompt, p, knowledge.get(p["id"], []), lessons)
                     for p in proposals}
    model_id = _model_id(model, ctx)
    keys = {pid: _cache_key(model_id, c) for pid, c in conversations.items()}
    found = ledger.cached_verdicts(list(keys.values()))
    out = {pid: {**found[key], "cached": True} for pid, key in keys.items() if key in found}
    todo = [pid for pid in conversations if pid not in out]
    if todo:
        started = time.perf_counter()
        results = None
        if _local_scorer(model) is not None:
            try:
                results = score_verdicts(model, [conversations[pid] for pid in todo], ctx.llm_batch)
            except Exception as exc:  # noqa: BLE001 - fall back to asking for JSON
                log.warning("scoring verdicts failed (%s); asking the model instead", exc)
        if results is None:
            results = _generate_verdicts(model, [conversations[pid] for pid in todo], ctx)
        seconds = round((time.perf_counter() - started) / len(todo), 3)
        fresh = {pid: {**r, "seconds": seconds} for pid, r in zip(todo, results, strict=True)}
        ledger.cache_verdicts({keys[pid]: r for pid, r in fresh.items() if r.get("verdict")})
        out.update(fresh)
    return out
