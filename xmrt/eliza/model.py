"""The learned decision model: a mixture of experts, trained on recorded outcomes (metrics: xmrt/eliza/metrics.py)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from xmrt.eliza.features import Example, FeatureSpace, _as_example, _logit, _sigmoid
from xmrt.eliza.mixture import posterior_mixture
from xmrt.errors import UserError

PRIOR_WEIGHTS: dict[str, float] = {
    "community_support": 1.0,
    "alignment": 1.0,
    "technical_risk": -1.0,
    "treasury_impact": -0.5,
    # The LLM's verdict enters as a criterion (approve 1, defer 0.5, reject 0) whose weight is learned
    # from outcomes like any other: a model whose verdicts don't predict outcomes loses its say.
    "llm_verdict": 0.5,
}


# ----------------------------------------------------------------------------------- the model
#: The experts of the mixture: feature groups and whether they forget (an outcome weighs ``0.5 ** (age /
#: half_life)``). The ``sparse`` group adds no feature: it swaps the L2 penalty for an L1 one (:data:`SPARSE_L1`).
EXPERTS: dict[str, tuple[tuple[str, ...], bool]] = {
    "main": ((), False),
    # Main effects, forgetting, sparse: after the rule changes, the outcomes since weigh most, and they are few; the L1
    # penalty keeps the few features they support and sets the others to exactly 0 (see SPARSE_L1).
    "main_recent": (("sparse",), True),
    "by_category": (("category",), False),
    "by_category_recent": (("category",), True),
    "pairs": (("pairs",), False),
    "text": (("words",), False),
    "trees": (("trees",), False),
    # The criteria alone (no amount, no category): few features, so the least variance when the rule is simple.
    "criteria": (("criteria",), False),
}


@dataclass
class Expert:
    """One logistic model of the mixture."""

    groups: tuple[str, ...] = ()
    recent: bool = False
    weights: dict[str, float] = field(default_factory=lambda: dict(PRIOR_WEIGHTS))
    bias: float = 0.0
    #: Boosted regression trees on the linear score's residual (the ``trees`` expert; none before any training).
    trees: list[dict[str, list]] = field(default_factory=list)

    def logit(self, features: dict[str, float]) -> float:
        """The score before the sigmoid: linear part plus the trees' leaves."""
        z = self.bias + sum(self.weights.get(n, 0.0) * x for n, x in features.items())
        for tree in self.trees:
            z += tree["value"][_leaf(tree, features)[-1]]
        return z

    def parts(self, features: dict[str, float]) -> dict[str, float]:
        """Each feature's signed share of the logit (a tree's leaf split along its path, node by node)."""
        out = {n: self.weights.get(n, 0.0) * x for n, x in features.items()}
        for tree in self.trees:
            path = _leaf(tree, features)
            for parent, child in zip(path, path[1:], strict=False):
                name = tree["feature"][parent]
                out[name] = out.get(name, 0.0) + tree["value"][child] - tree["value"][parent]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        raw = {"groups": list(self.groups), "recent": self.recent, "weights": self.weights, "bias": self.bias}
        if self.trees:
            raw["trees"] = self.trees
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Expert:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(raw.get("groups", ())), bool(raw.get("recent", False)),
                   {str(k): float(v) for k, v in raw.get("weights", {}).items()}, float(raw.get("bias", 0.0)),
                   [dict(t) for t in raw.get("trees", ())])


def _leaf(tree: dict[str, list], features: dict[str, float]) -> list[int]:
    """The nodes from the root to the leaf a feature vector falls in (a missing feature counts as 0)."""
    node, path = 0, [0]
    left, right, feature, threshold = tree["left"], tree["right"], tree["feature"], tree["threshold"]
    while left[node] >= 0:
        node = left[node] if features.get(feature[node], 0.0) <= threshold[node] else right[node]
        path.append(node)
    return path


def _default_experts(weights: dict[str, float] | None = None, bias: float = 0.0) -> dict[str, Expert]:
    return {name: Expert(groups, recent, dict(PRIOR_WEIGHTS if weights is None else weights), bias)
            for name, (groups, recent) in EXPERTS.items()}


class DecisionModel:
    """A mixture of logistic experts over every signal of a proposal (see the module docstring).

    ``weights`` and ``bias`` are the ``main`` expert's (main effects only, never forgetting): the plain reading
    of what the agent learned. ``predict`` averages the experts' probabilities with the ``mixture`` weights.
    """

    FORMAT = 2

    def __init__(self, weights: dict[str, float] | None = None, bias: float = 0.0, version: int = 0,
                 examples_seen: int = 0, updated_at: float = 0.0, *, space: FeatureSpace | None = None,
                 experts: dict[str, Expert] | None = None, mixture: dict[str, float] | None = None,
                 half_life: float = 60.0, history: list[dict[str, Any]] | None = None) -> None:
        self.experts = experts or _default_experts(weights, bias)
        self.space = space or FeatureSpace()
        self.mixture = mixture or {name: 1.0 / len(self.experts) for name in self.experts}
        self.version = version
        self.examples_seen = examples_seen
        self.updated_at = updated_at
        self.half_life = half_life
        self.history = history or []

    # -- reading ---------------------------------------------------------------------------------
    @property
    def weights(self) -> dict[str, float]:
        """The ``main`` expert's weights."""
        return self.experts["main"].weights

    @property
    def bias(self) -> float:
        """The ``main`` expert's bias."""
        return self.experts["main"].bias

    @staticmethod
    def features(criteria: dict[str, float]) -> dict[str, float]:
        """Centred features of a proposal's criteria (the criteria part of every feature vector)."""
        return {name: value - 0.5 for name, value in criteria.items()}

    def expert_probabilities(self, example: Example | dict[str, float]) -> dict[str, float]:
        """Each expert's predicted probability of success."""
        ex = _as_example(example)
        return {name: _sigmoid(e.logit(self.space.expand(ex, e.groups))) for name, e in self.experts.items()}

    def probability(self, example: Example | dict[str, float]) -> float:
        """Predicted probability that the proposal succeeds (the mixture of the experts)."""
        probs = self.expert_probabilities(example)
        return sum(self.mixture.get(n, 0.0) * p for n, p in probs.items()) / max(1e-12, sum(self.mixture.values()))

    def logit(self, example: Example | dict[str, float]) -> float:
        """The mixture's probability as a logit."""
        return _logit(self.probability(example))

    def contributions(self, example: Example | dict[str, float]) -> dict[str, float]:
        """Each feature's signed contribution to the logit (mixture-weighted over experts), largest first."""
        ex = _as_example(example)
        parts: dict[str, float] = {}
        total = max(1e-12, sum(self.mixture.values()))
        for name, e in self.experts.items():
            share = self.mixture.get(name, 0.0) / total
            if share <= 0:
                continue
            for n, v in e.parts(self.space.expand(ex, e.groups)).items():
                parts[n] = parts.get(n, 0.0) + share * v
        return dict(sorted(((k, v) for k, v in parts.items() if v != 0.0), key=lambda kv: -abs(kv[1])))

    def verdict_swing(self, example: Example) -> tuple[float, float]:
        """The probabilities with the LLM's verdict at reject (0) and at approve (1): what the verdict can change."""
        low = Example({**example.criteria, "llm_verdict": 0.0}, example.amount, example.category, example.words)
        high = Example({**example.criteria, "llm_verdict": 1.0}, example.amount, example.category, example.words)
        return self.probability(low), self.probability(high)

    # -- learning --------------------------------------------------------------------------------
    def train(
        self,
        examples: Sequence[tuple[Example | dict[str, float], bool]],
        *,
        learning_rate: float,
        epochs: int,
        l2: float = 1.0,
        seed: int = 0,
        half_life: float | None = None,
        expert_scores: Sequence[dict[str, float] | None] | None = None,
        mixture_half_life: float = 100.0,
    ) -> dict[str, Any]:
        """Fit every expert on ``examples`` (oldest first) and re-weigh the mixture; returns loss before and after.

        Each expert is scikit-learn's ``SGDClassifier`` (log-loss, L2 ``alpha = l2 / outcomes``; the ``sparse`` ones,
        ``main_recent``, L1 ``alpha = SPARSE_L1 / effective outcomes`` instead), warm-started from
        its stored weights, on features scaled to unit variance, with the ``adaptive`` schedule: the step starts at
        ``learning_rate`` and is divided by 5 whenever 5 passes bring no improvement; at most ``epochs`` passes.
        Forgetting experts weigh an outcome ``0.5 ** (age / half_life)``. The ``trees`` expert then boosts shallow
        trees on what its linear part leaves unexplained (:func:`_fit_trees`). The mixture weights are the posterior
        of the experts given their *prequential* log-loss: the scores they gave each proposal when it was decided
        (``expert_scores``), before its outcome was known, discounted with ``mixture_half_life``
        (:func:`~xmrt.eliza.mixture.posterior_mixture`).
        """
        if not examples:
            return {"examples": 0, "loss_before": 0.0, "loss_after": 0.0}
        if learning_rate <= 0 or epochs < 1:
            raise UserError("learning_rate must be > 0 and epochs >= 1")
        data = [(_as_example(x), bool(y)) for x, y in examples]
        before = self.log_loss(data)
        if half_life:
            self.half_life = float(half_life)
        self.space = FeatureSpace.fit([x for x, _ in data])
        if expert_scores is not None:
            self.mixture = posterior_mixture(list(self.experts), [y for _, y in data], list(expert_scores),
                                             mixture_half_life, self.mixture)
        n = len(data)
        for i, (name, expert) in enumerate(self.experts.items()):
            recency = [0.5 ** ((n - 1 - j) / self.half_life) for j in range(n)] if expert.recent else [1.0] * n
            rows = [self.space.expand(x, expert.groups) for x, _ in data]
            expert.trees = []
            linear = rows
            if "trees" in expert.groups:  # its linear part leaves the bends of the amount to the trees
                linear = [{k: v for k, v in r.items() if not k.startswith("amount:over")} for r in rows]
            _fit_expert(expert, linear, [y for _, y in data], recency, learning_rate=learning_rate, epochs=epochs,
                        l2=l2, seed=seed + self.version + i, l1=SPARSE_L1 if "sparse" in expert.groups else 0.0)
            if "trees" in expert.groups:
                expert.trees = _fit_trees(expert, rows, [y for _, y in data], recency)
        self.version += 1
        self.examples_seen = n
        self.updated_at = time.time()
        return {"examples": n, "loss_before": before, "loss_after": self.log_loss(data),
                "mixture": {k: round(v, 4) for k, v in self.mixture.items()}}

    def log_loss(self, examples: Sequence[tuple[Example | dict[str, float], bool]]) -> float:
        """Mean log-loss of the model on ``examples``."""
        if not examples:
            return 0.0
        total = 0.0
        for x, success in examples:
            p = min(max(self.probability(x), 1e-9), 1 - 1e-9)
            total -= math.log(p if success else 1 - p)
        return total / len(examples)

    # -- storage ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON form (format 2)."""
        return {"format": self.FORMAT, "weights": dict(self.weights), "bias": self.bias, "version": self.version,
                "examples_seen": self.examples_seen, "updated_at": self.updated_at, "half_life": self.half_life,
                "space": self.space.to_dict(), "mixture": dict(self.mixture),
                "experts": {n: e.to_dict() for n, e in self.experts.items()}}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DecisionModel:
        """Inverse of :meth:`to_dict`.

        A format-1 model (criteria weights and a bias) migrates: every expert starts from its weights, the mixture
        is uniform, and the new features start at 0.
        """
        weights = {str(k): float(v) for k, v in raw.get("weights", {}).items()}
        bias = float(raw.get("bias", 0.0))
        experts = None
        if raw.get("experts"):
            experts = {str(n): Expert.from_dict(e) for n, e in raw["experts"].items()}
            for name, expert in experts.items():  # what an expert is comes from the code, what it learned from storage
                if name in EXPERTS:
                    expert.groups, expert.recent = EXPERTS[name]
            for name, fresh in _default_experts(weights, bias).items():  # an expert added since: from main's weights
                experts.setdefault(name, fresh)
        model = cls(weights if weights or "weights" in raw else None, bias, int(raw.get("version", 0)),
                    int(raw.get("examples_seen", 0)), float(raw.get("updated_at", 0.0)),
                    space=FeatureSpace.from_dict(raw.get("space")), experts=experts,
                    mixture={str(k): float(v) for k, v in (raw.get("mixture") or {}).items()} or None,
                    half_life=float(raw.get("half_life", 60.0)))
        for name in model.experts:
            model.mixture.setdefault(name, 0.0)
        return model


#: Interactions and words, scaled to this share of unit variance, pay 1 / 0.3² = 11 times the L2 penalty of a main
#: effect. Measured (6 streams x 6 rules): at 1.0 the interaction experts were overconfident (log-loss above 1 on
#: some batches) and lost the mixture even where they were the most accurate; at 0.3 the mixture's gap to the oracle
#: on the category-by-amount rule fell from 0.08-0.10 to 0.03, other rules unchanged.
INTERACTION_SHRINK = 0.3


def _is_secondary(name: str) -> bool:
    return "×" in name or "²" in name or name.startswith("word:")


def _fit_expert(expert: Expert, rows: list[dict[str, float]], outcomes: list[bool], sample_weight: list[float], *,
                learning_rate: float, epochs: int, l2: float, seed: int, l1: float = 0.0) -> None:
    """Warm-started SGD on one expert's features (scaled to unit variance; weights stored unscaled).

    ``l1`` > 0 replaces the L2 penalty by an L1 one, ``alpha = l1 / effective outcomes`` (sparse weights).
    """
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDClassifier

    names = sorted({n for r in rows for n in r})
    y = np.array(outcomes, dtype=int)
    if len(set(outcomes)) < 2:  # one class only: all that can be learned is the base rate
        rate = (sum(outcomes) + 1) / (len(outcomes) + 2)
        expert.bias = _logit(rate)
        return
    index = {n: i for i, n in enumerate(names)}
    x = np.zeros((len(rows), len(names)))
    for i, r in enumerate(rows):
        for n, v in r.items():
            x[i, index[n]] = v
    w = np.asarray(sample_weight, dtype=float)
    mean = (w[:, None] * x).sum(0) / w.sum()
    scale = np.sqrt((w[:, None] * (x - mean) ** 2).sum(0) / w.sum())
    scale[scale < 1e-6] = 1.0
    # Interactions and words are many and mostly noise: scaled down after standardising, they pay a larger L2
    # penalty (1 / shrink²) for the same effect, so an expert that has them stays calibrated on little data.
    scale = scale / np.array([INTERACTION_SHRINK if _is_secondary(n) else 1.0 for n in names])
    coef = np.array([expert.weights.get(n, 0.0) for n in names]) * scale
    n_eff = float(w.sum() ** 2 / (w**2).sum())
    clf = SGDClassifier(loss="log_loss", penalty="l1" if l1 > 0 else "l2", alpha=(l1 or l2) / max(1.0, n_eff),
                        learning_rate="adaptive",
                        eta0=learning_rate, max_iter=epochs, tol=1e-4, n_iter_no_change=5, shuffle=True,
                        random_state=seed % (2**31))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x / scale, y, coef_init=coef.reshape(1, -1), intercept_init=np.array([expert.bias]),
                sample_weight=w / w.mean())
    learned = clf.coef_[0] / scale
    expert.weights = {**{k: v for k, v in expert.weights.items() if k not in index and k in PRIOR_WEIGHTS},
                      **{n: float(v) for n, v in zip(names, learned, strict=True)}}
    expert.bias = float(clf.intercept_[0])


#: The L1 penalty of the ``sparse`` experts: SGD's ``alpha`` is this over the effective number of outcomes (about 170
#: for ``main_recent`` at the default half-life of 60). Measured (BENCHMARKS.md, "Issue 17, fourth pass"; 6 streams x
#: 9 rules x 2 seed sets x 2 noise levels): with L2 the forgetting expert kept all 15-odd main effects, and on the rule
#: that changes halfway the gap to the oracle was 0.067 on the clean streams of seeds 21-26. With L1 at 4 it keeps a
#: handful and the gap is 0.043 (as a ninth expert beside the L2 one, L1 at 2 / 4 / 8 gave 0.055 / 0.043 / 0.058). An
#: L2 fit of only the outcomes after the change, were its time known, gets 0.043 too.
SPARSE_L1 = 4.0


#: The ``trees`` expert: gradient boosting (log-loss, Newton leaves) of shallow regression trees on what its linear
#: part leaves unexplained, so thresholds ("above some amount fails") and interactions ("high support AND low
#: risk", "this category AND a large amount") are learned as steps instead of being approximated by a line. Its
#: linear part has no amount hinges: the trees place the amount's thresholds where the outcomes put them (measured
#: on the 6 streams of the ``amount`` rule, a step at 250 XMR: mean gap to the oracle 0.075 without the expert,
#: 0.057 with it on top of the hinges, 0.045 with the hinges left to the trees). Depth 2, 40 rounds of 0.1, at
#: least 15 outcomes a leaf: a few tens of milliseconds for 500 outcomes; refitted from scratch at each training.
TREE_ROUNDS = 40
TREE_DEPTH = 2
TREE_STEP = 0.1
TREE_MIN_LEAF = 15
TREE_L2 = 2.0


def _fit_trees(expert: Expert, rows: list[dict[str, float]], outcomes: list[bool],
               sample_weight: list[float]) -> list[dict[str, list]]:
    """Boosted trees on the main effects, starting from the expert's linear score (deterministic).

    Newton boosting of log-loss: each round fits a ``DecisionTreeRegressor`` to ``gradient / hessian`` weighted by
    the hessian, then sets every node's value (leaves and inner nodes, so a prediction can be split along its path
    by feature for the rationale) to ``step * sum(gradient) / (sum(hessian) + l2)`` of the outcomes it holds.
    Stored as JSON lists (feature names, thresholds, children, values) with the model.
    """
    import numpy as np
    from sklearn.tree import DecisionTreeRegressor

    names = sorted({n for r in rows for n in r if not n.startswith("amount:over")})
    if len(rows) < 2 * TREE_MIN_LEAF or len(set(outcomes)) < 2:
        return []
    x = np.array([[r.get(n, 0.0) for n in names] for r in rows])
    y = np.array(outcomes, dtype=float)
    w = np.asarray(sample_weight, dtype=float)
    z = np.array([expert.logit(r) for r in rows])
    trees = []
    for _ in range(TREE_ROUNDS):
        p = 1.0 / (1.0 + np.exp(-z))
        g, h = y - p, np.maximum(p * (1 - p), 1e-6)
        reg = DecisionTreeRegressor(max_depth=TREE_DEPTH, min_samples_leaf=TREE_MIN_LEAF, random_state=0)
        reg.fit(x, g / h, sample_weight=w * h)
        path = reg.decision_path(x)
        big_g, big_h = path.T @ (w * g), path.T @ (w * h)
        value = TREE_STEP * big_g / (big_h + TREE_L2)
        t = reg.tree_
        trees.append({"feature": [names[f] if f >= 0 else "" for f in t.feature],
                      "threshold": [float(v) for v in t.threshold], "left": [int(v) for v in t.children_left],
                      "right": [int(v) for v in t.children_right], "value": [float(v) for v in value]})
        z = z + value[reg.apply(x)]
    return trees
