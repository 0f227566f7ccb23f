"""Factories of the checkpointer for a configuration: a sync saver, an async one, and the legacy-format check."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis

from xmrt.config import Config
from xmrt.redis.checkpoint.format import ttl_settings
from xmrt.redis.checkpoint.saver import RedisCheckpointSaver
from xmrt.redis.clients import new_client
from xmrt.redis.server import connect, describe

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Factories


def is_cluster(client: redis.Redis) -> bool:
    """True when the server ``client`` talks to runs in cluster mode."""
    try:
        return str(client.info("cluster").get("cluster_enabled", 0)) == "1"
    except redis.ResponseError:
        return False


def legacy_checkpoints(client: redis.Redis, key_prefix: str) -> int:
    """How many checkpoints the previous (library-compatible) saver left under ``key_prefix``.

    Read from that saver's RediSearch index, which it always created; 0 when there is none (or no
    RediSearch). ``xmrt migrate checkpoints`` copies them into the current format.
    """
    try:
        info = client.execute_command("FT.INFO", f"{key_prefix}:checkpoint")
    except redis.ResponseError:
        return 0
    if isinstance(info, list):  # RESP2: a flat list of names and values
        info = dict(zip(info[::2], info[1::2], strict=False))
    docs = info.get(b"num_docs", info.get("num_docs", 0))
    try:
        return int(float(docs))
    except (TypeError, ValueError):
        return 0


def _probe(config: Config) -> bool:
    """Check that Redis answers (no module is needed for checkpoints); True on a cluster.

    Also warns (once per factory call) when threads of the previous format wait to be migrated.
    """
    client = connect(config, check=False)
    try:
        cluster = is_cluster(client)
        if not cluster and (count := legacy_checkpoints(client, config.key_prefix)):
            log.warning("%d checkpoints under the prefix %r are in the previous format and are not read; "
                        "run `xmrt migrate checkpoints` to carry them over", count, config.key_prefix)
        return cluster
    finally:
        client.close()


def make_checkpointer(config: Config, *, ttl_minutes: float | None = None) -> RedisCheckpointSaver:
    """A Redis checkpointer under ``config.key_prefix``, for sync and async graphs alike.

    Args:
        config: Settings: the Redis URL (a single Redis or any node of a cluster), the key prefix
            and the default TTL.
        ttl_minutes: Expire a thread this many minutes after its last save or read
            (default: ``config.checkpoint_ttl_minutes``; ``None``/0 keeps it).

    Returns:
        The saver. Its async methods run its sync ones in a worker thread.

    Raises:
        RedisSetupError: Redis is unreachable (one line).
    """
    cluster = _probe(config)
    url = config.redis_url
    minutes = ttl_minutes if ttl_minutes is not None else config.checkpoint_ttl_minutes
    return RedisCheckpointSaver(
        new_client(url, cluster=cluster),
        key_prefix=config.key_prefix,
        ttl=ttl_settings(minutes),
        server_label=f"Redis at {describe(url)}",
    )


@contextlib.asynccontextmanager
async def async_checkpointer(
    config: Config, *, ttl_minutes: float | None = None
) -> AsyncIterator[RedisCheckpointSaver]:
    """A Redis checkpointer for the running event loop, closed on exit.

    This is the shape ``langgraph.json`` wants under ``checkpointer.path``. The connection check
    runs in a worker thread so that no blocking call happens on the event loop. The saver's sync
    methods (rarely used under an event loop) make their own sync client.

    Args:
        config: Settings: the Redis URL, the key prefix and the default TTL.
        ttl_minutes: As for :func:`make_checkpointer`.

    Yields:
        The saver.

    Raises:
        RedisSetupError: Redis is unreachable (one line).
    """
    cluster = await asyncio.to_thread(_probe, config)
    url = config.redis_url
    minutes = ttl_minutes if ttl_minutes is not None else config.checkpoint_ttl_minutes
    saver = RedisCheckpointSaver(
        aclient=new_client(url, cluster=cluster, asyncio_client=True),
        client_factory=lambda: new_client(url, cluster=cluster),
        key_prefix=config.key_prefix,
        ttl=ttl_settings(minutes),
        server_label=f"Redis at {describe(url)}",
    )
    try:
        yield saver
    finally:
        await saver.aclose()
        if saver._client is not None:
            await asyncio.to_thread(saver.close)
