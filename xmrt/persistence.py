"""Persistence factories: Redis checkpointers and the long-term Redis store.

* :func:`make_checkpointer` / :func:`async_checkpointer`: graph state, per thread
  (:class:`xmrt.checkpoint.RedisCheckpointSaver`: sync and async methods in one class, on a single
  Redis or a Redis Cluster, no module needed).
* :func:`make_store` / :func:`async_store`: long-term memories with a vector index on the
  configured embeddings (MiniLM, 384 dims, by default) and optional TTL.
* :func:`checkpointer` and :func:`store`: the async context managers that ``langgraph.json``
  names under ``checkpointer.path`` and ``store.path`` for ``langgraph dev`` / the served API.
* :func:`redis_graph`: the one obvious way for Python callers to get a compiled graph that
  persists in Redis.

Every factory first goes through :func:`xmrt.redis_server.connect`, so an unreachable server
(or, for the store, one without RedisJSON/RediSearch) fails with one clear line. Keys are
namespaced with ``XMRT_KEY_PREFIX`` so that deployments sharing a server stay apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from langgraph.graph import StateGraph

from xmrt.config import Config, get_config
from xmrt.redis_server import connect, ensure_redis

log = logging.getLogger(__name__)


def _ttl(minutes: float | None, refresh_on_read: bool = True) -> dict[str, Any] | None:
    if not minutes:
        return None
    return {"default_ttl": minutes, "refresh_on_read": refresh_on_read}


def store_index_config(config: Config) -> dict[str, Any]:
    """The vector index of the long-term store: the configured embeddings over the ``text`` field."""
    from xmrt.embeddings import embedding_dims, get_embeddings

    return {
        "dims": embedding_dims(config),
        "embed": get_embeddings(config),
        "fields": ["text"],
        "distance_type": "cosine",
    }


def _store_prefixes(config: Config) -> dict[str, str]:
    # The library splits document ids on ":" (e.g. `doc_id.split(":")[1]`), so the prefix must not contain one.
    return {"store_prefix": f"{config.key_prefix}_store", "vector_prefix": f"{config.key_prefix}_store_vectors"}


def _expired_doc(exc: AttributeError) -> bool:
    return "json" in str(exc)


class _StoreFixes:
    r"""Two fixes to langgraph-checkpoint-redis 0.5.2's store, on both the sync and async classes.

    1. Make ``store.get`` work with redis-py >= 6, whose search queries default to DIALECT 2.

    langgraph-checkpoint-redis 0.5.2 looks items up with the exact-phrase query
    ``@prefix:("ns\\.label")``. Under DIALECT 2 RediSearch keeps the backslash inside quotes,
    so the phrase never matches and every ``get`` returns None (``search`` is unaffected: it uses
    a prefix query). The unquoted term ``@prefix:ns\\.label`` matches the one indexed token under
    both dialects. Our namespace labels are encoded (xmrt.memory) so the term has no English
    suffix that stemming could expand.

    2. An item whose TTL has just run out can still be listed by the search index while its JSON
    document is gone; the library then fails with ``AttributeError: 'Document' has no attribute
    'json'``. Loading the key makes Redis delete it, so the operation is retried (a few times) and
    then sees the item as absent.
    """

    _EXPIRY_RETRIES = 4

    def batch(self, ops):
        ops = list(ops)
        for attempt in range(self._EXPIRY_RETRIES):
            try:
                return super().batch(ops)
            except AttributeError as exc:
                if not _expired_doc(exc) or attempt == self._EXPIRY_RETRIES - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))

    async def abatch(self, ops):
        ops = list(ops)
        for attempt in range(self._EXPIRY_RETRIES):
            try:
                return await super().abatch(ops)
            except AttributeError as exc:
                if not _expired_doc(exc) or attempt == self._EXPIRY_RETRIES - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))

    def _get_batch_GET_ops_queries(self, get_ops):
        from collections import defaultdict

        from langgraph.store.redis.base import _namespace_to_text
        from redisvl.query.filter import Tag

        groups: dict[tuple[str, ...], list] = defaultdict(list)
        for idx, op in get_ops:
            groups[op.namespace].append((idx, op.key))
        queries = []
        for namespace, items in groups.items():
            keys = [key for _, key in items]
            queries.append((f"(@prefix:{_namespace_to_text(namespace)} {Tag('key') == keys})", [], namespace, items))
        return queries


def _store_classes():
    from langgraph.store.redis import AsyncRedisStore, RedisStore

    class XmrtRedisStore(_StoreFixes, RedisStore):
        """RedisStore with the fixes of :class:`_StoreFixes`."""

    class AsyncXmrtRedisStore(_StoreFixes, AsyncRedisStore):
        """AsyncRedisStore with the fixes of :class:`_StoreFixes`."""

    return XmrtRedisStore, AsyncXmrtRedisStore


def make_checkpointer(config: Config | None = None, *, ttl_minutes: float | None = None, start: bool = True):
    """The Redis checkpointer, ready: its sync methods serve ``graph.invoke``, its async ones ``graph.ainvoke``.

    Args:
        config: Settings; ``get_config()`` when omitted.
        ttl_minutes: Expire a thread this many minutes after its last save or read
            (default: ``XMRT_CHECKPOINT_TTL_MINUTES``).
        start: Start the embedded Redis when it is configured and not running.
    """
    from xmrt.checkpoint import make_checkpointer as _make

    config = config or get_config()
    if start and not config.redis_external:
        ensure_redis(config).close()
    return _make(config, ttl_minutes=ttl_minutes if ttl_minutes is not None else config.checkpoint_ttl_minutes)


@contextlib.asynccontextmanager
async def async_checkpointer(config: Config | None = None, *, ttl_minutes: float | None = None):
    """The Redis checkpointer with a client for the running event loop, closed on exit."""
    from xmrt.checkpoint import async_checkpointer as _make

    config = config or await asyncio.to_thread(get_config)
    async with _make(
        config, ttl_minutes=ttl_minutes if ttl_minutes is not None else config.checkpoint_ttl_minutes
    ) as saver:
        yield saver


def make_store(config: Config | None = None, *, ttl_minutes: float | None = None, start: bool = True):
    """A sync Redis store with the vector index and TTL, set up and ready."""
    from redis import Redis

    config = config or get_config()
    client = ensure_redis(config) if start else connect(config)
    client.close()
    from xmrt.checkpoint import client_options

    store = _store_classes()[0](
        Redis.from_url(config.redis_url, **client_options()),
        index=store_index_config(config),
        ttl=_ttl(ttl_minutes if ttl_minutes is not None else config.memory_ttl_minutes),
        **_store_prefixes(config),
    )
    store.setup()
    return store


@contextlib.asynccontextmanager
async def async_store(config: Config | None = None, *, ttl_minutes: float | None = None):
    """An async Redis store with the vector index and TTL, set up, closed on exit."""
    from redis.asyncio import Redis as AsyncRedis

    # Blocking work (config file, module check, loading the embedding model) stays off the event loop:
    # `langgraph dev` raises on blocking calls inside async code.
    config = config or await asyncio.to_thread(get_config)
    await asyncio.to_thread(lambda: connect(config).close())
    index = await asyncio.to_thread(store_index_config, config)
    from xmrt.checkpoint import client_options

    client = AsyncRedis.from_url(config.redis_url, **client_options(asyncio_client=True))
    try:
        async with _store_classes()[1](
            redis_client=client,
            index=index,
            ttl=_ttl(ttl_minutes if ttl_minutes is not None else config.memory_ttl_minutes),
            **_store_prefixes(config),
        ) as store:
            await store.setup()
            yield store
    finally:
        await client.aclose()


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
        >>> from xmrt.persistence import redis_graph
        >>> graph = redis_graph(builder)
        >>> graph.invoke({"messages": [("user", "hi")]}, {"configurable": {"thread_id": "t1"}})

    The checkpointer and store are created once per process and configuration and shared by
    every graph compiled here. The checkpointer has both flavours, so ``graph.ainvoke`` works as
    well as ``graph.invoke`` (from any event loop: its async methods run the sync ones in a worker
    thread). Runs default to
    ``XMRT_DURABILITY`` ("sync": every super-step is persisted before the next starts, so a killed
    process resumes from its last finished step).
    """
    # LangGraph has no public way to give a compiled graph a default durability; it reads this key from the
    # graph's config when a call passes none. "sync" (XMRT_DURABILITY) writes each super-step's checkpoint
    # before the next one starts, which is what resume-after-kill needs; a call may still pass durability=.
    from langgraph._internal._constants import CONFIG_KEY_DURABILITY

    config = config or get_config()
    saver, long_term = _shared_resources(config)
    graph = builder.compile(checkpointer=saver, store=long_term, **compile_kwargs)
    return graph.with_config(configurable={CONFIG_KEY_DURABILITY: config.durability})
