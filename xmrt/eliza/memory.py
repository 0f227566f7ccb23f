"""Agent memory on Redis: the seed's Redis service, rebuilt on the LangGraph Redis store.

* Long-term memories per agent (set/get/delete/list, optional TTL) with semantic search,
  stored in the :class:`~langgraph.store.redis.RedisStore` with its vector index.
* The agent's state (one JSON document per agent, in the same store), saved by the Eliza graph.

Namespaces: ``(<owner>, "memories", <agent>)`` and ``(<owner>, "agentstate", <agent>)``, where the owner is
the user for a tenant of the served API and ``local`` for the CLI and Python callers (a name no API key may
carry), so one user's memories never share a namespace with another's. The store
(:class:`xmrt.redis.store.RedisStore`) keeps labels exact, so any agent id round-trips; a ``.`` (which ``BaseStore``
forbids in labels) is written as ``%2E``.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis

from xmrt.config import Config
from xmrt.errors import UserError, XmrtError
from xmrt.policy import LOCAL, Principal
from xmrt.redis.server import describe

MEMORY_NS = "memories"
STATE_NS = "agentstate"
STATE_KEY = "state"


class MemoryStoreError(XmrtError):
    """Redis failed underneath a memory operation (unreachable, stopped, out of memory)."""


def _guarded(operation: str):
    """Turn redis/redisvl failures of a memory operation into one clear :class:`MemoryStoreError`."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except (UserError, MemoryStoreError):
                raise
            except Exception as exc:
                from redisvl.exceptions import RedisVLError

                if not isinstance(exc, redis.RedisError | RedisVLError | OSError):
                    raise
                raise MemoryStoreError(f"Redis memory store at {self.where()} failed to {operation}: {exc}") from exc

        return inner

    return wrap


def agent_label(agent_id: str) -> str:
    """An agent id as a namespace label: ``%`` and ``.`` escaped (labels may not contain a period)."""
    if not isinstance(agent_id, str) or not agent_id:
        raise UserError(f"an agent id must be a non-empty string, got {agent_id!r}")
    return agent_id.replace("%", "%25").replace(".", "%2E")


@dataclass
class Memory:
    """One long-term memory of an agent."""

    key: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    updated_at: str | None = None
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for JSON output and tools."""
        out = {"key": self.key, "text": self.text, **({"data": self.data} if self.data else {})}
        if self.score is not None:
            out["score"] = round(self.score, 4)
        if self.updated_at:
            out["updated_at"] = self.updated_at
        return out


def _memory_from_item(item) -> Memory:
    value = dict(item.value)
    text = str(value.pop("text", ""))
    return Memory(
        key=item.key,
        text=text,
        data=value,
        created_at=item.created_at.isoformat() if getattr(item, "created_at", None) else None,
        updated_at=item.updated_at.isoformat() if getattr(item, "updated_at", None) else None,
        score=getattr(item, "score", None),
    )


class AgentMemory:
    """Memories and agent state, in the Redis store.

    Args:
        config: Settings (Redis URL, key prefix, embeddings, default TTL).
        store: A store to use instead of building one (e.g. the graph runtime's store).
        principal: Whose memories these are (:mod:`xmrt.policy`); the local user's by default.
    """

    def __init__(self, config: Config, store=None, principal: Principal | None = None) -> None:
        self.config = config
        self.principal = principal or LOCAL
        if store is None:
            from xmrt.redis.persistence import make_store

            store = make_store(config)
        self.store = store

    # -- plumbing ---------------------------------------------------------------------------
    def where(self) -> str:
        """Address of the Redis server behind the store, for messages."""
        return describe(self.config.redis_url)

    def _ns(self, kind: str, agent_id: str) -> tuple[str, ...]:
        return self.principal.namespace(kind, agent_label(agent_id))

    @staticmethod
    def _check_key(key: str) -> str:
        if not isinstance(key, str) or not key.strip():
            raise UserError(f"a memory key must be a non-empty string, got {key!r}")
        return key

    # -- memories ---------------------------------------------------------------------------
    @_guarded("store a memory")
    def remember(
        self,
        agent_id: str,
        text: str,
        *,
        key: str | None = None,
        data: dict[str, Any] | None = None,
        ttl_minutes: float | None = None,
    ) -> str:
        """Store (or overwrite) a memory and index its text for semantic search.

        Returns:
            The memory's key (a new UUID when none is given).
        """
        if not isinstance(text, str) or not text.strip():
            raise UserError("a memory needs non-empty text")
        key = self._check_key(key) if key is not None else uuid.uuid4().hex
        value = {**(data or {}), "text": text}
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise UserError(f"memory data must be JSON-serialisable: {exc}") from None
        kwargs = {"ttl": ttl_minutes} if ttl_minutes is not None else {}
        self.store.put(self._ns(MEMORY_NS, agent_id), key, value, **kwargs)
        return key

    @_guarded("read a memory")
    def recall(self, agent_id: str, key: str) -> Memory | None:
        """The memory stored under ``key``, or None."""
        item = self.store.get(self._ns(MEMORY_NS, agent_id), self._check_key(key))
        return _memory_from_item(item) if item else None

    @_guarded("delete a memory")
    def forget(self, agent_id: str, key: str) -> bool:
        """Delete a memory. Returns whether it existed."""
        ns = self._ns(MEMORY_NS, agent_id)
        existed = self.store.get(ns, self._check_key(key)) is not None
        if existed:
            self.store.delete(ns, key)
        return existed

    @_guarded("list memories")
    def list(self, agent_id: str, *, limit: int = 50, offset: int = 0) -> list[Memory]:
        """The agent's memories, most recently updated first."""
        ns = self._ns(MEMORY_NS, agent_id)
        items = [i for i in self.store.search(ns, limit=limit, offset=offset) if tuple(i.namespace) == ns]
        return sorted((_memory_from_item(i) for i in items), key=lambda m: m.updated_at or "", reverse=True)

    @_guarded("search memories")
    def search(self, agent_id: str, query: str, *, limit: int = 5) -> list[Memory]:
        """Memories of the agent closest in meaning to ``query``, best first, with similarity scores."""
        if not query or not query.strip():
            raise UserError("a memory search needs a non-empty query")
        ns = self._ns(MEMORY_NS, agent_id)
        items = self.store.search(ns, query=query, limit=limit)
        return [_memory_from_item(i) for i in items if tuple(i.namespace) == ns]

    # -- agent state ------------------------------------------------------------------------
    @_guarded("save agent state")
    def save_state(self, agent_id: str, state: dict[str, Any]) -> None:
        """Persist the agent's state document (replaces the previous one)."""
        if not isinstance(state, dict):
            raise UserError(f"agent state must be a dict, got {type(state).__name__}")
        try:
            json.dumps(state)
        except (TypeError, ValueError) as exc:
            raise UserError(f"agent state must be JSON-serialisable: {exc}") from None
        self.store.put(self._ns(STATE_NS, agent_id), STATE_KEY, {"state": state, "saved_at": time.time()}, index=False)


@functools.lru_cache(maxsize=4)
def shared_memory(config: Config) -> AgentMemory:
    """One :class:`AgentMemory` per process and configuration, for callers outside a graph."""
    return AgentMemory(config)
