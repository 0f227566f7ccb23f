"""Persistence factories: Redis checkpointers and the long-term Redis store.

* :func:`make_checkpointer` / :func:`async_checkpointer`: graph state, per thread
  (:class:`xmrt.redis.checkpoint.RedisCheckpointSaver`: sync and async methods in one class, on a single
  Redis or a Redis Cluster, no module needed).
* :func:`make_store` / :func:`async_store`: long-term memories with a vector index on the
  configured embeddings (MiniLM, 384 dims, by default) and optional TTL.
* :func:`checkpointer` and :func:`store`: the async context managers that ``langgraph.json``
  names under ``checkpointer.path`` and ``store.path`` for ``langgraph dev`` / the served API.
* :func:`redis_graph`: the one obvious way for Python callers to get a compiled graph that
  persists in Redis.

Every factory first goes through :func:`xmrt.redis.server.connect`, so an unreachable server
(or, for the store, one without RedisJSON/RediSearch) fails with one clear line. Keys are
namespaced with ``XMRT_KEY_PREFIX`` so that deployments sharing a server stay apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

from langgraph.graph import StateGraph

from xmrt.config import Config, get_config
from xmrt.redis.server import ensure_redis

log = logging.getLogger(__name__)


def _ttl(minutes: float | None, refresh_on_read: bool = True) -> dict[str, Any] | None:
    if not minutes:
        return None
    return {"default_ttl": minutes, "refresh_on_read": refresh_on_read}


def store_index_config(config: Config) -> dict[str, Any]:
    """The vector index of the long-term store: the configured embeddings over the ``text`` field."""
    from xmrt.llm.embeddings import embedding_dims, get_embeddings

    return {
        "dims": embedding_dims(config),
        "embed": get_embeddings(config),
        "fields": ["text"],
        "distance_type": "cosine",
    }


def make_checkpointer(config: Config | None = None, *, ttl_minutes: float | None = None, start: bool = True):
    """The Redis checkpointer, ready: its sync methods serve ``graph.invoke``, its async ones ``graph.ainvoke``.

    Args:
        config: Settings; ``get_config()`` when omitted.
        ttl_minutes: Expire a thread this many minutes after its last save or read
            (default: ``XMRT_CHECKPOINT_TTL_MINUTES``).
        start: Start the embedded Redis when it is configured and not running.
    """
    from xmrt.redis.checkpoint import make_checkpointer as _make

    config = config or get_config()
    if start and not config.redis_external:
        ensure_redis(config).close()
    return _make(config, ttl_minutes=ttl_minutes if ttl_minutes is not None else config.checkpoint_ttl_minutes)


@contextlib.asynccontextmanager
async def async_checkpointer(config: Config | None = None, *, ttl_minutes: float | None = None):
    """The Redis checkpointer with a client for the running event loop, closed on exit."""
    from xmrt.redis.checkpoint import async_checkpointer as _make

    config = config or await asyncio.to_thread(get_config)
    async with _make(
        config, ttl_minutes=ttl_minutes if ttl_minutes is not None else config.checkpoint_ttl_minutes
    ) as saver:
        yield saver


def make_store(config: Config | None = None, *, ttl_minutes: float | None = None, start: bool = True):
    """The long-term Redis store (:class:`xmrt.redis.store.RedisStore`) with the vector index and TTL, set up.

    It has a sync client and builds an asyncio client per event loop, so both its sync and its async methods
    work wherever they are called from (a sync node never bridges to the server's event loop).
    """
    from xmrt.redis.clients import async_redis_client, redis_client
    from xmrt.redis.store import RedisStore

    config = config or get_config()
    if start:
        ensure_redis(config)
    store = RedisStore(
        redis_client(config),
        lambda: async_redis_client(config),
        prefix=config.key_prefix,
        index=store_index_config(config),
        ttl=_ttl(ttl_minutes if ttl_minutes is not None else config.memory_ttl_minutes),
    )
    store.setup()
    return store


@contextlib.asynccontextmanager
async def async_store(config: Config | None = None, *, ttl_minutes: float | None = None):
    """The long-term Redis store for async code (the served API): set up off the event loop."""
    # Blocking work (config file, module check, loading the embedding model) stays off the event loop:
    # `langgraph dev` raises on blocking calls inside async code.
    config = config or await asyncio.to_thread(get_config)
    store = await asyncio.to_thread(make_store, config, ttl_minutes=ttl_minutes, start=False)
    yield store


@contextlib.asynccontextmanager
async def checkpointer() -> AsyncIterator[Any]:
    """The checkpointer that ``langgraph.json`` names (``checkpointer.path``)."""
    async with async_checkpointer() as saver:
        yield saver


@contextlib.asynccontextmanager
async def store() -> AsyncIterator[Any]:
    """The store that ``langgraph.json`` names (``store.path``)."""
    async with async_store() as st:
        yield st


@functools.lru_cache(maxsize=4)
def _shared_resources(config: Config):
    return make_checkpointer(config), make_store(config)


def redis_graph(builder: StateGraph, config: Config | None = None, **compile_kwargs: Any):
    """Compile ``builder`` with the Redis checkpointer and store: the graph persists per ``thread_id``.

    Example:
        >>> from graphs.memory_agent import builder
        >>> from xmrt.redis.persistence import redis_graph
        >>> graph = redis_graph(builder)
        >>> graph.invoke({"messages": [("user", "hi")]}, {"configurable": {"thread_id": "t1"}})

    The checkpointer and store are created once per process and configuration and shared by
    every graph compiled here. The checkpointer has both flavours, so ``graph.ainvoke`` works as
    well as ``graph.invoke`` (from any event loop: its async methods run the sync ones in a worker
    thread). Runs default to
    ``XMRT_DURABILITY`` ("sync": every super-step is persisted before the next starts, so a killed
    process resumes from its last finished step).
    """
    # LangGraph has no public way to give a compiled graph a default durability (xmrt.compat.langgraph).
    from xmrt.compat.langgraph import durability_configurable

    config = config or get_config()
    saver, long_term = _shared_resources(config)
    graph = builder.compile(checkpointer=saver, store=long_term, **compile_kwargs)
    return graph.with_config(configurable=durability_configurable(config.durability))
