"""How Eliza's decisions are scored: the decision a probability gives, whether it was right, and the metrics.

The metrics (accuracy, Brier, log-loss, reliability, the learning curve) are what ``xmrt eliza status``, the
dashboard and ``xmrt bench eliza`` report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def decide_from_probability(p: float, defer_margin: float) -> str:
    """The decision (approve, reject or defer) for a success probability; at margin 0 it never defers."""
    if p >= 0.5 + defer_margin:
        return "approve"
    if p <= 0.5 - defer_margin:
        return "reject"
    return "defer"


def is_correct(decision: str, success: bool) -> bool:
    """Whether a decision was right given the outcome (a deferral never is)."""
    return (decision == "approve" and success) or (decision == "reject" and not success)


def reliability(pairs: Sequence[tuple[float, bool]], bins: int = 5) -> list[dict[str, Any]]:
    """Reliability table: per probability bin, how many decisions, their mean score and the observed success rate."""
    table = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(p, y) for p, y in pairs if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        table.append({"bin": f"{lo:.1f}-{hi:.1f}", "n": len(inside),
                      "mean_score": round(sum(p for p, _ in inside) / len(inside), 4) if inside else None,
                      "observed": round(sum(y for _, y in inside) / len(inside), 4) if inside else None})
    return table


def metrics_of(decisions: Sequence[dict[str, Any]], recent: int = 100, window: int = 50) -> dict[str, Any]:
    """Accuracy, calibration (Brier, log-loss, reliability, expected calibration error) and the learning curve.

    Everything is computed from the decisions (oldest first) and their recorded outcomes, never counted up. The
    learning curve is the accuracy and Brier score of consecutive windows of ``window`` judged decisions, in the
    order they were decided: each decision was made before its outcome was known, so it is an honest test.
    """
    judged = [d for d in decisions if d.get("outcome")]
    correct = [is_correct(d["decision"], d["outcome"]["success"]) for d in judged]
    last = correct[-recent:]
    scored = [(float(d["score"]), bool(d["outcome"]["success"])) for d in judged if "score" in d]
    briers = [(p - y) ** 2 for p, y in scored]
    losses = [-math.log(min(max(p if y else 1 - p, 1e-9), 1.0)) for p, y in scored]
    table = reliability(scored)
    ece = (sum(row["n"] * abs(row["mean_score"] - row["observed"]) for row in table if row["n"]) / len(scored)
           if scored else None)
    curve = []
    for start in range(0, len(judged), max(1, window)):
        part = judged[start : start + window]
        marks = correct[start : start + window]
        scores = [(p, y) for p, y in ((float(d["score"]), d["outcome"]["success"]) for d in part if "score" in d)]
        curve.append({"from": start + 1, "to": start + len(part), "accuracy": round(sum(marks) / len(marks), 4),
                      "brier": round(sum((p - y) ** 2 for p, y in scores) / len(scores), 4) if scores else None,
                      "defer_rate": round(sum(d["decision"] == "defer" for d in part) / len(part), 4)})
    return {
        "decisions": len(decisions),
        "with_outcome": len(judged),
        "pending_outcomes": len(decisions) - len(judged),
        "decision_accuracy": (sum(correct) / len(correct)) if correct else None,
        "recent_accuracy": (sum(last) / len(last)) if last else None,
        "recent_window": len(last),
        "defer_rate": (sum(d["decision"] == "defer" for d in judged) / len(judged)) if judged else None,
        "brier_score": (sum(briers) / len(briers)) if briers else None,
        "recent_brier_score": (sum(briers[-recent:]) / len(briers[-recent:])) if briers else None,
        "log_loss": (sum(losses) / len(losses)) if losses else None,
        "calibration_error": round(ece, 4) if ece is not None else None,
        "reliability": table,
        "learning_curve": curve,
    }


def history_point(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar metrics (no tables or curves) kept in the metrics history once per cycle."""
    return {k: v for k, v in metrics.items() if not isinstance(v, list | dict)}
