"""The Eliza agent's service layer: proposals, the learned decision model, and the decision ledger in Redis.

**Decision model.** Logistic regression over the proposal's criteria. Each criterion is a signal in
[0, 1]; it enters centred (``x - 0.5``) so that the bias carries the base rate. Unknown criterion names
get a weight of 0 and are learned like the others. The starting weights (:data:`PRIOR_WEIGHTS`) are the
seed's basic decision rule: support and alignment count for, risk and treasury impact against.
``p = sigmoid(bias + sum(w_i * (x_i - 0.5)))`` is the predicted probability that the proposal succeeds.
The decision is approve when ``p >= 0.5 + defer_margin``, reject when ``p <= 0.5 - defer_margin``, and
defer in between.

**Learning.** Every recorded outcome is a labelled example (did the proposal succeed?). Self-improvement
runs stochastic gradient descent on the log-loss over all outcomes, with the configured learning rate
(0.01 by default, as in the seed), a bounded number of epochs and a small L2 penalty. Nothing is
incremented by hand: the weights move only by the gradient of recorded outcomes.

**Accuracy.** A decision with an outcome is correct when it approved a success or rejected a failure.
A deferral is never correct (otherwise deferring everything would look perfect); the share of
deferrals is reported next to it.

**Ledger.** One Redis hash per agent holds every decision (features, score, rationale, sources and,
once fed back, the outcome). The model and its versions are JSON under the agent's keys.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
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


# ----------------------------------------------------------------------------------- input records
@dataclass
class Proposal:
    """A DAO proposal or event to decide on."""

    id: str
    title: str
    description: str = ""
    category: str = "general"
    amount_xmr: float = 0.0
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
        number = _number(value, f"proposal {pid}: criterion {name!r}")
        if not 0.0 <= number <= 1.0:
            raise ValueError(f"proposal {pid}: criterion {name!r}={number} is outside [0,1]")
        clean[name.strip()] = number
    amount = _number(raw.get("amount_xmr", 0.0), f"proposal {pid}: 'amount_xmr'")
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


# ----------------------------------------------------------------------------------- the model
def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass
class DecisionModel:
    """Logistic decision model over centred criteria (see the module docstring)."""

    weights: dict[str, float] = field(default_factory=lambda: dict(PRIOR_WEIGHTS))
    bias: float = 0.0
    version: int = 0
    examples_seen: int = 0
    updated_at: float = 0.0

    @staticmethod
    def features(criteria: dict[str, float]) -> dict[str, float]:
        """Centred features of a proposal's criteria."""
        return {name: value - 0.5 for name, value in criteria.items()}

    def logit(self, criteria: dict[str, float]) -> float:
        """The linear score before the sigmoid."""
        return self.bias + sum(self.weights.get(n, 0.0) * x for n, x in self.features(criteria).items())

    def probability(self, criteria: dict[str, float]) -> float:
        """Predicted probability that the proposal succeeds."""
        return _sigmoid(self.logit(criteria))

    def contributions(self, criteria: dict[str, float]) -> dict[str, float]:
        """Each criterion's signed contribution to the logit, largest first."""
        parts = {n: self.weights.get(n, 0.0) * x for n, x in self.features(criteria).items()}
        return dict(sorted(parts.items(), key=lambda kv: -abs(kv[1])))

    def train(
        self,
        examples: Sequence[tuple[dict[str, float], bool]],
        *,
        learning_rate: float,
        epochs: int,
        l2: float = 1e-4,
        seed: int = 0,
    ) -> dict[str, float]:
        """SGD on the log-loss over ``examples`` (criteria, success). Returns loss before and after."""
        if not examples:
            return {"examples": 0, "loss_before": 0.0, "loss_after": 0.0}
        if learning_rate <= 0 or epochs < 1:
            raise UserError("learning_rate must be > 0 and epochs >= 1")
        before = self.log_loss(examples)
        order = list(range(len(examples)))
        rng = random.Random(seed + self.version)
        for _ in range(epochs):
            rng.shuffle(order)
            for i in order:
                criteria, success = examples[i]
                feats = self.features(criteria)
                err = (1.0 if success else 0.0) - _sigmoid(self.logit(criteria))
                self.bias += learning_rate * err
                for name, x in feats.items():
                    w = self.weights.get(name, 0.0)
                    self.weights[name] = w + learning_rate * (err * x - l2 * w)
        self.version += 1
        self.examples_seen = len(examples)
        self.updated_at = time.time()
        return {"examples": len(examples), "loss_before": before, "loss_after": self.log_loss(examples)}

    def log_loss(self, examples: Sequence[tuple[dict[str, float], bool]]) -> float:
        """Mean log-loss of the model on ``examples``."""
        if not examples:
            return 0.0
        total = 0.0
        for criteria, success in examples:
            p = min(max(self.probability(criteria), 1e-9), 1 - 1e-9)
            total -= math.log(p if success else 1 - p)
        return total / len(examples)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DecisionModel:
        """Inverse of :meth:`to_dict`."""
        return cls(
            weights={str(k): float(v) for k, v in raw.get("weights", {}).items()},
            bias=float(raw.get("bias", 0.0)),
            version=int(raw.get("version", 0)),
            examples_seen=int(raw.get("examples_seen", 0)),
            updated_at=float(raw.get("updated_at", 0.0)),
        )


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
            from xmrt.redis_server import connect

            client = connect(config)
        self.r = client
        base = agent_key_base(config, agent_id, self.principal)
        self.k_decisions = f"{base}:decisions"
        self.k_model = f"{base}:model"
        self.k_versions = f"{base}:model_versions"
        self.k_metrics = f"{base}:metrics"
        self.k_prompts = f"{base}:prompts"
        self.k_actions = f"{base}:actions"

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

    def model_versions(self, n: int = 10) -> list[dict[str, Any]]:
        """The latest model versions, newest first."""
        return [json.loads(v) for v in self.r.lrange(self.k_versions, 0, n - 1)]

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
            from xmrt.audit import record as audit  # every decision, whichever entry point made it

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
                    from xmrt.audit import record as audit

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
    def metrics(self, recent: int = 100) -> dict[str, Any]:
        """Decision accuracy and friends, computed from recorded outcomes."""
        decisions = self.all()
        judged = [d for d in decisions if d.get("outcome")]
        correct = [is_correct(d["decision"], d["outcome"]["success"]) for d in judged]
        last = correct[-recent:]
        briers = [(d["score"] - (1.0 if d["outcome"]["success"] else 0.0)) ** 2 for d in judged if "score" in d]
        return {
            "decisions": len(decisions),
            "with_outcome": len(judged),
            "pending_outcomes": len(decisions) - len(judged),
            "decision_accuracy": (sum(correct) / len(correct)) if correct else None,
            "recent_accuracy": (sum(last) / len(last)) if last else None,
            "recent_window": len(last),
            "defer_rate": (sum(d["decision"] == "defer" for d in judged) / len(judged)) if judged else None,
            "brier_score": (sum(briers) / len(briers)) if briers else None,
        }

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
