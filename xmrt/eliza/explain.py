"""Why a decision was made, in words: how far to trust its probability, and what moved it (pure; no I/O)."""

from __future__ import annotations

from typing import Any

from xmrt.eliza.features import Example
from xmrt.eliza.model import DecisionModel

#: Within this distance of 0.5 a probability is a close call: a calibrated model deciding it is right only about
#: 55% of the time. The rationale says so plainly (the decision is still made unless ``defer_margin`` covers it).
CLOSE_CALL = 0.05
#: Fewer outcomes than this and the model's confidence is low whatever its probability says.
FEW_OUTCOMES = 50


def confidence_of(model: DecisionModel, p: float, stats: dict[str, Any]) -> dict[str, Any]:
    """How far to trust a probability: how close to 0.5, the outcomes behind it, the measured recent accuracy."""
    seen = model.examples_seen
    sure = max(p, 1 - p)
    if abs(p - 0.5) < CLOSE_CALL:
        level = "close call"
        reading = f"a close call: about as likely to fail as to succeed, right {sure:.0%} of the time if calibrated"
    elif seen < FEW_OUTCOMES:
        level = "low"
        reading = "low confidence"
    elif sure < 0.7:
        level = "moderate"
        reading = f"moderate confidence: right {sure:.0%} of the time if calibrated"
    else:
        level = "high"
        reading = f"confident: right {sure:.0%} of the time if calibrated"
    note = ("the seed's prior rule: nothing learned yet" if seen == 0 else
            f"learned from {seen} outcomes" + (" (too few to trust much)" if seen < FEW_OUTCOMES else ""))
    acc, brier = stats.get("recent_accuracy"), stats.get("recent_brier_score")
    if acc is not None:
        note += f"; recent accuracy {acc:.2f}"
    if brier is not None:
        note += f", Brier {brier:.3f}"
    return {"probability": round(sure, 4), "level": level, "outcomes_learned": seen, "recent_accuracy": acc,
            "recent_brier": brier, "note": f"{reading}; {note}"}


def rationale(p: float, decision: str, contributions: dict[str, float], example: Example, space: Any,
              confidence: dict, llm: dict | None, passages: list, lessons: list) -> str:
    """One decision's rationale, in words.

    The decision and its confidence, the features that moved it most, the LLM's verdict and how much it counted,
    and the knowledge passages and lessons consulted.
    """
    parts = [f"{decision}: success probability {p:.2f} ({confidence['note']})"]
    if decision == "defer":
        parts.append("deferred: within the defer margin of 0.5, left to people")
    if contributions:
        top = []
        for name, v in list(contributions.items())[:4]:
            value = _feature_value(name, example)
            top.append(f"{space.describe(name)}{value} {v:+.2f}")
        parts.append("moved most by: " + ", ".join(top))
    if llm and llm.get("verdict"):
        sure = f", model confidence {llm['confidence']:.2f}" if llm.get("confidence") is not None else ""
        weight = contributions.get("llm_verdict", 0.0)
        parts.append(f"LLM verdict {llm['verdict']}{sure}, counted {weight:+.2f} by its learned weight"
                     + (f": {llm['reason']}" if llm.get("reason") else ""))
    elif llm and llm.get("error"):
        parts.append(f"LLM: {llm['error']}; decided without it")
    elif llm and llm.get("skipped"):
        parts.append(f"LLM not asked: {llm['skipped']}")
    if passages:
        parts.append("knowledge: " + "; ".join(f"[{i + 1}] {s['path']}" for i, s in enumerate(passages)))
    if lessons:
        parts.append("lessons: " + " | ".join(m["text"][:120] for m in lessons))
    return ". ".join(parts)


def _feature_value(name: str, example: Example) -> str:
    if name in example.criteria:
        return f" {example.criteria[name]:.2f}"
    if name.startswith("amount:") and example.amount is not None:
        return f" ({example.amount:g} XMR)"
    return ""
