"""One way to reach Redis: shared clients with one timeout and retry policy, checked once per process.

* :func:`redis_client` is the process's sync client for a configuration (thread-safe; one connection pool).
  The first call checks that the server answers and has RedisJSON and RediSearch (one clear line otherwise).
* :func:`async_redis_client` is the asyncio client of the running event loop (an asyncio client's connections
  belong to one loop, so each loop gets its own; they are forgotten with their loop).
* :func:`client_options` is the policy: 5 s to connect, 30 s per reply, and retries with exponential backoff
  and jitter on connection errors and timeouts (about a second in all). The checkpointer's clients use it too.

Nothing connects at import; nothing connects per call.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

import redis
import redis.asyncio

from xmrt.config import Config

#: Retries of a failed connection or timeout: jittered exponential backoff from 50 ms, capped at 0.5 s per wait,
#: about 1 s in all (2.2 s at most). A blip is ridden out; a longer outage fails the operation with one clear
#: error. (redis-py 8 gives clients made by ``from_url`` no retries.)
RETRIES = 6
RETRY_BACKOFF = {"base": 0.05, "cap": 0.5}

_lock = threading.Lock()
_sync: dict[str, redis.Redis] = {}
_async: dict[str, weakref.WeakKeyDictionary] = {}


def client_options(*, asyncio_client: bool = False) -> dict[str, Any]:
    """Connection settings of every client the project builds (a fresh retry policy each call)."""
    from redis.backoff import ExponentialWithJitterBackoff

    if asyncio_client:
        from redis.asyncio.retry import Retry
    else:
        from redis.retry import Retry
    return {
        "socket_connect_timeout": 5.0,
        "socket_timeout": 30.0,
        "retry": Retry(ExponentialWithJitterBackoff(**RETRY_BACKOFF), RETRIES),
    }


def redis_client(config: Config, *, check: bool = True) -> redis.Redis:
    """The shared sync client for ``config``'s Redis; the first call verifies the server (and its modules).

    Raises:
        xmrt.redis.server.RedisSetupError: The server is unreachable or lacks a module (one clear line).
    """
    client = _sync.get(config.redis_url)
    if client is not None:
        return client
    with _lock:
        client = _sync.get(config.redis_url)
        if client is None:
            if check:
                from xmrt.redis.server import connect

                connect(config).close()  # one probe per process: reachability, password, modules
            client = redis.Redis.from_url(config.redis_url, **client_options())
            _sync[config.redis_url] = client
    return client


def async_redis_client(config: Config) -> redis.asyncio.Redis:
    """The asyncio client for ``config``'s Redis on the running event loop."""
    loop = asyncio.get_running_loop()
    per_loop = _async.setdefault(config.redis_url, weakref.WeakKeyDictionary())
    client = per_loop.get(loop)
    if client is None:
        client = redis.asyncio.Redis.from_url(config.redis_url, **client_options(asyncio_client=True))
        per_loop[loop] = client
    return client


def forget_clients() -> None:
    """Drop the cached clients (tests that restart Redis on the same port)."""
    with _lock:
        for client in _sync.values():
            client.close()
        _sync.clear()
        _async.clear()
