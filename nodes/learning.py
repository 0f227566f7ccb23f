"""Self-improvement nodes: record outcomes, review, update the criteria weights, write lessons, revise the prompt.

Learning is measured, never simulated: weights move only by gradient steps on recorded outcomes, and
every metric is computed from the decision ledger.
"""

from __future__ import annotations

import logging
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from graphs.context import ELIZA_INSTRUCTIONS, SelfImproveContext, context_of
from nodes.generation import invoke_with_retries
from nodes.models import chat_model
from xmrt.config import get_config
from xmrt.eliza import DecisionLedger, Example, history_point, is_correct, outcome_from_dict
from xmrt.errors import UserError
from xmrt.policy import current_principal

log = logging.getLogger(__name__)


def _ctx(runtime: Runtime) -> SelfImproveContext:
    return context_of(runtime, SelfImproveContext)


def _ledger(ctx: SelfImproveContext) -> DecisionLedger:
    return DecisionLedger(get_config(), ctx.agent_id, principal=current_principal())


def record_outcomes(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Record each given outcome against its stored decision; bad ones get an error naming them."""
    ledger = _ledger(_ctx(runtime))
    recorded, errors = [], []
    for i, raw in enumerate(state.get("outcomes") or []):
        try:
            outcome = outcome_from_dict(raw)
            record = ledger.set_outcome(outcome)
        except (ValueError, UserError) as exc:  # malformed, unknown id, or duplicate feedback
            errors.append({"index": i, "id": raw.get("id") if isinstance(raw, dict) else None, "error": str(exc)})
            continue
        recorded.append({"id": outcome.id, "success": outcome.success,
                         "correct": is_correct(record["decision"], outcome.success)})
    return {"recorded": recorded, "errors": errors}


def review(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Metrics before learning, computed from every recorded outcome."""
    return {"metrics_before": _ledger(_ctx(runtime)).metrics()}


def update_weights(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Train the decision model on every decision with an outcome (oldest first), and re-weigh its experts."""
    ctx = _ctx(runtime)
    if not ctx.learn:
        return {"training": {"skipped": "learning is off for this agent"}}
    ledger = _ledger(ctx)
    judged = [d for d in ledger.with_outcomes() if d.get("features") is not None]
    if not judged:
        return {"training": {"skipped": "no decisions with outcomes yet"}}
    model = ledger.load_model()
    before = dict(model.weights)
    stats = model.train(
        [(Example.from_record(d), d["outcome"]["success"]) for d in judged],
        learning_rate=ctx.learning_rate, epochs=ctx.epochs, l2=ctx.l2, half_life=ctx.half_life,
        expert_scores=[d.get("experts") for d in judged], mixture_half_life=ctx.mixture_half_life,
    )
    ledger.save_model(model, note=f"trained on {len(judged)} outcomes")
    ledger.mark_learned(d["id"] for d in judged if not d["outcome"].get("learned"))
    changes = {k: round(model.weights.get(k, 0.0) - before.get(k, 0.0), 4) for k in model.weights}
    return {"training": {**stats, "version": model.version, "bias": round(model.bias, 4),
                         "weights": {k: round(v, 4) for k, v in model.weights.items()}, "weight_changes": changes}}


def _lessons_from(judged: list[dict[str, Any]], ctx: SelfImproveContext) -> list[dict[str, Any]]:
    """Criteria whose high and low values separate successes from failures, as measured lessons."""
    names = sorted({n for d in judged for n in d["features"]})
    lessons = []
    for name in names:
        high = [d["outcome"]["success"] for d in judged if d["features"].get(name, 0.5) >= 0.66]
        low = [d["outcome"]["success"] for d in judged if d["features"].get(name, 0.5) <= 0.34]
        if len(high) < ctx.lesson_min_cases or len(low) < ctx.lesson_min_cases:
            continue
        rate_high, rate_low = sum(high) / len(high), sum(low) / len(low)
        gap = rate_high - rate_low
        if abs(gap) < ctx.lesson_min_gap:
            continue
        better = "high" if gap > 0 else "low"
        lessons.append({
            "criterion": name,
            "gap": round(gap, 3),
            "text": (
                f"Proposals with {better} {name} succeed more often: {sum(high)}/{len(high)} succeeded with high "
                f"{name} (>= 0.66) against {sum(low)}/{len(low)} with low {name} (<= 0.34)."
            ),
        })
    return sorted(lessons, key=lambda x: -abs(x["gap"]))[: ctx.max_lessons]


def write_lessons(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Store measured lessons in long-term memory (one per criterion, overwritten as evidence grows)."""
    ctx = _ctx(runtime)
    if not ctx.learn or runtime.store is None:
        return {"lessons": []}
    from xmrt.eliza.memory import AgentMemory

    judged = [d for d in _ledger(ctx).with_outcomes() if d.get("features") is not None]
    lessons = _lessons_from(judged, ctx)
    memory = AgentMemory(get_config(), store=runtime.store, principal=current_principal())
    for lesson in lessons:
        memory.remember(ctx.agent_id, lesson["text"], key=f"lesson-{lesson['criterion']}",
                        data={"kind": "lesson", "criterion": lesson["criterion"], "gap": lesson["gap"]})
    return {"lessons": lessons}


def _optimizer_enabled(ctx: SelfImproveContext) -> tuple[bool, str]:
    if ctx.prompt_optimizer == "off":
        return False, "prompt optimizer is off"
    if ctx.prompt_optimizer == "auto" and get_config().llm_provider != "openai":
        return False, "the local model is too small to rewrite instructions (set prompt_optimizer='on' to force)"
    return True, ""


def revise_prompt(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """With a capable LLM, rewrite the decision instructions from the recent mistakes; keep every version."""
    ctx = _ctx(runtime)
    enabled, why = _optimizer_enabled(ctx)
    if not ctx.learn or not enabled:
        return {"prompt_update": {"skipped": why or "learning is off"}}
    ledger = _ledger(ctx)
    judged = ledger.with_outcomes()
    mistakes = [d for d in judged if not is_correct(d["decision"], d["outcome"]["success"])][-8:]
    if not mistakes:
        return {"prompt_update": {"skipped": "no mistakes to learn from"}}
    current, version = ledger.prompt(ELIZA_INSTRUCTIONS)
    cases = "\n".join(
        f"- {d.get('title', d['id'])}: decided {d['decision']} (p={d.get('score')}), "
        f"outcome {'success' if d['outcome']['success'] else 'failure'}" for d in mistakes
    )
    lessons = "\n".join(f"- {x['text']}" for x in state.get("lessons", [])) or "(none)"
    messages = [
        SystemMessage("You improve the instructions of a DAO decision agent. Reply with the new instructions only."),
        HumanMessage(f"Current instructions:\n{current}\n\nRecent wrong decisions:\n{cases}\n\nMeasured lessons:\n"
                     f"{lessons}\n\nRewrite the instructions so these mistakes are avoided. Keep the reply format: "
                     "the agent must still answer with JSON containing \"verdict\" and \"reason\"."),
    ]
    text = invoke_with_retries(chat_model(ctx.model), messages, ctx.max_attempts)
    if not text or "verdict" not in text or "json" not in text.lower() or len(text) > 4000:
        return {"prompt_update": {"skipped": "the model's rewrite was empty or broke the JSON reply contract",
                                  "kept_version": version}}
    new_version = ledger.save_prompt(text, reason=f"{len(mistakes)} recent mistakes")
    return {"prompt_update": {"version": new_version, "previous_version": version, "mistakes": len(mistakes)}}


def report(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Metrics after learning, logged as a self-improvement point."""
    ledger = _ledger(_ctx(runtime))
    metrics = ledger.metrics()
    ledger.append_metrics({"kind": "self_improve", **history_point(metrics),
                           "model_version": state.get("training", {}).get("version")})
    return {"metrics_after": metrics}
