"""The Redis server and the savers of the checkpoint benchmark.

:func:`_redis_target` gives the configured external Redis under a throw-away key prefix (deleted afterwards) or a
temporary embedded server; :class:`_Savers` makes each mode's saver once, on a redis-py client that counts its
round trips (:func:`_counting_client`), and closes them all at the end. :class:`RoundTripsOnlySaver` stores
nothing and sends one ``PING`` per save: the floor for any Redis saver. Used by :mod:`benchmarks.checkpoint`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from langgraph.checkpoint.base import BaseCheckpointSaver
from redis.connection import Connection

from xmrt.config import Config

# --------------------------------------------------------------------------------------------
# Round-trip counting (client side: one socket write per round trip)


class _Counter:
    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.value += 1


class _CountingConnection(Connection):
    """A redis-py connection that counts the packets it sends (one per round trip)."""

    counter: _Counter

    def send_packed_command(self, command, check_health=True):  # noqa: D102 - redis-py's signature
        self.counter.add()
        return super().send_packed_command(command, check_health)


def _counting_client(url: str, counter: _Counter) -> redis.Redis:
    from xmrt.redis.checkpoint import client_options

    connection_class = type("CountingConnection", (_CountingConnection,), {"counter": counter})
    pool = redis.ConnectionPool.from_url(url, connection_class=connection_class, **client_options())
    return redis.Redis(connection_pool=pool)


# --------------------------------------------------------------------------------------------
# Redis target


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class _Target:
    url: str
    prefix: str
    embedded: bool
    version: str = ""


@contextlib.contextmanager
def _redis_target(config: Config, workdir: Path) -> Iterator[_Target]:
    """The configured external Redis (a throw-away prefix), or a temporary embedded server."""
    from xmrt.redis.server import EmbeddedRedis, connect

    tag = f"{config.key_prefix}-bench-{uuid.uuid4().hex[:8]}"
    if config.redis_external:
        client = connect(config)
        target = _Target(config.redis_url, tag, embedded=False, version=client.info("server")["redis_version"])
        try:
            yield target
        finally:
            _cleanup_prefix(client, tag)
            client.close()
        return
    server = EmbeddedRedis(workdir / "redis", _free_port())
    server.start()
    try:
        client = server.client()
        target = _Target(server.url, tag, embedded=True, version=client.info("server")["redis_version"])
        client.close()
        yield target
    finally:
        server.stop()


def _cleanup_prefix(client: redis.Redis, tag: str) -> None:
    """Delete every key and index the benchmark created on an external server."""
    for pattern in (f"{tag}*", f"write_keys_zset:{tag}*"):
        batch = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                client.delete(*batch)
                batch = []
        if batch:
            client.delete(*batch)
    for index in client.execute_command("FT._LIST"):
        name = index.decode() if isinstance(index, bytes) else str(index)
        if name.startswith(tag):
            client.execute_command("FT.DROPINDEX", name)


# --------------------------------------------------------------------------------------------
# Savers


class RoundTripsOnlySaver(BaseCheckpointSaver):
    """A saver that stores nothing and sends one ``PING`` per ``put`` and per ``put_writes``.

    Through the same client and code path as a single-command save of
    :class:`~xmrt.redis.checkpoint.RedisCheckpointSaver` (``execute_command``), it makes the round trips
    ours makes per super-step and does nothing else: the least any saver that waits for a Redis
    acknowledgement can cost under langgraph's executor. Every thread looks new to it.
    """

    def __init__(self, client: redis.Redis) -> None:
        super().__init__()
        self._client = client

    def _ping(self) -> None:
        reply = self._client.execute_command("PING")
        if reply not in (True, b"PONG", "PONG"):
            raise redis.ResponseError(f"unexpected reply to PING: {reply!r}")

    def get_tuple(self, config: Any) -> None:
        """Nothing is stored: every thread starts empty."""
        return None

    def list(self, config: Any, *, filter: Any = None, before: Any = None, limit: Any = None) -> Iterator[Any]:  # noqa: A002
        """No history."""
        return iter(())

    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> dict:
        """One acknowledged round trip, as ours makes per checkpoint; nothing is written."""
        self._ping()
        conf = config["configurable"]
        return {"configurable": {"thread_id": conf["thread_id"], "checkpoint_ns": conf.get("checkpoint_ns", ""),
                                 "checkpoint_id": checkpoint["id"]}}

    def put_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        """One acknowledged round trip, as ours makes per task; nothing is written."""
        self._ping()

    def close(self) -> None:
        """Nothing of its own to close: the client is the caller's."""


@dataclass
class _Savers:
    target: _Target
    workdir: Path
    counter: _Counter = field(default_factory=_Counter)
    _made: dict[str, Any] = field(default_factory=dict)
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def get(self, kind: str) -> Any:
        if kind not in self._made:
            self._made[kind] = self._make(kind)
        return self._made[kind]

    def _make(self, kind: str) -> Any:
        from xmrt.redis.checkpoint import RedisCheckpointSaver

        if kind == "none":
            return None
        if kind == "memory":
            from langgraph.checkpoint.memory import InMemorySaver

            return InMemorySaver()
        if kind in ("sqlite", "sqlite-mem"):
            import sqlite3

            from langgraph.checkpoint.sqlite import SqliteSaver

            where = ":memory:" if kind == "sqlite-mem" else str(self.workdir / "bench.sqlite")
            conn = sqlite3.connect(where, check_same_thread=False)
            self._closers.append(conn.close)
            saver = SqliteSaver(conn)
            saver.setup()
            return saver
        client = _counting_client(self.target.url, self.counter)
        self._closers.append(client.close)
        if kind == "redis-ping":
            saver = RoundTripsOnlySaver(client)
            self._closers.append(saver.close)
            return saver
        prefix = f"{self.target.prefix}-{kind}"
        prefixes = {"checkpoint_prefix": f"{prefix}:checkpoint",
                    "checkpoint_write_prefix": f"{prefix}:checkpoint_write"}
        if kind == "redis-lib":
            from langgraph.checkpoint.redis import RedisSaver

            saver = RedisSaver(redis_client=client, **prefixes)
        elif kind == "redis-shallow":
            from langgraph.checkpoint.redis import ShallowRedisSaver

            saver = ShallowRedisSaver(redis_client=client, **prefixes)
        elif kind == "redis-fast":
            return RedisCheckpointSaver(client, key_prefix=prefix)
        else:
            raise ValueError(f"unknown saver kind {kind!r}")
        saver.setup()
        return saver

    def close(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                close()


def sqlite_available() -> bool:
    """True when ``langgraph-checkpoint-sqlite`` is installed."""
    try:
        import langgraph.checkpoint.sqlite  # noqa: F401
    except ImportError:
        return False
    return True
