"""The eliza graph's nodes (graphs/eliza.py): load context, assess, decide, reflect, act, learn (metrics).

Each node returns only the keys it changes. Every LLM judgment is parsed defensively (bounded
retries, then a deterministic fallback) and written into state, so it is checkpointed and testable.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from langgraph.runtime import Runtime

from graphs.context import ElizaContext, context_of
from nodes.verdicts import llm_verdicts
from xmrt import services
from xmrt.eliza import (
    DecisionLedger,
    DecisionModel,
    Example,
    confidence_of,
    decide_from_probability,
    history_point,
    proposal_from_dict,
    proposal_signals,
    rationale,
)
from xmrt.policy import current_principal

log = logging.getLogger(__name__)


def _ctx(runtime: Runtime) -> ElizaContext:
    return context_of(runtime, ElizaContext)


def _ledger(ctx: ElizaContext) -> DecisionLedger:
    """The agent's ledger, in the scope of whoever runs this graph (a served API user's own agents)."""
    return services.ledger(ctx.agent_id, current_principal())


def _memory(runtime: Runtime):
    return services.agent_memory(runtime.store, current_principal())


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
    metrics = ledger.metrics()
    recent = {k: metrics.get(k) for k in ("with_outcome", "recent_accuracy", "recent_brier_score", "brier_score")}
    return {"model": model.to_dict(), "instructions": instructions, "prompt_version": version, "lessons": lessons,
            "recent_metrics": recent}


# ------------------------------------------------------------------------------------ assess
def _knowledge(ctx: ElizaContext, query: str) -> tuple[list[dict[str, Any]], str | None]:
    """Top passages from the knowledge base, or an explanation of why there are none."""
    try:
        index = services.knowledge_index(ctx.collection)
        if index is None:
            return [], f"collection {ctx.collection!r} does not exist"
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
def _close_calls(ctx: ElizaContext, model: DecisionModel, examples: dict[str, Example],
                 base: dict[str, float]) -> list[str]:
    """The proposals whose decision the model's verdict could change, closest first, at most ``max_llm_calls``.

    A verdict can change a decision when the learned weight of ``llm_verdict`` moves the probability across a
    decision boundary (approve/defer/reject) between a reject verdict and an approve verdict; proposals in the
    reflection band (``reflect_margin`` around 0.5) are asked as well, so that the weight keeps being learned.
    """
    if ctx.llm_scope == "all":
        return list(examples)
    chosen = []
    for pid, ex in examples.items():
        low, high = model.verdict_swing(ex)
        outcomes = {decide_from_probability(p, ctx.defer_margin) for p in (base[pid], low, high)}
        if len(outcomes) > 1 or abs(base[pid] - 0.5) < ctx.reflect_margin:
            chosen.append(pid)
    chosen.sort(key=lambda pid: abs(base[pid] - 0.5))
    return chosen[: ctx.max_llm_calls]


def decide(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Decide each proposal with the learned model; ask the LLM only where its verdict could change the decision."""
    ctx = _ctx(runtime)
    model = DecisionModel.from_dict(state["model"])
    assessed = state.get("assessed", [])
    examples = {p["id"]: Example.of(p) for p in assessed}
    base = {pid: model.probability(ex) for pid, ex in examples.items()}
    verdicts: dict[str, dict[str, Any]] = {}
    ledger = _ledger(ctx)
    if ctx.use_llm and assessed:
        asked = set(_close_calls(ctx, model, examples, base))
        verdicts = llm_verdicts(ctx, ledger, state.get("instructions") or ctx.instructions,
                                [p for p in assessed if p["id"] in asked], state.get("knowledge", {}),
                                state.get("lessons", []))
    stats = state.get("recent_metrics") or {}
    decisions = []
    for proposal in assessed:
        features = dict(proposal["criteria"])
        passages = state.get("knowledge", {}).get(proposal["id"], [])
        llm = None
        if ctx.use_llm:
            llm = verdicts.get(proposal["id"]) or {
                "verdict": None, "skipped": f"its verdict could not change the decision (p={base[proposal['id']]:.2f})"}
            if llm.get("verdict") and llm.get("value") is not None:
                features["llm_verdict"] = float(llm["value"])
        example = Example.of(proposal, features)
        experts = model.expert_probabilities(example)
        p = model.probability(example)
        decision = decide_from_probability(p, ctx.defer_margin)
        contributions = model.contributions(example)
        confidence = confidence_of(model, p, stats)
        decisions.append({
            "id": proposal["id"],
            "title": proposal["title"],
            "decision": decision,
            "score": round(p, 4),
            "features": features,
            "signals": proposal_signals(proposal),
            "experts": {k: round(v, 4) for k, v in experts.items()},
            "contributions": {k: round(v, 4) for k, v in list(contributions.items())[:12]},
            "confidence": confidence,
            "llm": llm,
            "rationale": rationale(p, decision, contributions, example, model.space, confidence, llm, passages,
                                    state.get("lessons", [])),
            "sources": [{"path": s["path"], "score": s["score"]} for s in passages],
            "model_version": model.version,
            "prompt_version": state.get("prompt_version", 0),
            "action": proposal.get("action"),
        })
    return {"decisions": decisions}


# ------------------------------------------------------------------------------------ reflect
MAX_PAST = 2000
VALIDATION = 200
MIN_VALIDATION = 20


def _log_loss(p: Any, y: Any) -> float:
    import numpy as np

    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def _track_record(past: list[dict[str, Any]], half_life: float) -> tuple[bool, str] | None:
    """Whether reflection's own past adjustments lowered the log-loss of the decisions it reflected on.

    ``past`` holds judged decisions, oldest first; those reflected on carry ``model_score`` and ``reflected_score``
    (the probability before and after the critique, kept whether or not it was applied). Each weighs
    ``0.5 ** (judged decisions decided since / half_life)``, counting every judged decision, reflected on or not (the
    clock of the forgetting experts). The note gives both mean log-losses. None until ``MIN_VALIDATION`` of them
    have outcomes.
    """
    from xmrt.eliza.mixture import discounted_log_loss

    rows = [(j, d) for j, d in enumerate(past) if "reflected_score" in d and "model_score" in d][-VALIDATION:]
    if len(rows) < MIN_VALIDATION:
        return None
    loss, total = discounted_log_loss(["reflected_score", "model_score"], [d["outcome"]["success"] for _, d in rows],
                                      [d for _, d in rows], half_life, ages=[len(past) - 1 - j for j, _ in rows])
    mine, plain = loss["reflected_score"] / total, loss["model_score"] / total
    return mine < plain, (f"its own record on {len(rows)} past close calls, recent ones weighing most: "
                          f"log-loss {mine:.3f} with it, {plain:.3f} without")


def reflect(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Critique low-margin decisions against the outcomes of the most similar past proposals.

    Similar means close in the model's own main features (criteria, amount, category). The critique is the
    neighbours' *residual*: how much more (or less) often they succeeded than the current model predicts for them,
    weighted by ``n / (n + neighbor_prior)``. Where the model fits its past this is noise; where it misfits locally
    (an interaction it cannot express, a rule that changed) it is signal. So reflection must earn its say: it is
    first tried on the last past decisions in the band, each critiqued by its own neighbours (leave-one-out), and it
    changes today's decisions only if that lowered their log-loss (with fewer than 20 such past decisions it
    applies, as the seed's reflection did). Once 20 decisions it reflected on have outcomes, its own record decides
    instead (:func:`_track_record`): each stores the model's probability and the reflected one, whether or not the
    reflection was applied, and reflection applies only while the reflected ones had the lower log-loss (discounted
    with ``reflect_half_life``, in judged decisions). A flipped decision records its evidence. Bounded by
    ``max_reflections``; off when learning is off (it uses recorded outcomes).
    """
    import numpy as np

    ctx = _ctx(runtime)
    decisions = [dict(d) for d in state.get("decisions", [])]
    if not ctx.learn or not decisions:
        return {"reflections": []}
    candidates = sorted(
        (d for d in decisions if abs(d["score"] - 0.5) < ctx.reflect_margin), key=lambda d: abs(d["score"] - 0.5)
    )[: max(0, ctx.max_reflections)]
    if not candidates:
        return {"decisions": decisions, "reflections": []}
    model = DecisionModel.from_dict(state["model"])
    current_ids = {d["id"] for d in decisions}
    past = [d for d in _ledger(ctx).with_outcomes() if d.get("features") is not None and d["id"] not in current_ids]
    past = past[-MAX_PAST:]
    if len(past) < max(1, ctx.min_neighbors):
        return {"decisions": decisions, "reflections": []}
    rows = [model.space.main(Example.from_record(d)) for d in past]
    here_rows = [model.space.main(Example.from_record(d)) for d in candidates]
    names = sorted({n for r in (*rows, *here_rows) for n in r})
    matrix = np.array([[r.get(n, 0.0) for n in names] for r in rows])
    outcomes = np.array([1.0 if d["outcome"]["success"] else 0.0 for d in past])
    predicted = np.array([model.probability(Example.from_record(d)) for d in past])
    k = min(ctx.neighbors_k, len(past))

    def critique(vector: Any, exclude: int | None = None) -> tuple[float, int, float, int]:
        dist = ((matrix - vector) ** 2).sum(1)
        if exclude is not None:
            dist[exclude] = np.inf
        n = min(k, len(past) - (exclude is not None))
        near = np.argpartition(dist, n - 1)[:n] if n < len(past) else np.arange(len(past))
        rate, expected = float(outcomes[near].mean()), float(predicted[near].mean())
        return (n / (n + ctx.neighbor_prior)) * (rate - expected), int(outcomes[near].sum()), expected, n

    band = [i for i in range(len(past)) if abs(predicted[i] - 0.5) < ctx.reflect_margin][-VALIDATION:]
    applies, note = True, f"only {len(band)} past decisions in the band to test it on"
    record = _track_record(past, ctx.reflect_half_life)
    if record is not None:
        applies, note = record
    elif len(band) >= MIN_VALIDATION and len(past) > k:
        idx = np.array(band)
        tried = np.clip(predicted[idx] + np.array([critique(matrix[i], exclude=i)[0] for i in band]), 0.001, 0.999)
        mine, plain = _log_loss(tried, outcomes[idx]), _log_loss(predicted[idx], outcomes[idx])
        applies = mine < plain
        note = f"tried on {len(band)} past close calls: log-loss {mine:.3f} with it, {plain:.3f} without"
    reflections = []
    for decision, row in zip(candidates, here_rows, strict=True):
        shift, successes, expected, n = critique(np.array([row.get(nm, 0.0) for nm in names]))
        adjusted = min(0.999, max(0.001, decision["score"] + shift))
        new = decide_from_probability(adjusted, ctx.defer_margin) if applies else decision["decision"]
        entry = {
            "id": decision["id"],
            "before": decision["decision"],
            "after": new,
            "score_before": decision["score"],
            "score_after": round(adjusted, 4),
            "neighbors": n,
            "neighbor_success_rate": round(successes / n, 4),
            "neighbor_expected_rate": round(expected, 4),
            "changed": new != decision["decision"],
            "applied": applies,
            "evidence": note,
        }
        if entry["changed"]:
            entry["why"] = (
                f"{n} most similar past proposals succeeded {successes}/{n} times where the model expects "
                f"{expected:.2f} of them; probability {decision['score']:.2f} -> {adjusted:.2f}, so "
                f"{decision['decision']} -> {new}"
            )
            decision["decision"] = new
            decision["rationale"] += f". Reflection: {entry['why']}"
        decision["model_score"], decision["reflected_score"] = decision["score"], round(adjusted, 4)
        if applies:
            decision["score"] = round(adjusted, 4)
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
    asked = [d for d in state.get("decisions", []) if (d.get("llm") or {}).get("verdict")]
    counts = {k: decided.count(k) for k in ("approve", "reject", "defer")}
    point = {"kind": "cycle", "decided": len(state.get("decisions", [])), **counts, **history_point(metrics),
             "llm_asked": len(asked), "model_version": state.get("model", {}).get("version", 0)}
    ledger.append_metrics(point)
    if runtime.store is not None:
        _memory(runtime).save_state(
            ctx.agent_id, {"last_cycle_at": time.time(), "metrics": metrics, "model_version": point["model_version"]}
        )
    return {"metrics": metrics}
