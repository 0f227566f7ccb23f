"""What ``/status``, ``/dashboard/data`` and ``xmrt status`` report, part by part (blocking: run off the loop)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request

from xmrt.config import Config
from xmrt.policy import LOCAL, Principal, request_principal
from xmrt.redis.clients import redis_client

log = logging.getLogger(__name__)


PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_AGENT = "eliza"
_cache: dict[str, tuple[float, Any]] = {}


def _cached(name: str, ttl: float, fn: Callable[[], Any]) -> Any:
    hit = _cache.get(name)
    if hit and time.monotonic() - hit[0] < ttl:
        return hit[1]
    value = fn()
    _cache[name] = (time.monotonic(), value)
    return value


def registered_graphs() -> list[str]:
    """Graph ids the server serves (``LANGSERVE_GRAPHS``, set by ``langgraph dev``), else langgraph.json's."""
    try:
        served = os.environ.get("LANGSERVE_GRAPHS")
        graphs = json.loads(served) if served else json.loads((PROJECT_ROOT / "langgraph.json").read_text())["graphs"]
    except (OSError, ValueError, KeyError):
        return []
    return sorted(graphs)


def redis_part(config: Config) -> dict[str, Any]:
    """``{connected, stats}`` of the configured Redis."""
    from xmrt.redis.server import server_status

    stats = server_status(redis_client(config, fail_fast=True))
    return {"connected": True, "url": _safe_url(config), "stats": stats}


def _safe_url(config: Config) -> str:
    from xmrt.redis.server import describe

    return describe(config.redis_url)


def agents(config: Config, principal: Principal = LOCAL, limit: int = 50) -> list[str]:
    """The principal's agent ids that have a decision ledger (SCAN, never KEYS)."""
    from xmrt.eliza import list_agents

    return list_agents(redis_client(config, fail_fast=True), config, principal, limit)


def eliza_part(config: Config, agent: str = DEFAULT_AGENT, history: int = 0, recent: int = 0,
               principal: Principal = LOCAL) -> dict[str, Any]:
    """An agent's metrics (and optionally its metrics history and recent decisions), in the principal's scope."""
    from xmrt.eliza import DecisionLedger

    ledger = DecisionLedger(config, agent, client=redis_client(config, fail_fast=True), principal=principal)
    out: dict[str, Any] = {"agent": agent, "metrics": ledger.metrics()}
    model = ledger.load_model()
    out["model_version"] = model.version
    out["model"] = {"version": model.version, "examples_seen": model.examples_seen,
                    "mixture": {k: round(v, 4) for k, v in model.mixture.items()}}
    if history:
        out["history"] = ledger.metrics_history(history)
    if recent:
        decisions = ledger.all()[-recent:]
        out["decisions"] = [
            {k: d.get(k) for k in ("id", "title", "decision", "score", "rationale", "decided_at", "outcome", "sources")}
            for d in reversed(decisions)
        ]
    return out


def kb_part(config: Config) -> dict[str, Any]:
    """Knowledge-base figures (cached for a few seconds: opening Chroma is the slowest part of /status)."""
    from xmrt.kb.stats import kb_stats

    return _cached(f"kb:{config.vector_store_dir}", 5.0, lambda: kb_stats(config))


def llm_part(config: Config) -> dict[str, Any]:
    """What the configured chat model is (no secrets, nothing loaded)."""
    from xmrt.llm.providers import describe_llm

    return describe_llm(config)


def orchestrator_part(config: Config) -> dict[str, Any]:
    """The orchestrator's agent registry (``<prefix>:registry``) and the recorded node latencies."""
    from xmrt.redis.monitoring import read_node_latencies
    from xmrt.redis.registry import read_registry

    client = redis_client(config, fail_fast=True)
    registry = read_registry(config, client)
    latencies = read_node_latencies(config, client)
    return {"registry": registry, "latencies": latencies}


def audit_part(config: Config, n: int = 10, principal: Principal = LOCAL) -> list[dict[str, Any]]:
    """The latest audit entries, newest first; a tenant sees only the entries made by or for them."""
    from xmrt.redis.audit import tail

    if not principal.tenant:
        return list(reversed(tail(n, config)))
    own = [e for e in tail(max(n * 50, 500), config) if e.get("who") == principal.user]
    return list(reversed(own[-n:]))


def principal_of(request: Request, config: Config) -> Principal:
    """Who makes a request to a custom route: the user the gate authenticated (xmrt.server.gate)."""
    return request_principal(config, getattr(request.state, "xmrt_user", None))
