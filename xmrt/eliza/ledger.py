"""The decision ledger in Redis: decisions, outcomes, the model and the LLM verdict cache, per agent."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis

from xmrt.config import Config
from xmrt.eliza.metrics import metrics_of
from xmrt.eliza.model import DecisionModel
from xmrt.eliza.proposals import Outcome
from xmrt.errors import UserError
from xmrt.policy import LOCAL, Principal
from xmrt.redis.clients import redis_client


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
        self.r = client or redis_client(config)  # the process's shared client, checked once
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
