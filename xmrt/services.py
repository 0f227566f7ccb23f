"""The services graph nodes and tools use, from one place, built once per process and configuration.

Nodes and tools never carry a :class:`~xmrt.config.Config` in a run's context and never connect per call: they
call these getters. The configuration is the process's (:func:`xmrt.config.get_config`, read once; a test that
changes the environment calls ``get_config.cache_clear()``), and every service is cached on it, so a new
configuration gets new services and the old ones are never mixed in. A Python caller that runs a graph on
another configuration wraps the call in ``with use_config(config):``.

* :func:`config`: the process configuration (or the one :func:`use_config` installed for this context).
* :func:`embeddings`: the configured embedding model (loaded once).
* :func:`knowledge_index`: a knowledge-base collection's index, cached and reopened when it went stale.
* :func:`redis`: the shared Redis client (:func:`xmrt.redis.clients.redis_client`).
* :func:`ledger`: an agent's decision ledger on the shared Redis client.
* :func:`agent_memory`: an agent's long-term memory on the run's store.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from xmrt.config import Config, get_config

if TYPE_CHECKING:
    from xmrt.eliza import DecisionLedger
    from xmrt.eliza.memory import AgentMemory
    from xmrt.kb.index import KnowledgeIndex
    from xmrt.policy import Principal

#: Open collections kept per process (the least recently used one is dropped beyond it).
MAX_OPEN_INDEXES = 8
_indexes: OrderedDict[tuple[Config, str], KnowledgeIndex] = OrderedDict()
_lock = threading.Lock()
_override: contextvars.ContextVar[Config | None] = contextvars.ContextVar("xmrt_services_config", default=None)


def config() -> Config:
    """The configuration services are built from: the one :func:`use_config` installed, else the process's."""
    return _override.get() or get_config()


@contextlib.contextmanager
def use_config(cfg: Config) -> Iterator[Config]:
    """Make the graphs run in this context use ``cfg`` (a Python caller's or a test's own configuration).

    It never travels in a run's context (which stays serialisable); the graphs' nodes and tools read it here.
    """
    token = _override.set(cfg)
    try:
        yield cfg
    finally:
        _override.reset(token)


def embeddings(cfg: Config | None = None) -> Any:
    """The configured embedding model, loaded once per process (``embed_query``, ``embed_documents``)."""
    from xmrt.llm.embeddings import get_embeddings

    return get_embeddings(cfg or config())


def _cached_index(cfg: Config, collection: str) -> KnowledgeIndex:
    from xmrt.kb.index import KnowledgeIndex

    key = (cfg, collection)
    with _lock:
        index = _indexes.get(key)
        if index is None:
            index = _indexes[key] = KnowledgeIndex(cfg, collection)
            while len(_indexes) > MAX_OPEN_INDEXES:
                _indexes.popitem(last=False)
        _indexes.move_to_end(key)
        return index


def forget_index(collection: str, cfg: Config | None = None) -> None:
    """Drop the cached index of ``collection`` (the next :func:`knowledge_index` opens it again)."""
    with _lock:
        _indexes.pop((cfg or config(), collection), None)


def knowledge_index(collection: str, cfg: Config | None = None, *, create: bool = False) -> KnowledgeIndex | None:
    """The collection's index, cached per process and configuration; None when the collection does not exist.

    With ``create`` a missing collection is created (the ingest graph writes through the same cached index).

    A cached index is reopened when its collection was dropped (and maybe re-created) since, or when its BM25
    side is out of step with Chroma (another process ingested since); reopening re-synchronizes it.
    """
    from xmrt.kb.index import KnowledgeIndex

    cfg = cfg or config()
    if collection not in KnowledgeIndex.list_collections(cfg):
        forget_index(collection, cfg)
        if not create:
            return None
    index = _cached_index(cfg, collection)
    try:
        stale = index.count() != index.bm25.count()
    except Exception:  # noqa: BLE001 - a dropped and re-created collection: reopen
        stale = True
    if stale:
        forget_index(collection, cfg)
        index = _cached_index(cfg, collection)
    return index


def redis() -> Any:
    """The process's shared sync Redis client for the configuration (one timeout and retry policy)."""
    from xmrt.redis.clients import redis_client

    return redis_client(config())


def ledger(agent_id: str, principal: Principal | None = None) -> DecisionLedger:
    """The agent's decision ledger, in ``principal``'s scope, on the process's shared Redis client."""
    from xmrt.eliza import DecisionLedger

    return DecisionLedger(config(), agent_id, client=redis(), principal=principal)


def agent_memory(store: Any = None, principal: Principal | None = None) -> AgentMemory:
    """Long-term memory on ``store`` (the run's store; None opens the configured one), in ``principal``'s scope."""
    from xmrt.eliza.memory import AgentMemory

    return AgentMemory(config(), store=store, principal=principal)
