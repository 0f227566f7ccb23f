"""Eliza's decision-cycle nodes: load context, assess, decide, reflect, act, learn (metrics).

Each node returns only the keys it changes. Every LLM judgment is parsed defensively (bounded
retries, then a deterministic fallback) and written into state, so it is checkpointed and testable.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from graphs.context import ElizaContext, context_of
from graphs.state import message_text
from nodes.models import chat_model
from xmrt.config import get_config
from xmrt.eliza import DecisionLedger, DecisionModel, decide_from_probability, proposal_from_dict
from xmrt.policy import current_principal

log = logging.getLogger(__name__)

VERDICT_VALUE = {"approve": 1.0, "defer": 0.5, "reject": 0.0}
_JSON_OBJECT = re.compile(r"\{.*?\}", re.S)
_VERDICT_WORD = re.compile(r"\b(approve|reject|defer)\b", re.I)


def _ctx(runtime: Runtime) -> ElizaContext:
    return context_of(runtime, ElizaContext)


def _ledger(ctx: ElizaContext) -> DecisionLedger:
    """The agent's ledger, in the scope of whoever runs this graph (a served API user's own agents)."""
    return DecisionLedger(get_config(), ctx.agent_id, principal=current_principal())


def _memory(runtime: Runtime):
    from xmrt.memory import AgentMemory

    return AgentMemory(get_config(), store=runtime.store, principal=current_principal())


# ------------------------------------------------------------------------------------ load context
def load_context(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """The agent's learned model, its current instructions, and the lessons relevant to these proposals."""
    ctx = _ctx(runtime)
    ledger = _ledger(ctx)
    model = ledger.load_model()
    instructions, version = ledger.prompt(ctx.instructions)
    lessons: list[dict[str, Any]] = []
    titles = " ".join(str(p.get("title", "")) for p in state.get("proposals", []) if isinstance(p, dict))[:2000]
    if runtime.store is not None and ctx.lessons_k > 0 and titles.strip():
        found = _memory(runtime).search(ctx.agent_id, titles, limit=ctx.lessons_k * 2)
        lessons = [m.to_dict() for m in found if m.data.get("kind") == "lesson"][: ctx.lessons_k]
    return {"model": model.to_dict(), "instructions": instructions, "prompt_version": version, "lessons": lessons}


# ------------------------------------------------------------------------------------ assess
def _knowledge(ctx: ElizaContext, query: str) -> tuple[list[dict[str, Any]], str | None]:
    """Top passages from the knowledge base, or an explanation of why there are none."""
    from xmrt.kb.index import KnowledgeIndex

    config = get_config()
    try:
        if ctx.collection not in KnowledgeIndex.list_collections(config):
            return [], f"collection {ctx.collection!r} does not exist"
        index = KnowledgeIndex(config, ctx.collection)
        hits = index.search(query, k=ctx.knowledge_k)
    except Exception as exc:  # noqa: BLE001 - the KB is optional for a decision; say why it is missing
        return [], f"knowledge base unavailable: {exc}"
    return [
        {"path": h.metadata.get("source", h.id), "score": round(float(h.score), 4), "text": h.text[:400]} for h in hits
    ], None


def assess(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Validate the proposals and enrich each valid one with knowledge-base context.

    A proposal whose outcome is already recorded is not decided again (its decision and outcome stay as they
    are); it is reported among the invalid inputs, with the stored decision.
    """
    ctx = _ctx(runtime)
    valid, invalid, knowledge, seen = [], [], {}, set()
    kb_note = None
    proposals = state.get("proposals")
    if proposals is not None and not isinstance(proposals, list):
        return {"assessed": [], "knowledge": {}, "kb_note": "",
                "invalid": [{"index": None, "error": f"'proposals' must be a list, got {type(proposals).__name__}"}]}
    judged = _ledger(ctx).judged(str(p.get("id")).strip() for p in proposals or []
                                 if isinstance(p, dict) and isinstance(p.get("id"), str | int))
    for i, raw in enumerate(proposals or []):
        try:
            proposal = proposal_from_dict(raw)
        except ValueError as exc:
            invalid.append({"index": i, "error": str(exc)})
            continue
        if proposal.id in seen:
            invalid.append({"index": i, "error": f"duplicate id {proposal.id!r} in this cycle"})
            continue
        if proposal.id in judged:
            invalid.append({"index": i, "id": proposal.id, "error": _already_judged(judged[proposal.id])})
            continue
        seen.add(proposal.id)
        valid.append(proposal.__dict__)
        if ctx.knowledge_k > 0 and kb_note is None:
            passages, kb_note = _knowledge(ctx, proposal.text())
            knowledge[proposal.id] = passages
    return {"assessed": valid, "invalid": invalid, "knowledge": knowledge, "kb_note": kb_note or ""}


def _already_judged(record: dict[str, Any]) -> str:
    outcome = "succeeded" if record["outcome"].get("success") else "failed"
    return (f"proposal {record['id']!r} was already decided ({record.get('decision')}) and its outcome is recorded "
            f"({outcome}); it is not decided again")


# ------------------------------------------------------------------------------------ decide
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


def _llm_verdict(ctx: ElizaContext, instructions: str, proposal: dict, passages: list, lessons: list) -> dict:
    """Ask the model for a verdict, with bounded retries; {"verdict": None, ...} when it gives none."""
    criteria = ", ".join(f"{k}={v:.2f}" for k, v in proposal["criteria"].items()) or "(none)"
    knowledge = "\n".join(f"[{i + 1}] {p['path']}: {p['text'][:300]}" for i, p in enumerate(passages)) or "(none)"
    memory = "\n".join(f"- {m['text']}" for m in lessons) or "(none)"
    prompt = (
        f"Proposal {proposal['id']}: {proposal['title']}\n{proposal['description'][:1500]}\n"
        f"Category: {proposal['category']}. Amount: {proposal['amount_xmr']} XMR. Criteria: {criteria}\n\n"
        f"Knowledge:\n{knowledge}\n\nLessons from past outcomes:\n{memory}\n\nJSON:"
    )
    messages = [SystemMessage(instructions), HumanMessage(prompt)]
    try:
        model = chat_model(ctx.model)
    except Exception as exc:  # noqa: BLE001 - no model: the weighted criteria decide alone
        return {"verdict": None, "reason": "", "error": f"LLM unavailable: {exc}", "attempts": 0}
    for attempt in range(1, max(1, ctx.max_attempts) + 1):
        try:
            reply = message_text(model.invoke(messages))
        except Exception as exc:  # noqa: BLE001 - provider errors are retried, then the fallback decides
            log.warning("verdict call %d failed: %s", attempt, exc)
            continue
        verdict, reason = parse_verdict(reply)
        if verdict:
            return {"verdict": verdict, "reason": reason, "attempts": attempt}
    return {"verdict": None, "reason": "", "error": "no parseable verdict", "attempts": ctx.max_attempts}


def _rationale(p: float, contributions: dict[str, float], llm: dict | None, passages: list, lessons: list) -> str:
    parts = [f"success probability {p:.2f} from weighted criteria"]
    if contributions:
        top = ", ".join(f"{k} {v:+.2f}" for k, v in list(contributions.items())[:4])
        parts.append(f"strongest signals: {top}")
    if llm and llm.get("verdict"):
        parts.append(f"LLM verdict {llm['verdict']}: {llm.get('reason') or 'no reason given'}")
    elif llm and llm.get("error"):
        parts.append(f"LLM: {llm['error']}; decided on criteria alone")
    if passages:
        parts.append("knowledge: " + "; ".join(f"[{i + 1}] {s['path']}" for i, s in enumerate(passages)))
    if lessons:
        parts.append("lessons: " + " | ".join(m["text"][:120] for m in lessons))
    return ". ".join(parts)


def decide(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Decide each proposal: the learned weighted criteria, plus the LLM's verdict as a learned criterion."""
    ctx = _ctx(runtime)
    model = DecisionModel.from_dict(state["model"])
    decisions = []
    for proposal in state.get("assessed", []):
        features = dict(proposal["criteria"])
        passages = state.get("knowledge", {}).get(proposal["id"], [])
        llm = None
        if ctx.use_llm:
            llm = _llm_verdict(ctx, state.get("instructions") or ctx.instructions, proposal, passages,
                               state.get("lessons", []))
            if llm.get("verdict"):
                features["llm_verdict"] = VERDICT_VALUE[llm["verdict"]]
        p = model.probability(features)
        contributions = model.contributions(features)
        decisions.append({
            "id": proposal["id"],
            "title": proposal["title"],
            "decision": decide_from_probability(p, ctx.defer_margin),
            "score": round(p, 4),
            "features": features,
            "contributions": {k: round(v, 4) for k, v in contributions.items()},
            "llm": llm,
            "rationale": _rationale(p, contributions, llm, passages, state.get("lessons", [])),
            "sources": [{"path": s["path"], "score": s["score"]} for s in passages],
            "model_version": model.version,
            "prompt_version": state.get("prompt_version", 0),
            "action": proposal.get("action"),
        })
    return {"decisions": decisions}


# ------------------------------------------------------------------------------------ reflect
def _distance(a: dict[str, float], b: dict[str, float]) -> float:
    names = set(a) | set(b)
    return math.sqrt(sum((a.get(n, 0.5) - b.get(n, 0.5)) ** 2 for n in names))


def reflect(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Critique low-margin decisions against the outcomes of the most similar past proposals.

    The neighbours' success rate is blended with the model's probability, weighted by how many
    neighbours there are; when that flips the decision, the flip and its evidence are recorded.
    Bounded by ``max_reflections``; off when learning is off (it uses recorded outcomes).
    """
    ctx = _ctx(runtime)
    decisions = [dict(d) for d in state.get("decisions", [])]
    if not ctx.learn or not decisions:
        return {"reflections": []}
    past = [d for d in _ledger(ctx).with_outcomes() if d.get("features") is not None]
    current_ids = {d["id"] for d in decisions}
    past = [d for d in past if d["id"] not in current_ids]
    reflections = []
    candidates = sorted(
        (d for d in decisions if abs(d["score"] - 0.5) < ctx.reflect_margin), key=lambda d: abs(d["score"] - 0.5)
    )[: max(0, ctx.max_reflections)]
    for decision in candidates:
        if len(past) < ctx.min_neighbors:
            break
        near = sorted(past, key=lambda d: _distance(decision["features"], d["features"]))[: ctx.neighbors_k]
        successes = sum(1 for d in near if d["outcome"]["success"])
        rate = successes / len(near)
        weight = len(near) / (len(near) + ctx.neighbor_prior)
        blended = (1 - weight) * decision["score"] + weight * rate
        new = decide_from_probability(blended, ctx.defer_margin)
        entry = {
            "id": decision["id"],
            "before": decision["decision"],
            "after": new,
            "score_before": decision["score"],
            "score_after": round(blended, 4),
            "neighbors": len(near),
            "neighbor_success_rate": round(rate, 4),
            "changed": new != decision["decision"],
        }
        if entry["changed"]:
            entry["why"] = (
                f"{len(near)} most similar past proposals succeeded {successes}/{len(near)} times; "
                f"probability {decision['score']:.2f} -> {blended:.2f}, so {decision['decision']} -> {new}"
            )
            decision["decision"] = new
            decision["rationale"] += f". Reflection: {entry['why']}"
        decision["score"] = round(blended, 4)
        reflections.append(entry)
    return {"decisions": decisions, "reflections": reflections}


# ------------------------------------------------------------------------------------ act
def act(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Record the decisions in the ledger, then run the actions of approved proposals through tools.

    Both are idempotent, because a durable runtime may run this step twice: recording never erases an outcome
    (a proposal judged meanwhile is reported, not re-decided), and each action runs at most once per agent and
    proposal id (:meth:`DecisionLedger.claim_action`), whichever process or retry gets there first.
    """
    from tools.dao import run_action

    ctx = _ctx(runtime)
    ledger = _ledger(ctx)
    decisions = state.get("decisions", [])
    kept = set(ledger.record(decisions))
    update: dict[str, Any] = {}
    if kept:  # judged between assess and here (another process): keep the stored decision and outcome
        judged = ledger.judged(kept)
        update["decisions"] = [d for d in decisions if d["id"] not in kept]
        update["invalid"] = [*state.get("invalid", []),
                             *({"index": None, "id": pid, "error": _already_judged(judged[pid])} for pid in judged)]
        decisions = update["decisions"]
    actions = []
    for d in decisions:
        if d.get("action") and d["decision"] == "approve":
            actions.append({"id": d["id"], **run_action(ledger, d["id"], d["action"])})
    return {"actions": actions, **update}


# ------------------------------------------------------------------------------------ learn
def learn(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Update the metrics from recorded outcomes (decisions now pending theirs) and log a metrics point."""
    ctx = _ctx(runtime)
    ledger = _ledger(ctx)
    metrics = ledger.metrics()
    decided = [d["decision"] for d in state.get("decisions", [])]
    counts = {k: decided.count(k) for k in ("approve", "reject", "defer")}
    point = {"kind": "cycle", "decided": len(state.get("decisions", [])), **counts, **metrics,
             "model_version": state.get("model", {}).get("version", 0)}
    ledger.append_metrics(point)
    if runtime.store is not None:
        _memory(runtime).save_state(
            ctx.agent_id, {"last_cycle_at": time.time(), "metrics": metrics, "model_version": point["model_version"]}
        )
    return {"metrics": metrics}
