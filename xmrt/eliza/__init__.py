"""The Eliza agent's service layer: proposals, the learned decision model, and the decision ledger in Redis.

**Features.** Every field of a proposal becomes named features (:class:`FeatureSpace`): each criterion enters
centred (``x - 0.5``, so a missing one is neutral); ``amount_xmr`` as a robustly scaled log and three quartile
hinges; ``category`` one-hot over the categories seen in outcomes (an unseen one is neutral); the words of the
title and description that recur in past proposals; and the LLM's verdict (``llm_verdict``) when it was asked.
New features start at weight 0 and move only by learning from outcomes. The seed's basic rule
(:data:`PRIOR_WEIGHTS`) is the starting point: support and alignment count for, risk and treasury impact against.

**Model.** A mixture of logistic experts (:data:`EXPERTS`): main effects, words, category interactions, products
of criteria, and two that forget old outcomes (half-life, default 60) so that a rule that changes is followed. The
mixture weights are the experts' Bayesian posterior given their prequential log-loss (the score each gave a
proposal when it was decided, before its outcome was known). ``p`` is the predicted probability of success;
approve when ``p >= 0.5 + defer_margin``, reject when ``p <= 0.5 - defer_margin``, defer in between.

**Learning.** Every recorded outcome is a labelled example. Self-improvement fits each expert with scikit-learn's
``SGDClassifier`` (log-loss, L2), warm-started from its stored weights, on features scaled to unit variance, with
the ``adaptive`` schedule starting at the configured learning rate (0.01 by default, as in the seed). Nothing is
incremented by hand: the weights move only by the gradient of recorded outcomes.

**Accuracy and calibration** (:func:`metrics_of`). A decision with an outcome is correct when it approved a
success or rejected a failure; a deferral is never correct (otherwise deferring everything would look perfect).
Brier score, log-loss, a reliability table and the learning curve are computed from the same records.

**Ledger.** One Redis hash per agent holds every decision (features, signals, expert scores, score, rationale,
sources and, once fed back, the outcome). The model (format 2; format 1 migrates on load), its versions and the
LLM verdict cache are under the agent's keys.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from xmrt.config import Config
from xmrt.errors import UserError
from xmrt.policy import LOCAL, Principal

PRIOR_WEIGHTS: dict[str, float] = {
    "community_support": 1.0,
    "alignment": 1.0,
    "technical_risk": -1.0,
    "treasury_impact": -0.5,
    # The LLM's verdict enters as a criterion (approve 1, defer 0.5, reject 0) whose weight is learned
    # from outcomes like any other: a model whose verdicts don't predict outcomes loses its say.
    "llm_verdict": 0.5,
}
DECISIONS = ("approve", "reject", "defer")
MAX_CRITERIA = 64
MAX_TEXT = 20_000
RESERVED_MARKS = (":", "×", "²")


# ----------------------------------------------------------------------------------- input records
@dataclass
class Proposal:
    """A DAO proposal or event to decide on."""

    id: str
    title: str
    description: str = ""
    category: str = "general"
    amount_xmr: float | None = None
    criteria: dict[str, float] = field(default_factory=dict)
    action: dict[str, Any] | None = None

    def text(self) -> str:
        """Title and description, for retrieval queries and prompts."""
        return f"{self.title}. {self.description}".strip()


@dataclass
class Outcome:
    """The observed outcome of a decided proposal."""

    id: str
    success: bool


@dataclass
class LineError:
    """A rejected input line: its number and what is wrong with it."""

    line: int
    error: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.error}"


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def proposal_from_dict(raw: Any) -> Proposal:
    """Validate one proposal object.

    Raises:
        ValueError: The message names the offending field.
    """
    if not isinstance(raw, dict):
        raise ValueError(f"a proposal must be a JSON object, got {type(raw).__name__}")
    pid = raw.get("id")
    if pid is None or (isinstance(pid, str) and not pid.strip()):
        raise ValueError("missing 'id'")
    if not isinstance(pid, str | int) or isinstance(pid, bool):
        raise ValueError(f"'id' must be a string or integer, got {pid!r}")
    title = raw.get("title")
    if not isinstance(title, str) or not title.strip():
        raise ValueError(f"proposal {pid}: missing or empty 'title'")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"proposal {pid}: 'description' must be a string")
    criteria = raw.get("criteria", {})
    if not isinstance(criteria, dict):
        raise ValueError(f"proposal {pid}: 'criteria' must be an object of name -> number in [0,1]")
    if len(criteria) > MAX_CRITERIA:
        raise ValueError(f"proposal {pid}: more than {MAX_CRITERIA} criteria")
    clean: dict[str, float] = {}
    for name, value in criteria.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"proposal {pid}: criterion names must be non-empty strings")
        if any(mark in name for mark in RESERVED_MARKS):
            raise ValueError(f"proposal {pid}: criterion {name!r}: ':' and '×' are reserved for derived features")
        number = _number(value, f"proposal {pid}: criterion {name!r}")
        if not 0.0 <= number <= 1.0:
            raise ValueError(f"proposal {pid}: criterion {name!r}={number} is outside [0,1]")
        clean[name.strip()] = number
    amount = raw.get("amount_xmr")
    if amount is not None:
        amount = _number(amount, f"proposal {pid}: 'amount_xmr'")
        if amount < 0:
            raise ValueError(f"proposal {pid}: 'amount_xmr' must be >= 0")
    action = raw.get("action")
    if action is not None and not (isinstance(action, dict) and isinstance(action.get("type"), str)):
        raise ValueError(f"proposal {pid}: 'action' must be an object with a 'type'")
    category = raw.get("category", "general")
    return Proposal(
        id=str(pid).strip(),
        title=title.strip()[:MAX_TEXT],
        description=description[:MAX_TEXT],
        category=str(category or "general"),
        amount_xmr=amount,
        criteria=clean,
        action=action,
    )


def outcome_from_dict(raw: Any) -> Outcome:
    """Validate one outcome object (``id`` and boolean ``success``)."""
    if not isinstance(raw, dict):
        raise ValueError(f"an outcome must be a JSON object, got {type(raw).__name__}")
    pid = raw.get("id")
    if pid is None or (isinstance(pid, str) and not pid.strip()) or isinstance(pid, bool):
        raise ValueError("missing 'id'")
    success = raw.get("success")
    if not isinstance(success, bool):
        raise ValueError(f"outcome {pid}: 'success' must be true or false, got {success!r}")
    return Outcome(id=str(pid).strip(), success=success)


def parse_jsonl(lines: Iterable[str], parse) -> tuple[list, list[LineError]]:
    """Parse JSON lines with ``parse``; bad lines become :class:`LineError` and good lines still count.

    Duplicate ids within the input are rejected after their first occurrence.
    """
    good, errors, seen = [], [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = parse(json.loads(line))
        except json.JSONDecodeError as exc:
            errors.append(LineError(number, f"malformed JSON ({exc.msg} at column {exc.colno})"))
            continue
        except ValueError as exc:
            errors.append(LineError(number, str(exc)))
            continue
        if record.id in seen:
            errors.append(LineError(number, f"duplicate id {record.id!r} in this input"))
            continue
        seen.add(record.id)
        good.append(record)
    return good, errors


# ----------------------------------------------------------------------------------- features
_WORD = re.compile(r"[a-z]{3,24}")
STOPWORDS = frozenset(
    "the and for with that this from into onto our their its are was were will would can could should has have "
    "had not but all any each more most other some such than too very via per about over under after before "
    "between during without within who whom which what when where why how you your they them his her she him "
    "also just only new use using used make made get got one two three dao xmr".split()
)
MAX_WORDS = 64
VOCABULARY_SIZE = 24
AMOUNT_FEATURES = ("amount:log", "amount:over_q1", "amount:over_q2", "amount:over_q3")
PAIR_CRITERIA = 8


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def text_words(title: str, description: str = "") -> list[str]:
    """The distinct content words of a proposal's text (lower case, no stop words, at most 64)."""
    text = f"{title} {description[:4000]}".lower()
    return sorted({w for w in _WORD.findall(text) if w not in STOPWORDS})[:MAX_WORDS]


def proposal_signals(proposal: dict[str, Any]) -> dict[str, Any]:
    """What a decision record keeps of a proposal, besides its criteria, for learning: amount, category, words."""
    return {"amount_xmr": proposal.get("amount_xmr"), "category": proposal.get("category"),
            "words": text_words(str(proposal.get("title", "")), str(proposal.get("description", "")))}


@dataclass(frozen=True)
class Example:
    """Everything the model can learn from in one proposal: criteria (and the LLM's verdict), amount, category, words.

    ``criteria`` are raw values in [0, 1] (``llm_verdict`` among them when the model was asked). ``amount`` and
    ``category`` are None when unknown (decisions recorded before format 2): their features are then neutral.
    """

    criteria: dict[str, float]
    amount: float | None = None
    category: str | None = None
    words: tuple[str, ...] = ()

    @classmethod
    def of(cls, proposal: dict[str, Any], criteria: dict[str, float] | None = None) -> Example:
        """From a proposal dict (``criteria`` overrides its criteria, e.g. with the LLM's verdict added)."""
        signals = proposal_signals(proposal)
        return cls(dict(proposal.get("criteria") or {} if criteria is None else criteria),
                   signals["amount_xmr"], signals["category"], tuple(signals["words"]))

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Example:
        """From a stored decision (``features`` are its raw criteria; ``signals`` are absent in old records)."""
        signals = record.get("signals") or {}
        amount = signals.get("amount_xmr")
        return cls(dict(record.get("features") or {}), float(amount) if amount is not None else None,
                   signals.get("category"), tuple(signals.get("words") or ()))


def _as_example(value: Example | dict[str, float]) -> Example:
    return value if isinstance(value, Example) else Example(dict(value))


@dataclass
class FeatureSpace:
    """How an :class:`Example` becomes named numeric features; refitted on the recorded outcomes at each training.

    * a criterion ``c`` (and ``llm_verdict``): ``c - 0.5``, so a missing one is neutral;
    * ``amount:log``: ``(log(1 + amount) - median) / IQR`` over the outcomes seen (robust to huge amounts), and
      ``amount:over_q1..3``: hinges ``max(0, log(1 + amount) - quartile) / IQR``, so the effect of the amount
      may bend (a rule such as "above 200 XMR fails");
    * ``category:<name>``: one-hot over the categories seen in outcomes; an unseen category has none (neutral);

    The experts add to these main effects: ``word:<w>``, the words that recur in past proposals' text (document
    frequency between 3 outcomes and half of them, the 24 most frequent); ``<category>×<feature>`` interactions;
    and ``<a>×<b>`` products (and squares) of the criteria and the amount.
    """

    amount_center: float = math.log1p(100.0)
    amount_scale: float = 1.5
    amount_knots: tuple[float, ...] = (math.log1p(30.0), math.log1p(100.0), math.log1p(300.0))
    categories: tuple[str, ...] = ()
    vocabulary: tuple[str, ...] = ()
    criteria: tuple[str, ...] = ()

    @classmethod
    def fit(cls, examples: Sequence[Example]) -> FeatureSpace:
        """The space of a set of examples (amount quartiles, categories and words seen)."""
        logs = sorted(math.log1p(e.amount) for e in examples if e.amount is not None)
        space = cls()
        if len(logs) >= 8:
            q1, q2, q3 = (logs[min(len(logs) - 1, int(q * len(logs)))] for q in (0.25, 0.5, 0.75))
            space.amount_center, space.amount_scale = q2, max(q3 - q1, 0.25)
            space.amount_knots = (q1, q2, q3)
        space.categories = tuple(sorted({e.category for e in examples if e.category}))[:64]
        df: dict[str, int] = {}
        for e in examples:
            for w in set(e.words):
                df[w] = df.get(w, 0) + 1
        top = max(3, int(0.5 * len(examples)))
        ranked = [w for w, n in sorted(df.items(), key=lambda kv: (-kv[1], kv[0])) if 3 <= n <= top]
        space.vocabulary = tuple(sorted(ranked[:VOCABULARY_SIZE]))
        counts: dict[str, int] = {}
        for e in examples:
            for c in e.criteria:
                if c != "llm_verdict":
                    counts[c] = counts.get(c, 0) + 1
        space.criteria = tuple(c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))[:MAX_CRITERIA]
        return space

    def main(self, ex: Example) -> dict[str, float]:
        """Main effects of one example."""
        f = {name: float(x) - 0.5 for name, x in ex.criteria.items()}
        if ex.amount is not None:
            la = math.log1p(max(0.0, ex.amount))
            f["amount:log"] = (la - self.amount_center) / self.amount_scale
            for name, knot in zip(AMOUNT_FEATURES[1:], self.amount_knots, strict=False):
                f[name] = max(0.0, la - knot) / self.amount_scale
        if ex.category and ex.category in self.categories:
            f[f"category:{ex.category}"] = 1.0
        return f

    def expand(self, ex: Example, groups: Sequence[str]) -> dict[str, float]:
        """The features of an expert: main effects plus its groups (``words``, ``category``, ``pairs``)."""
        f = self.main(ex)
        if "words" in groups:
            vocab = set(self.vocabulary)
            for w in ex.words:
                if w in vocab:
                    f[f"word:{w}"] = 1.0
        numeric = [n for n in (*self.criteria[:PAIR_CRITERIA], "amount:log") if n in f]
        if "category" in groups and ex.category and ex.category in self.categories:
            for n in (*numeric, *(a for a in AMOUNT_FEATURES[1:] if a in f)):
                f[f"{ex.category}×{n}"] = 2.0 * f[n]
        if "pairs" in groups:
            crit = [n for n in self.criteria[:PAIR_CRITERIA] if n in f]
            for i, a in enumerate(crit):
                f[f"{a}²"] = 4.0 * f[a] * f[a] - 1.0 / 3.0
                for b in (*crit[i + 1 :], *(["amount:log"] if "amount:log" in f else [])):
                    f[f"{a}×{b}"] = 4.0 * f[a] * f[b]
        return f

    def describe(self, name: str) -> str:
        """A reader's name for a feature (hinges name their amount in XMR)."""
        if name.startswith("amount:over_q"):
            knot = self.amount_knots[int(name[-1]) - 1]
            return f"amount above {math.expm1(knot):.0f} XMR"
        if name == "amount:log":
            return "amount (log)"
        return name

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"amount_center": self.amount_center, "amount_scale": self.amount_scale,
                "amount_knots": list(self.amount_knots), "categories": list(self.categories),
                "vocabulary": list(self.vocabulary), "criteria": list(self.criteria)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> FeatureSpace:
        """Inverse of :meth:`to_dict` (defaults for missing parts)."""
        raw = raw or {}
        space = cls()
        space.amount_center = float(raw.get("amount_center", space.amount_center))
        space.amount_scale = float(raw.get("amount_scale", space.amount_scale))
        space.amount_knots = tuple(float(k) for k in raw.get("amount_knots", space.amount_knots))[:3]
        space.categories = tuple(str(c) for c in raw.get("categories", ()))
        space.vocabulary = tuple(str(w) for w in raw.get("vocabulary", ()))
        space.criteria = tuple(str(c) for c in raw.get("criteria", ()))
        return space


# ----------------------------------------------------------------------------------- the model
#: The experts of the mixture: feature groups and whether they forget (half-life in outcomes, None = never).
EXPERTS: dict[str, tuple[tuple[str, ...], bool]] = {
    "main": ((), False),
    "main_recent": ((), True),
    "by_category": (("category",), False),
    "by_category_recent": (("category",), True),
    "pairs": (("pairs",), False),
    "text": (("words",), False),
}


@dataclass
class Expert:
    """One logistic model of the mixture."""

    groups: tuple[str, ...] = ()
    recent: bool = False
    weights: dict[str, float] = field(default_factory=lambda: dict(PRIOR_WEIGHTS))
    bias: float = 0.0

    def logit(self, features: dict[str, float]) -> float:
        """The linear score before the sigmoid."""
        return self.bias + sum(self.weights.get(n, 0.0) * x for n, x in features.items())

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"groups": list(self.groups), "recent": self.recent, "weights": self.weights, "bias": self.bias}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Expert:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(raw.get("groups", ())), bool(raw.get("recent", False)),
                   {str(k): float(v) for k, v in raw.get("weights", {}).items()}, float(raw.get("bias", 0.0)))


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
            for n, x in self.space.expand(ex, e.groups).items():
                parts[n] = parts.get(n, 0.0) + share * e.weights.get(n, 0.0) * x
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

        Each expert is scikit-learn's ``SGDClassifier`` (log-loss, L2 ``alpha = l2 / outcomes``), warm-started from
        its stored weights, on features scaled to unit variance, with the ``adaptive`` schedule: the step starts at
        ``learning_rate`` and is divided by 5 whenever 5 passes bring no improvement; at most ``epochs`` passes.
        Forgetting experts weigh an outcome ``0.5 ** (age / half_life)``. The mixture weights are the Bayesian
        posterior of the experts given their *prequential* log-loss: the scores they gave each proposal when it
        was decided (``expert_scores``), before its outcome was known, discounted with ``mixture_half_life``.
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
            self.mixture = _posterior_mixture(list(self.experts), [y for _, y in data], list(expert_scores),
                                              mixture_half_life, self.mixture)
        n = len(data)
        for i, (name, expert) in enumerate(self.experts.items()):
            recency = [0.5 ** ((n - 1 - j) / self.half_life) for j in range(n)] if expert.recent else [1.0] * n
            _fit_expert(expert, [self.space.expand(x, expert.groups) for x, _ in data], [y for _, y in data],
                        recency, learning_rate=learning_rate, epochs=epochs, l2=l2, seed=seed + self.version + i)
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


def _posterior_mixture(names: list[str], outcomes: list[bool], scores: list[dict[str, float] | None],
                       half_life: float, current: dict[str, float]) -> dict[str, float]:
    """Posterior weights of the experts from their discounted prequential log-loss (uniform prior)."""
    rows = [(s, y) for s, y in zip(scores, outcomes, strict=True) if s and all(n in s for n in names)]
    if not rows:
        return current
    loss = dict.fromkeys(names, 0.0)
    m = len(rows)
    for j, (s, y) in enumerate(rows):
        discount = 0.5 ** ((m - 1 - j) / half_life)
        for n in names:
            p = min(max(float(s[n]), 1e-4), 1 - 1e-4)
            loss[n] -= discount * math.log(p if y else 1 - p)
    best = min(loss.values())
    raw = {n: math.exp(-(loss[n] - best)) for n in names}
    total = sum(raw.values())
    return {n: v / total for n, v in raw.items()}


#: Interactions and words, scaled to this share of unit variance, pay 1 / 0.3² = 11 times the L2 penalty of a main
#: effect. Measured (6 streams x 6 rules): at 1.0 the interaction experts were overconfident (log-loss above 1 on
#: some batches) and lost the mixture even where they were the most accurate; at 0.3 the mixture's gap to the oracle
#: on the category-by-amount rule fell from 0.08-0.10 to 0.03, other rules unchanged.
INTERACTION_SHRINK = 0.3


def _is_secondary(name: str) -> bool:
    return "×" in name or "²" in name or name.startswith("word:")


def _fit_expert(expert: Expert, rows: list[dict[str, float]], outcomes: list[bool], sample_weight: list[float], *,
                learning_rate: float, epochs: int, l2: float, seed: int) -> None:
    """Warm-started SGD on one expert's features (scaled to unit variance; weights stored unscaled)."""
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
    clf = SGDClassifier(loss="log_loss", penalty="l2", alpha=l2 / max(1.0, n_eff), learning_rate="adaptive",
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




def decide_from_probability(p: float, defer_margin: float) -> str:
    """The decision (approve, reject or defer) for a success probability."""
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


# ----------------------------------------------------------------------------------- the ledger
class UnknownDecision(UserError):
    """Feedback names a proposal that was never decided."""


class DuplicateFeedback(UserError):
    """Feedback for a proposal whose outcome is already recorded."""


def validate_agent_id(agent_id: str) -> str:
    """Agent ids are non-empty strings of at most 128 characters."""
    if not isinstance(agent_id, str) or not agent_id.strip() or len(agent_id) > 128:
        raise UserError(f"agent id must be a non-empty string of at most 128 characters, got {agent_id!r}")
    return agent_id


def agent_key_base(config: Config, agent_id: str, principal: Principal | None = None) -> str:
    """The Redis key root of one agent's data: under the principal's own root (a tenant's user name first)."""
    return f"{(principal or LOCAL).redis_root(config)}:eliza:{agent_id}"


def list_agents(client: redis.Redis, config: Config, principal: Principal | None = None, limit: int = 50) -> list[str]:
    """Agent ids of a principal that have a decision ledger (SCAN, never KEYS)."""
    root = f"{(principal or LOCAL).redis_root(config)}:eliza:"
    found: set[str] = set()
    for key in client.scan_iter(match=_glob_escape(root) + "*:decisions", count=500):
        name = key.decode() if isinstance(key, bytes) else key
        found.add(name[len(root):-len(":decisions")])
        if len(found) >= limit:
            break
    return sorted(found)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


#: Store decisions unless their stored record already has an outcome; returns the ids kept as they were.
_RECORD_UNLESS_JUDGED = """
local kept = {}
for i = 1, #ARGV, 2 do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  local judged = false
  if old then
    local ok, rec = pcall(cjson.decode, old)
    judged = ok and type(rec) == 'table' and rec['outcome'] ~= nil and rec['outcome'] ~= cjson.null
  end
  if judged then
    table.insert(kept, ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return kept
"""


class DecisionLedger:
    """Decisions, outcomes, the learned model and the metrics history of one agent, in Redis."""

    MODEL_VERSIONS_KEPT = 50
    METRICS_KEPT = 1000

    def __init__(self, config: Config, agent_id: str, client: redis.Redis | None = None,
                 principal: Principal | None = None) -> None:
        self.config = config
        self.agent_id = validate_agent_id(agent_id)
        self.principal = principal or LOCAL
        if client is None:
            from xmrt.redis.server import connect

            client = connect(config)
        self.r = client
        base = agent_key_base(config, agent_id, self.principal)
        self.k_decisions = f"{base}:decisions"
        self.k_model = f"{base}:model"
        self.k_versions = f"{base}:model_versions"
        self.k_metrics = f"{base}:metrics"
        self.k_prompts = f"{base}:prompts"
        self.k_actions = f"{base}:actions"
        self.k_verdicts = f"{base}:verdicts"

    def _audit_who(self) -> str:
        return self.principal.user if self.principal.tenant else f"agent:{self.agent_id}"

    # -- model --------------------------------------------------------------------------
    def load_model(self) -> DecisionModel:
        """The current learned model (the prior when nothing was learned yet)."""
        raw = self.r.get(self.k_model)
        return DecisionModel.from_dict(json.loads(raw)) if raw else DecisionModel()

    def save_model(self, model: DecisionModel, note: str = "") -> None:
        """Store the model and append it to the version history (atomically)."""
        payload = json.dumps(model.to_dict())
        version = json.dumps({**model.to_dict(), "note": note})
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.k_model, payload)
        pipe.lpush(self.k_versions, version)
        pipe.ltrim(self.k_versions, 0, self.MODEL_VERSIONS_KEPT - 1)
        pipe.execute()

    VERDICT_TTL = 30 * 24 * 3600

    def cached_verdicts(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """LLM verdicts cached under these prompt hashes (one MGET)."""
        if not keys:
            return {}
        raws = self.r.mget([f"{self.k_verdicts}:{k}" for k in keys])
        return {k: json.loads(v) for k, v in zip(keys, raws, strict=True) if v}

    def cache_verdicts(self, verdicts: dict[str, dict[str, Any]]) -> None:
        """Cache LLM verdicts by prompt hash (same model, instructions and proposal: same verdict), for 30 days."""
        if not verdicts:
            return
        pipe = self.r.pipeline(transaction=False)
        for key, value in verdicts.items():
            pipe.set(f"{self.k_verdicts}:{key}", json.dumps(value), ex=self.VERDICT_TTL)
        pipe.execute()

    # -- decisions -----------------------------------------------------------------------
    def record(self, decisions: Sequence[dict[str, Any]]) -> list[str]:
        """Store decisions (each with ``id``), atomically; returns the ids that were *not* stored.

        Re-deciding a proposal that has no outcome yet replaces its decision. A proposal whose outcome is
        already recorded is never decided again: its stored decision and outcome are kept, and its id is
        returned, so the caller can report it (and run no action for it).
        """
        if not decisions:
            return []
        now = time.time()
        args: list[str] = []
        for i, d in enumerate(decisions):
            args += [d["id"], json.dumps({**d, "decided_at": now + i * 1e-6, "outcome": None})]
        kept = [k.decode() if isinstance(k, bytes) else str(k)
                for k in self.r.eval(_RECORD_UNLESS_JUDGED, 1, self.k_decisions, *args) or []]
        stored = [d for d in decisions if d["id"] not in set(kept)]
        if stored:
            from xmrt.redis.audit import record as audit  # every decision, whichever entry point made it

            audit("eliza.decision", who=self._audit_who(), outcome="recorded", config=self.config,
                  details={"decisions": {d["id"]: d.get("decision") for d in stored[:100]},
                           **({"agent": self.agent_id} if self.principal.tenant else {})})
        return kept

    def judged(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored decisions among ``ids`` that already have an outcome (one HMGET)."""
        ids = list(ids)
        if not ids:
            return {}
        out = {}
        for pid, raw in zip(ids, self.r.hmget(self.k_decisions, ids), strict=True):
            if raw:
                record = json.loads(raw)
                if record.get("outcome"):
                    out[pid] = record
        return out

    # -- actions (at most once per agent and proposal) -------------------------------------------
    def claim_action(self, proposal_id: str, action: dict[str, Any]) -> dict[str, Any] | None:
        """Claim the right to run a proposal's action; None when claimed, else the earlier claim's record.

        One ``HSETNX``: of two processes (or a step run twice by a durable runtime) exactly one gets the claim.
        """
        record = {"status": "running", "type": action.get("type"), "claimed_at": time.time()}
        if self.r.hsetnx(self.k_actions, proposal_id, json.dumps(record)):
            return None
        raw = self.r.hget(self.k_actions, proposal_id)
        return json.loads(raw) if raw else {"status": "running"}

    def finish_action(self, proposal_id: str, result: dict[str, Any]) -> None:
        """Store what a claimed action did."""
        self.r.hset(self.k_actions, proposal_id, json.dumps({**result, "finished_at": time.time()}))

    def actions(self) -> dict[str, dict[str, Any]]:
        """Every action record of this agent, by proposal id."""
        return {(k.decode() if isinstance(k, bytes) else k): json.loads(v)
                for k, v in self.r.hscan_iter(self.k_actions, count=500)}

    def get(self, proposal_id: str) -> dict[str, Any] | None:
        """One stored decision, or None."""
        raw = self.r.hget(self.k_decisions, proposal_id)
        return json.loads(raw) if raw else None

    def set_outcome(self, outcome: Outcome) -> dict[str, Any]:
        """Record an outcome against its stored decision.

        Raises:
            UnknownDecision: No decision with that id.
            DuplicateFeedback: The outcome was already recorded.
        """
        key = self.k_decisions
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.hget(key, outcome.id)
                    if raw is None:
                        raise UnknownDecision(f"no decision for id {outcome.id!r} (decide it first)")
                    record = json.loads(raw)
                    if record.get("outcome") is not None:
                        raise DuplicateFeedback(f"outcome for {outcome.id!r} is already recorded")
                    record["outcome"] = {"success": outcome.success, "at": time.time(), "learned": False}
                    pipe.multi()
                    pipe.hset(key, outcome.id, json.dumps(record))
                    pipe.execute()
                    from xmrt.redis.audit import record as audit

                    audit("eliza.outcome", who=self._audit_who(), outcome="recorded", config=self.config,
                          details={"id": outcome.id, "success": outcome.success,
                                   **({"agent": self.agent_id} if self.principal.tenant else {})})
                    return record
                except redis.WatchError:
                    continue

    def all(self) -> list[dict[str, Any]]:
        """Every decision, oldest first (HSCAN, never KEYS)."""
        items = [json.loads(v) for _, v in self.r.hscan_iter(self.k_decisions, count=500)]
        return sorted(items, key=lambda d: d.get("decided_at", 0))

    def with_outcomes(self) -> list[dict[str, Any]]:
        """Decisions that have an outcome, oldest first."""
        return [d for d in self.all() if d.get("outcome")]

    def mark_learned(self, ids: Iterable[str]) -> None:
        """Flag outcomes as used by a self-improvement run."""
        ids = list(ids)
        if not ids:
            return
        raws = self.r.hmget(self.k_decisions, ids)
        mapping = {}
        for pid, raw in zip(ids, raws, strict=True):
            if raw:
                record = json.loads(raw)
                if record.get("outcome"):
                    record["outcome"]["learned"] = True
                    mapping[pid] = json.dumps(record)
        if mapping:
            self.r.hset(self.k_decisions, mapping=mapping)

    # -- metrics -------------------------------------------------------------------------
    def metrics(self, recent: int = 100, window: int = 50) -> dict[str, Any]:
        """Decision accuracy, calibration and the learning curve, computed from recorded outcomes."""
        return metrics_of(self.all(), recent=recent, window=window)

    def append_metrics(self, point: dict[str, Any]) -> None:
        """Append a metrics point (one per cycle) for the dashboard."""
        pipe = self.r.pipeline(transaction=False)
        pipe.rpush(self.k_metrics, json.dumps({**point, "at": time.time()}))
        pipe.ltrim(self.k_metrics, -self.METRICS_KEPT, -1)
        pipe.execute()

    def metrics_history(self, n: int = 100) -> list[dict[str, Any]]:
        """The last ``n`` metrics points, oldest first."""
        return [json.loads(v) for v in self.r.lrange(self.k_metrics, -n, -1)]

    # -- prompt versions -----------------------------------------------------------------------
    def prompt(self, default: str) -> tuple[str, int]:
        """The current decision instructions and their version (0 = the default)."""
        latest = self.r.lindex(self.k_prompts, 0)
        if not latest:
            return default, 0
        record = json.loads(latest)
        return record["text"], int(record["version"])

    def save_prompt(self, text: str, reason: str) -> int:
        """Store a new version of the decision instructions; returns its number."""
        version = self.r.llen(self.k_prompts) + 1
        record = {"text": text, "version": version, "reason": reason, "at": time.time()}
        self.r.lpush(self.k_prompts, json.dumps(record))
        return version

    def prompt_versions(self) -> list[dict[str, Any]]:
        """Every stored version of the decision instructions, newest first."""
        return [json.loads(v) for v in self.r.lrange(self.k_prompts, 0, -1)]
