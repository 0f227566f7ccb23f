"""Synthetic proposal streams whose true outcomes follow a hidden rule over the criteria, plus noise.

Used by ``xmrt bench eliza`` to prove that the agent learns from feedback alone: the agent never sees
the rule, only the outcomes. Several rules are provided so that no single rule can be tuned for.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

CRITERIA = ("community_support", "technical_risk", "treasury_impact", "alignment", "team_track_record",
            "market_timing")
CATEGORIES = ("development", "marketing", "mining", "governance", "education")


def _linear(c: dict[str, float]) -> float:
    # Track record and risk dominate; alignment (which the prior trusts) does not matter at all.
    return 4.0 * (c["team_track_record"] - 0.5) - 3.0 * (c["technical_risk"] - 0.5) \
        + 1.5 * (c["community_support"] - 0.5) - 1.0 * (c["treasury_impact"] - 0.5)


def _contrarian(c: dict[str, float]) -> float:
    # Popular but misaligned hype fails; careful low-support proposals with good timing succeed.
    return -2.5 * (c["community_support"] - 0.5) + 3.5 * (c["market_timing"] - 0.5) \
        - 2.0 * (c["alignment"] - 0.5) - 1.0 * (c["technical_risk"] - 0.5)


def _interaction(c: dict[str, float]) -> float:
    # Succeeds when support is high AND risk is low; an interaction a linear model only approximates.
    return 6.0 * (min(c["community_support"], 1.0 - c["technical_risk"]) - 0.45)


RULES: dict[str, Callable[[dict[str, float]], float]] = {
    "linear": _linear,
    "contrarian": _contrarian,
    "interaction": _interaction,
}


def generate(n: int, rule: str = "linear", noise: float = 0.1, seed: int = 7) -> list[tuple[dict, bool]]:
    """``n`` proposals and their true outcomes. ``noise`` is the share of outcomes flipped at random."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose from {', '.join(RULES)}")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        criteria = {name: round(rng.random(), 3) for name in CRITERIA}
        p = 1.0 / (1.0 + math.exp(-RULES[rule](criteria) * 2.0))
        success = rng.random() < p
        if rng.random() < noise:
            success = not success
        proposal = {
            "id": f"p{i:05d}",
            "title": f"{rng.choice(CATEGORIES).title()} proposal {i}",
            "description": "Synthetic proposal for the learning benchmark.",
            "category": rng.choice(CATEGORIES),
            "amount_xmr": round(rng.uniform(1, 500), 1),
            "criteria": criteria,
        }
        out.append((proposal, success))
    return out
