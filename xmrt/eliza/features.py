"""Features of a proposal: the named inputs of the decision model (:class:`FeatureSpace`)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xmrt.eliza.proposals import MAX_CRITERIA

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
        """The features of an expert: main effects plus its groups (``words``, ``category``, ``pairs``).

        The ``criteria`` group keeps the criteria (and the LLM's verdict) only: no amount, no category.
        """
        f = self.main(ex)
        if "criteria" in groups:
            f = {n: v for n, v in f.items() if n in ex.criteria}
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
