"""One way to reach Redis: every Redis client of the project is built here, under one of two policies.

The policies (:func:`client_options`):

* **the default**: 5 s to connect, 30 s per reply, and retries with exponential backoff and jitter on connection
  errors and timeouts (about a second in all). A blip is ridden out. Memory, tools, the store and checkpoints.
* **fail fast** (``fail_fast=True``): 1 s to connect, 2 s per reply, no retries. For the paths that must answer
  while Redis is down and report it: ``/health``, ``/status`` and the dashboard, the audit log (a write never
  holds up the audited operation), and the connection probe of :func:`xmrt.redis.server.connect`.

The clients:

* :func:`redis_client` is the process's shared sync client for a configuration and a policy (thread-safe; one
  connection pool each). The default client's first use checks that the server answers and has RedisJSON and
  RediSearch (one clear line otherwise); the fail-fast one is never checked, as its users report a dead Redis.
* :func:`async_redis_client` is the asyncio client of the running event loop, per policy (an asyncio client's
  connections belong to one loop, so each loop gets its own; they are forgotten with their loop).
* :func:`new_client` is a client of its own for a caller that closes it: a checkpointer's clients (a cluster
  client on a Redis Cluster), the connection probe and the embedded server's administration.

Nothing connects at import; nothing connects per call.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from xmrt.config import Config

#: Retries of a failed connection or timeout: jittered exponential backoff from 50 ms, capped at 0.5 s per wait,
#: about 1 s in all (2.2 s at most). A blip is ridden out; a longer outage fails the operation with one clear
#: error. (redis-py 8 gives clients made by ``from_url`` no retries.)
RETRIES = 6
RETRY_BACKOFF = {"base": 0.05, "cap": 0.5}
#: The fail-fast policy's timeouts (seconds): an unreachable Redis costs its caller about a second.
FAIL_FAST_TIMEOUTS = {"socket_connect_timeout": 1.0, "socket_timeout": 2.0}

_lock = threading.Lock()
_sync: dict[tuple[str, bool], redis.Redis] = {}
_async: dict[tuple[str, bool], weakref.WeakKeyDictionary] = {}


def client_options(*, asyncio_client: bool = False, fail_fast: bool = False) -> dict[str, Any]:
    """Connection settings of a client under the default or the fail-fast policy (a fresh retry object each call)."""
    from redis.backoff import ExponentialWithJitterBackoff, NoBackoff

    if asyncio_client:
        from redis.asyncio.retry import Retry
    else:
        from redis.retry import Retry
    if fail_fast:
        return {**FAIL_FAST_TIMEOUTS, "retry": Retry(NoBackoff(), 0)}
    return {
        "socket_connect_timeout": 5.0,
        "socket_timeout": 30.0,
        "retry": Retry(ExponentialWithJitterBackoff(**RETRY_BACKOFF), RETRIES),
    }


def redis_client(config: Config, *, check: bool = True, fail_fast: bool = False) -> redis.Redis:
    """The shared sync client for ``config``'s Redis under a policy; the default one is verified on first use.

    Args:
        config: The configuration (its ``redis_url``).
        check: On creating the default client, probe the server and its modules first.
        fail_fast: The fail-fast client (never probed) instead of the default one.

    Raises:
        xmrt.redis.server.RedisSetupError: The server is unreachable or lacks a module (one clear line).
    """
    key = (config.redis_url, fail_fast)
    client = _sync.get(key)
    if client is not None:
        return client
    with _lock:
        client = _sync.get(key)
        if client is None:
            if check and not fail_fast:
                from xmrt.redis.server import connect

                connect(config).close()  # one probe per process: reachability, password, modules
            client = new_client(config.redis_url, fail_fast=fail_fast)
            _sync[key] = client
    return client


def async_redis_client(config: Config, *, fail_fast: bool = False) -> redis.asyncio.Redis:
    """The asyncio client for ``config``'s Redis on the running event loop, under the default or fail-fast policy."""
    loop = asyncio.get_running_loop()
    per_loop = _async.setdefault((config.redis_url, fail_fast), weakref.WeakKeyDictionary())
    client = per_loop.get(loop)
    if client is None:
        for closed in [known for known in per_loop if known.is_closed()]:  # its connections keep the loop alive
            del per_loop[closed]
        client = new_client(config.redis_url, asyncio_client=True, fail_fast=fail_fast)
        per_loop[loop] = client
    return client


def new_client(url: str, *, asyncio_client: bool = False, cluster: bool = False, fail_fast: bool = False,
               timeout: float | None = None, **connection: Any) -> Any:
    """A client of the caller's own (it closes it), under the default or fail-fast policy.

    Args:
        url: The server's URL (any node of a cluster).
        asyncio_client: A ``redis.asyncio`` client instead of a sync one.
        cluster: A ``RedisCluster`` client instead of a single-server one.
        fail_fast: The fail-fast policy instead of the default one.
        timeout: Replaces both timeouts (connecting, and each reply).
        **connection: More connection arguments, e.g. a password not in ``url``.
    """
    options = client_options(asyncio_client=asyncio_client, fail_fast=fail_fast)
    if timeout is not None:
        options.update(socket_connect_timeout=timeout, socket_timeout=timeout)
    if asyncio_client:
        kind = redis.asyncio.cluster.RedisCluster if cluster else redis.asyncio.Redis
    else:
        kind = redis.cluster.RedisCluster if cluster else redis.Redis
    return kind.from_url(url, **options, **connection)


def forget_clients() -> None:
    """Drop the cached clients (tests that restart Redis on the same port)."""
    with _lock:
        for client in _sync.values():
            client.close()
        _sync.clear()
        _async.clear()
