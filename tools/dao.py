"""DAO action tools: what an approved proposal can make the agent do.

Supported ``action`` objects on a proposal (executed only when it is approved):

* ``{"type": "record_task", "title": "...", "details": "..."}``: append a task to the DAO task list.
* ``{"type": "record_application", "applicant": "...", "details": "..."}``: record an application.
* ``{"type": "analyze_repository", "url": "<git URL or local path>", "collection": "..."}``: ingest a
  git repository into the knowledge base, so later decisions can cite it.

Tasks and applications are Redis lists under ``<root>:dao:`` (newest last, trimmed to 10,000), where the root is
the key prefix for the local user and the user's own root for a served API user (:mod:`xmrt.policy`).

**At most once.** :func:`run_action` claims the action in the agent's ledger before running it
(:meth:`xmrt.eliza.DecisionLedger.claim_action`): a second attempt for the same agent and proposal, from another
process or from a durable runtime that runs the step again, gets the first attempt's record instead of a rerun.
"""

from __future__ import annotations

import json
import time
from typing import Any

from langchain_core.tools import tool

from xmrt import services
from xmrt.eliza import DecisionLedger
from xmrt.policy import Principal, current_principal

MAX_ITEMS = 10_000


def _key(kind: str, principal: Principal | None = None) -> str:
    config = services.config()
    return f"{(principal or current_principal()).redis_root(config)}:dao:{kind}"


def _append(kind: str, record: dict[str, Any]) -> int:
    from xmrt.redis.clients import redis_client

    key = _key(kind)
    pipe = redis_client(services.config()).pipeline(transaction=True)
    pipe.rpush(key, json.dumps({**record, "at": time.time()}))
    pipe.ltrim(key, -MAX_ITEMS, -1)
    length, _ = pipe.execute()
    return int(length)


def list_records(kind: str, n: int = 20, principal: Principal | None = None) -> list[dict[str, Any]]:
    """The newest ``n`` records of ``tasks`` or ``applications``, newest last."""
    from xmrt.redis.clients import redis_client

    return [json.loads(v) for v in redis_client(services.config()).lrange(_key(kind, principal), -n, -1)]


@tool
def record_task(title: str, details: str = "", proposal_id: str = "", agent_id: str = "eliza") -> str:
    """Add a task to the DAO's task list (for an approved proposal)."""
    if not title.strip():
        return "error: a task needs a title"
    n = _append("tasks", {"title": title.strip(), "details": details, "proposal_id": proposal_id, "agent": agent_id})
    return f"task recorded (#{n})"


@tool
def record_application(applicant: str, details: str = "", proposal_id: str = "", agent_id: str = "eliza") -> str:
    """Record an application (grant, membership, role) approved by the DAO."""
    if not applicant.strip():
        return "error: an application needs an applicant"
    n = _append(
        "applications", {"applicant": applicant.strip(), "details": details, "proposal_id": proposal_id,
                         "agent": agent_id}
    )
    return f"application recorded (#{n})"


@tool
def analyze_repository(url: str, collection: str = "default") -> str:
    """Ingest a git repository (clone URL or local path) into the knowledge base and report the counts."""
    from xmrt.kb.ingest import ingest_path

    try:
        summary = ingest_path(services.config(), url, collection=collection, progress=False)
    except Exception as exc:  # noqa: BLE001 - reported to the agent as the action's outcome
        return f"error: {exc}"
    return json.dumps({k: summary.get(k) for k in ("added", "updated", "unchanged", "removed", "chunks_embedded")})


ACTION_TOOLS = {
    "record_task": record_task,
    "record_application": record_application,
    "analyze_repository": analyze_repository,
}


def run_action(ledger: DecisionLedger, proposal_id: str, action: dict[str, Any]) -> dict[str, Any]:
    """Execute a proposal's action through its tool, at most once per agent and proposal id.

    Returns:
        ``{type, status, result}``; ``status`` is ``done``, ``error``, ``skipped`` (unknown type), or
        ``already`` when an earlier attempt claimed it (its record is in ``earlier``).
    """
    kind = action.get("type")
    selected = ACTION_TOOLS.get(kind)
    if selected is None:
        return {"type": kind, "status": "skipped", "result": f"unknown action type {kind!r}"}
    earlier = ledger.claim_action(proposal_id, action)
    if earlier is not None:
        return {"type": kind, "status": "already", "result": "this proposal's action was already run (or started) "
                "for this agent; it is not run twice", "earlier": earlier}
    args = {k: v for k, v in action.items() if k != "type" and k in selected.args}
    if "proposal_id" in selected.args:
        args.update(proposal_id=proposal_id, agent_id=ledger.agent_id)
    try:
        result = selected.invoke(args)
    except Exception as exc:  # noqa: BLE001 - bad action arguments are an outcome, not a crash
        outcome = {"type": kind, "status": "error", "result": str(exc)}
    else:
        outcome = {"type": kind, "status": "error" if str(result).startswith("error") else "done", "result": result}
    ledger.finish_action(proposal_id, outcome)
    return outcome
