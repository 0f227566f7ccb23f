"""The mixture weights of the decision model's experts: a posterior from their prequential log-loss."""

from __future__ import annotations

import math


def posterior_mixture(names: list[str], outcomes: list[bool], scores: list[dict[str, float] | None],
                      half_life: float, current: dict[str, float]) -> dict[str, float]:
    """Posterior weights of the experts (uniform prior) from their discounted prequential log-loss.

    Each judged decision contributes the probability each expert gave it when it was decided, before its outcome
    was known (so an expert with many features pays for what it overfitted, on the proposals that followed);
    older ones weigh ``0.5 ** (age / half_life)``. The weight of an expert is ``exp(-loss)`` normalised: Bayesian
    model averaging by prequential evidence, which concentrates on the expert that predicts best, the simplest
    one when the rule is simple (the ``criteria`` expert on a rule of the criteria alone).

    Measured against the EM blend (the weights maximising the blend's likelihood) with the ``criteria`` expert
    in both, 6 streams per rule: the blend spread its weight (0.47 on ``criteria`` on the linear rule) and lost
    to it; see BENCHMARKS.md.
    """
    rows = [(s, y) for s, y in zip(scores, outcomes, strict=True) if s and all(n in s for n in names)]
    if not rows:
        return current
    loss, _ = discounted_log_loss(names, [y for _, y in rows], [s for s, _ in rows], half_life)
    best = min(loss.values())
    raw = {n: math.exp(-(loss[n] - best)) for n in names}
    total = sum(raw.values())
    return {n: v / total for n, v in raw.items()}


def discounted_log_loss(names: list[str], outcomes: list[bool], scores: list[dict[str, float]], half_life: float,
                        ages: list[float] | None = None) -> tuple[dict[str, float], float]:
    """Each named probability's discounted log-loss over ``scores`` (oldest first), and the summed discount.

    A row weighs ``0.5 ** (age / half_life)``; its age is the number of rows after it unless ``ages`` gives it.
    Probabilities are clipped to [1e-4, 1 - 1e-4].
    """
    m = len(scores)
    loss, total = dict.fromkeys(names, 0.0), 0.0
    for j, (s, y) in enumerate(zip(scores, outcomes, strict=True)):
        discount = 0.5 ** ((m - 1 - j if ages is None else ages[j]) / half_life)
        total += discount
        for n in names:
            p = min(max(float(s[n]), 1e-4), 1 - 1e-4)
            loss[n] -= discount * math.log(p if y else 1 - p)
    return loss, total
