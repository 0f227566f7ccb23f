"""Fast Redis checkpointers: the library's key format and indexes, a fraction of its round trips.

:class:`FastRedisSaver` and :class:`AsyncFastRedisSaver` subclass ``langgraph-checkpoint-redis``'s
``RedisSaver`` / ``AsyncRedisSaver``. They write exactly the documents, keys, key-registry sorted
sets and RediSearch indexes the library writes, so everything the library reads keeps working on
their data (``list``, ``delete_thread``, ``prune``, TTL, ``langgraph dev``). Only the hot path
changes:

* ``put`` is one ``MULTI``/``EXEC`` round trip: the checkpoint document, the latest-checkpoint
  pointer and their TTLs land together or not at all. The library takes two round trips (more
  with a TTL: each ``EXPIRE`` is its own), and a failure between them leaves the pointer behind.
* ``put_writes`` is one ``MULTI``/``EXEC`` round trip: the write documents, their key-registry
  entry and the TTLs. The library writes the registry in a second round trip, so a crash in
  between leaves writes that the library's own reads never find. Regular writes are insert-only
  (``JSON.SET ... NX``) and special ones (errors, interrupts, resumes) overwrite, as langgraph's
  reference ``InMemorySaver`` does.
* A 3-node invoke costs 10 round trips with or without a TTL, against the library's 19 (38 with
  a TTL) on a new thread and 23 (46) on a long one.
* ``has_writes`` on a checkpoint document means "may have writes": it is stored as ``true``. The
  library flips it from ``false`` in ``put_writes``, which races with ``put`` (langgraph saves
  both from background threads; under ``durability="async"`` the writes often land first, and the
  library's ``JSON.MERGE`` then creates a stub document that ``put`` overwrites with ``false``, so
  the library's own reads drop those pending writes). Every reader treats ``true`` as "look in
  the write registry", which is correct under any interleaving and saves re-indexing the
  checkpoint document on each ``put_writes``.
* ``get_tuple`` reads the pointer, the document and the write registry with plain key lookups
  (never ``FT.SEARCH``), fetches all pending writes with one ``JSON.MGET``, and skips the parent
  lookup for pending sends that only pre-v4 checkpoints need. For the latest checkpoint of a
  thread that this process wrote or read last, the pointer is checked against a small cache of
  the (immutable) checkpoint document, so resuming the thread costs one round trip.
* ``list`` keeps the library's ``FT.SEARCH`` but fixes two things langgraph relies on: an empty
  ``checkpoint_ns`` selects the root namespace only (the library returned the subgraphs'
  checkpoints in a root graph's history), and ``before`` works with langgraph's UUIDv6 ids (the
  library parses it as a ULID and silently ignores it otherwise).
* Each document is encoded in one orjson pass (the library encodes the checkpoint, decodes it
  and encodes it again with the standard json module), and commands are packed and sent on a
  pooled redis-py connection without redis-py's pipeline machinery, which costs more CPU than
  the round trip itself on a busy two-core machine.

A lost connection surfaces as :class:`CheckpointStoreError`, one line naming the server and the
thread, once the client's retry policy has run out (the factories' clients: :data:`RETRIES`
attempts, about a second in all). Every transaction here is idempotent, so a retried transaction
cannot double-apply.

Key layout (``prefix`` is ``XMRT_KEY_PREFIX``)::

    {prefix}:checkpoint:{thread}:{ns}:{checkpoint_id}           JSON, index "{prefix}:checkpoint"
    {prefix}:checkpoint_latest:{thread}:{ns}                    string: key of the latest checkpoint
    {prefix}:checkpoint_write:{thread}:{ns}:{cid}:{task}:{idx}  JSON, index "{prefix}:checkpoint_write"
    write_keys_zset:{thread}:{ns}:{checkpoint_id}               the library's write registry (unprefixed)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
import redis.asyncio
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    writes_sort_key,
)
from langgraph.checkpoint.redis import AsyncRedisSaver, RedisSaver
from langgraph.checkpoint.redis.jsonplus_redis import JsonPlusRedisSerializer
from langgraph.checkpoint.redis.key_registry import CheckpointKeyRegistry
from langgraph.checkpoint.redis.util import (
    EMPTY_ID_SENTINEL,
    EMPTY_STRING_SENTINEL,
    from_storage_safe_id,
    to_storage_safe_id,
    to_storage_safe_str,
)
from langgraph.constants import TASKS

from xmrt.config import Config
from xmrt.errors import XmrtError
from xmrt.redis_server import RedisSetupError, connect, describe

log = logging.getLogger(__name__)

__all__ = [
    "AsyncFastRedisSaver",
    "CheckpointStoreError",
    "FastRedisSaver",
    "async_checkpointer",
    "checkpoint_prefixes",
    "client_options",
    "make_checkpointer",
    "ttl_settings",
]

#: Retries of a failed connection or timeout: jittered exponential backoff from 50 ms, capped at
#: 0.5 s per wait, about 1 s in all (2.2 s at most). A blip is ridden out; a longer outage fails
#: the run with CheckpointStoreError. (redis-py 8 gives clients made by ``from_url`` no retries.)
RETRIES = 6
RETRY_BACKOFF = {"base": 0.05, "cap": 0.5}


def client_options(*, asyncio_client: bool = False) -> dict[str, Any]:
    """Connection settings of the clients the factories build (a fresh retry policy each call)."""
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


class CheckpointStoreError(XmrtError, redis.ConnectionError):
    """Redis failed while a checkpoint was being saved or loaded.

    Raised instead of a bare connection error so that the run fails with one clear line. Because
    every save is one transaction, the thread's stored history is intact: resume it once Redis is
    back. It is also a ``redis.ConnectionError``, so existing handlers keep working.
    """


def checkpoint_prefixes(key_prefix: str) -> dict[str, str]:
    """The saver keyword arguments that put checkpoints under ``key_prefix``."""
    return {
        "checkpoint_prefix": f"{key_prefix}:checkpoint",
        "checkpoint_write_prefix": f"{key_prefix}:checkpoint_write",
    }


def ttl_settings(minutes: float | None, *, refresh_on_read: bool = True) -> dict[str, Any] | None:
    """The library's ``ttl`` argument for a TTL in minutes (``None`` or 0: keep forever)."""
    if not minutes:
        return None
    return {"default_ttl": minutes, "refresh_on_read": refresh_on_read}


# --------------------------------------------------------------------------------------------
# Shared logic. Each operation is a generator that yields batches of Redis commands and receives
# their results, so the sync and the async saver share every line except the I/O.


@dataclass
class _Batch:
    """Commands sent in one round trip; ``transaction`` wraps them in MULTI/EXEC."""

    commands: list[tuple[Any, ...]]
    transaction: bool = False


@dataclass
class _Latest:
    """The newest checkpoint document of one (thread, namespace), as stored."""

    key: str
    checkpoint_id: str
    raw: bytes


class _LatestCache:
    """A bounded LRU of the latest checkpoint document per (thread, namespace), as stored.

    Checkpoint documents are immutable apart from their ``has_writes`` hint, which the fast read
    path does not use. An entry is only ever served after the thread's latest-pointer in Redis has
    been read in the same round trip and still names the cached key, so writes from other
    processes, deletes and expiry are always seen.
    """

    def __init__(self, max_entries: int = 256, max_entry_bytes: int = 1 << 20, max_total_bytes: int = 32 << 20):
        self.max_entries = max_entries
        self.max_entry_bytes = max_entry_bytes
        self.max_total_bytes = max_total_bytes
        self._data: OrderedDict[tuple[str, str], _Latest] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, thread_id: str, ns: str) -> _Latest | None:
        with self._lock:
            entry = self._data.get((thread_id, ns))
            if entry is not None:
                self._data.move_to_end((thread_id, ns))
            return entry

    def put(self, thread_id: str, ns: str, entry: _Latest) -> None:
        with self._lock:
            old = self._data.pop((thread_id, ns), None)
            if old is not None:
                self._bytes -= len(old.raw)
            if len(entry.raw) > self.max_entry_bytes:
                return
            self._data[(thread_id, ns)] = entry
            self._bytes += len(entry.raw)
            while len(self._data) > self.max_entries or self._bytes > self.max_total_bytes:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= len(evicted.raw)

    def drop(self, thread_id: str) -> None:
        with self._lock:
            for key in [k for k in self._data if k[0] == thread_id]:
                self._bytes -= len(self._data.pop(key).raw)


class ClassCachingSerializer(JsonPlusRedisSerializer):
    """The library's serializer, remembering which class each LangChain constructor envelope names.

    On every read the library imports the module an envelope names (``_constructor_class``). For
    messages that module is LangChain's legacy ``langchain.schema.messages``, which no longer exists, so
    every message read paid a failed import, a scan of ``sys.path``, before the reviver mapped the
    legacy id to the real class: about 30 µs per message. The lookup's outcome, the class or a missing
    module, is kept per envelope id (at most :attr:`MAX_CLASSES` ids); what is revived is unchanged.
    """

    MAX_CLASSES = 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._classes: dict[tuple[str, ...], type[Any] | str] = {}

    def _constructor_class(self, obj: dict[str, Any]) -> type[Any]:
        id_parts = obj.get("id")
        if not isinstance(id_parts, list) or not all(isinstance(part, str) for part in id_parts):
            return super()._constructor_class(obj)  # the library's own error for a malformed id
        key = tuple(id_parts)
        found = self._classes.get(key)
        if found is None:
            try:
                found = super()._constructor_class(obj)
            except ValueError as exc:
                # Remember only a module that does not exist; a class missing from a module that is
                # still being imported (a circular import) may be there on the next read.
                if isinstance(exc.__cause__, ModuleNotFoundError) and len(self._classes) < self.MAX_CLASSES:
                    self._classes[key] = str(exc)
                raise
            if len(self._classes) < self.MAX_CLASSES:
                self._classes[key] = found
        if isinstance(found, str):
            raise ValueError(found)
        return found


#: Keys that make the library's channel-value reviver change a value (``_recursive_deserialize``:
#: LangChain constructor envelopes, Send, bytes and delta-snapshot markers). Inside the document's
#: metadata string they appear escaped, so they cannot match there.
_REVIVER_MARKERS = (b'"lc"', b'"__send__"', b'"__bytes__"', b'"__delta_snapshot__"')


def _checkpoint_ts(checkpoint_id: str) -> float:
    """The library's ``checkpoint_ts``: a ULID's time, else now (langgraph's ids are UUIDv6)."""
    if len(checkpoint_id) == 26:
        try:
            from ulid import ULID

            return ULID.from_str(checkpoint_id).timestamp
        except ValueError:
            pass
    return time.time() * 1000


def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int | float):
        return repr(value).encode()
    raise TypeError(f"cannot send {type(value).__name__} to Redis")


def _pack(commands: Sequence[tuple[Any, ...]], transaction: bool) -> tuple[bytes, int]:
    """RESP-encode a batch (wrapped in MULTI/EXEC when ``transaction``) and count its replies."""
    if transaction:
        commands = [("MULTI",), *commands, ("EXEC",)]
    out = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for value in command:
            data = _arg(value)
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out), len(commands)


def _unpack(replies: list[Any], transaction: bool) -> list[Any]:
    """The per-command results of a batch: errors stay in place as exception objects."""
    if not transaction:
        return replies
    *queued, executed = replies
    for reply in queued:  # "+OK" for MULTI, "+QUEUED" per command, or the error that aborted EXEC
        if isinstance(reply, Exception):
            raise reply
    if isinstance(executed, Exception):
        raise executed
    if executed is None:  # only a WATCHed key can abort a transaction; none is watched here
        raise redis.WatchError("transaction aborted")
    return executed


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def _raise_first(results: Sequence[Any]) -> None:
    """Raise the first error among a batch's results."""
    for result in results:
        if isinstance(result, Exception):
            raise result


class _Connections:
    """Connections for the hot path, made by the client's pool so that they share its settings.

    The pool's checkout costs a ``select()`` per use and observability bookkeeping, and every system
    call is a chance to lose the GIL to another thread; these connections are always left with
    nothing unread (or discarded), so they need neither. Safe across ``fork``: a child never
    reuses its parent's sockets.
    """

    def __init__(self, pool: Any, max_idle: int = 16) -> None:
        self._pool = pool
        self._max_idle = max_idle
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _take(self) -> Any | None:
        with self._lock:
            if self._pid != os.getpid():
                self._idle, self._pid = [], os.getpid()
            return self._idle.pop() if self._idle else None

    # New connections connect once, without the connection's own retry loop: the caller's retry
    # policy covers the whole exchange, and nesting the two would multiply an outage's wait.

    def acquire(self) -> Any:
        conn = self._take()
        if conn is None:
            conn = self._pool.make_connection()
            conn.connect_check_health(retry_socket_connect=False)
        return conn

    async def aacquire(self) -> Any:
        conn = self._take()
        if conn is None:
            conn = self._pool.make_connection()
            await conn.connect_check_health(retry_socket_connect=False)
        return conn

    def release(self, conn: Any) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle and self._pid == os.getpid():
                self._idle.append(conn)
                return
        self.discard(conn)

    def discard(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.disconnect()

    async def adiscard(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            await conn.disconnect()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            self.discard(conn)

    async def aclose(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            await self.adiscard(conn)


class _FastPathMixin:
    """The hot path shared by :class:`FastRedisSaver` and :class:`AsyncFastRedisSaver`.

    Relies on the library's key builders, serializer and document layout (``BaseRedisSaver``).
    """

    _latest_cache: _LatestCache
    _connections: _Connections
    _server_label: str = "Redis"

    def _init_fast(self, server_label: str | None) -> None:
        self._latest_cache = _LatestCache()
        if type(self.serde) is JsonPlusRedisSerializer:
            self.serde = ClassCachingSerializer()
        self._connections = _Connections(self._redis.connection_pool)
        if server_label:
            self._server_label = server_label

    # -- TTL ---------------------------------------------------------------------------------

    def _ttl_seconds(self) -> int | None:
        ttl = getattr(self, "ttl_config", None)
        if ttl and ttl.get("default_ttl"):
            return max(1, int(ttl["default_ttl"] * 60))
        return None

    def _refresh_seconds(self) -> int | None:
        ttl = getattr(self, "ttl_config", None)
        if ttl and ttl.get("refresh_on_read"):
            return self._ttl_seconds()
        return None

    # -- keys --------------------------------------------------------------------------------

    def _zset_key(self, thread_id: str, ns: str, checkpoint_id: str) -> str:
        return CheckpointKeyRegistry.make_write_keys_zset_key(thread_id, ns, checkpoint_id)

    # -- encoding ----------------------------------------------------------------------------

    def _orjson_default(self, obj: Any) -> Any:
        """The fallback for orjson, giving the output of the serializer's preprocess + encode passes."""
        if isinstance(obj, bytes | bytearray):
            raise TypeError("bytes need the serializer's msgpack fallback")
        serde = self.serde
        if isinstance(obj, set | tuple) or (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
            return serde._preprocess_redis_json(obj)  # sets, NamedTuples, dataclasses, Interrupt, Send
        return serde._default_handler(obj)  # LangChain objects and other classes

    def _encode_checkpoint_doc(self, doc: dict[str, Any], checkpoint: Checkpoint) -> bytes:
        """The document with ``checkpoint`` stored as the library's ``_dump_checkpoint`` stores it."""
        doc["checkpoint"] = {
            "type": "json",
            **checkpoint,
            "channel_versions": {k: str(v) for k, v in checkpoint.get("channel_versions", {}).items()},
            "pending_sends": [],
        }
        try:
            return orjson.dumps(doc, default=self._orjson_default, option=orjson.OPT_PASSTHROUGH_DATACLASS)
        except (TypeError, orjson.JSONEncodeError):
            # Values the JSON path cannot hold (bytes, non-string keys): the library's own encoding.
            doc["checkpoint"] = self._dump_checkpoint(checkpoint.copy())
            return orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)

    # -- put ---------------------------------------------------------------------------------

    def _put_steps(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata
    ) -> Generator[_Batch, list[Any], RunnableConfig]:
        conf = config["configurable"]
        run_id = conf.get("run_id", metadata.get("run_id"))
        thread_id = conf["thread_id"]
        ns = conf.get("checkpoint_ns", "")
        config_checkpoint_id = conf.get("checkpoint_id")
        # The library's rule, kept as is: the config's checkpoint_id is the parent when it differs.
        checkpoint_id = config_checkpoint_id or conf.get("thread_ts", "") or checkpoint.get("id", "")
        parent_id = None
        if checkpoint.get("id") and config_checkpoint_id and checkpoint["id"] != config_checkpoint_id:
            parent_id = config_checkpoint_id
            checkpoint_id = checkpoint["id"]

        doc: dict[str, Any] = {
            "thread_id": to_storage_safe_id(thread_id),
            "run_id": to_storage_safe_id(run_id) if run_id else "",
            "checkpoint_ns": to_storage_safe_str(ns),
            "checkpoint_id": to_storage_safe_id(checkpoint_id),
            "parent_checkpoint_id": to_storage_safe_id(parent_id) if parent_id else "",
            "checkpoint_ts": _checkpoint_ts(checkpoint_id),
            "checkpoint": None,
            "metadata": self._dump_metadata(metadata),
            "has_writes": True,  # "may have writes": see the module docstring
        }
        if "source" in metadata and "step" in metadata:
            doc["source"] = metadata["source"]
            doc["step"] = metadata["step"]
        raw = self._encode_checkpoint_doc(doc, checkpoint)

        key = self._make_redis_checkpoint_key_cached(thread_id, ns, checkpoint_id)
        latest_key = self._make_redis_checkpoint_latest_key(thread_id, ns)
        ttl = self._ttl_seconds()
        commands: list[tuple[Any, ...]] = [("JSON.SET", key, "$", raw)]
        if ttl:
            commands += [("EXPIRE", key, ttl), ("SET", latest_key, key, "EX", ttl)]
        else:
            commands.append(("SET", latest_key, key))
        _raise_first((yield _Batch(commands, transaction=True)))
        self._latest_cache.put(thread_id, ns, _Latest(key, checkpoint_id, raw))
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}}

    # -- put_writes --------------------------------------------------------------------------

    def _put_writes_steps(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> Generator[_Batch, list[Any], None]:
        if not writes:
            return None
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        ns = conf.get("checkpoint_ns", "")
        checkpoint_id = conf["checkpoint_id"]
        safe = (to_storage_safe_id(thread_id), to_storage_safe_str(ns), to_storage_safe_id(checkpoint_id))
        ttl = self._ttl_seconds()
        commands: list[tuple[Any, ...]] = []
        registry: list[Any] = []
        for position, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, position)
            type_, blob = self.serde.dumps_typed(value)
            doc = {
                "thread_id": safe[0],
                "checkpoint_ns": safe[1],
                "checkpoint_id": safe[2],
                "task_id": task_id,
                "task_path": task_path,
                "idx": idx,
                "channel": channel,
                "type": type_,
                "blob": self._encode_blob(blob),
            }
            key = self._make_redis_checkpoint_writes_key_cached(thread_id, ns, checkpoint_id, task_id, idx)
            # Regular writes are never overwritten (a retried task must not replace what a finished
            # one saved); special writes (error, interrupt, resume, scheduled) are upserts.
            command = ("JSON.SET", key, "$", orjson.dumps(doc))
            commands.append((*command, "NX") if idx >= 0 else command)
            registry += [position, key]
        zset_key = self._zset_key(thread_id, ns, checkpoint_id)
        commands.append(("ZADD", zset_key, *registry))
        if ttl:
            commands += [("EXPIRE", key, ttl) for key in registry[1::2]]
            commands.append(("EXPIRE", zset_key, ttl))
        _raise_first((yield _Batch(commands, transaction=True)))
        return None

    # -- get_tuple ---------------------------------------------------------------------------

    def _get_tuple_steps(self, config: RunnableConfig) -> Generator[_Batch, list[Any], CheckpointTuple | None]:
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        ns = conf.get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        refresh = self._refresh_seconds()
        latest_key = None
        raw = None
        members: Any = None
        if checkpoint_id and checkpoint_id != EMPTY_ID_SENTINEL:
            key = self._make_redis_checkpoint_key_cached(thread_id, ns, checkpoint_id)
        else:
            checkpoint_id = None
            latest_key = self._make_redis_checkpoint_latest_key(thread_id, ns)
            cached = self._latest_cache.get(thread_id, ns)
            if cached is not None:
                # One round trip: is the cached document still the latest, and what writes does it have?
                zset_key = self._zset_key(thread_id, ns, cached.checkpoint_id)
                commands = [("GET", latest_key), ("ZRANGE", zset_key, 0, -1)]
                if refresh:
                    commands += [("EXPIRE", k, refresh, "GT") for k in (cached.key, zset_key, latest_key)]
                results = yield _Batch(commands)
                _raise_first(results)
                pointer, members = results[0], results[1]
                if pointer is None:
                    self._latest_cache.drop(thread_id)
                    return None
                key = _text(pointer)
                if key == cached.key:
                    checkpoint_id, raw = cached.checkpoint_id, cached.raw
            else:
                (pointer,) = yield _Batch([("GET", latest_key)])
                _raise_first([pointer])
                if pointer is None:
                    return None
                key = _text(pointer)
            if checkpoint_id is None:
                checkpoint_id = key.rsplit(":", 1)[1]
        if raw is None:
            zset_key = self._zset_key(thread_id, ns, checkpoint_id)
            commands = [("JSON.GET", key), ("ZRANGE", zset_key, 0, -1)]
            if refresh:
                # GT: only keys that already expire get a later expiry; persistent keys stay persistent.
                commands += [("EXPIRE", k, refresh, "GT") for k in (key, zset_key, latest_key) if k]
            results = yield _Batch(commands)
            _raise_first(results)
            raw, members = results[0], results[1]
            if raw is None:
                return None
            raw = raw.encode() if isinstance(raw, str) else raw
            if latest_key is not None:
                self._latest_cache.put(thread_id, ns, _Latest(key, checkpoint_id, raw))
        write_docs: list[dict] = []
        if members:
            write_keys = [_text(m) for m in members]
            more = [("EXPIRE", k, refresh, "GT") for k in write_keys] if refresh else []
            results = yield _Batch([("JSON.MGET", *write_keys, "$"), *more])
            _raise_first(results)
            write_docs = [orjson.loads(item)[0] for item in results[0] if item is not None]
        doc = orjson.loads(raw)
        pending_sends: list[tuple[str, Any]] = []
        parent_id = from_storage_safe_id(doc.get("parent_checkpoint_id") or "")
        inner = doc.get("checkpoint") or {}
        if parent_id and inner.get("v", 4) < 4:
            pending_sends = yield from self._legacy_pending_sends(thread_id, ns, parent_id)
        return self._make_tuple(thread_id, ns, doc, write_docs, pending_sends, raw=raw)

    def _legacy_pending_sends(
        self, thread_id: str, ns: str, parent_id: str
    ) -> Generator[_Batch, list[Any], list[tuple[str, Any]]]:
        """Sends stored as writes of the parent checkpoint; only checkpoints older than v4 need them."""
        (members,) = yield _Batch([("ZRANGE", self._zset_key(thread_id, ns, parent_id), 0, -1)])
        _raise_first([members])
        if not members:
            return []
        (items,) = yield _Batch([("JSON.MGET", *[_text(m) for m in members], "$")])
        _raise_first([items])
        docs = [orjson.loads(i)[0] for i in items if i is not None]
        docs = [d for d in docs if d.get("channel") == TASKS]
        docs.sort(key=lambda d: (d.get("task_path", ""), d.get("task_id", ""), d.get("idx", 0)))
        return [(d.get("type", ""), d.get("blob", "")) for d in docs]

    def _make_tuple(
        self,
        thread_id: str,
        ns: str,
        doc: dict[str, Any],
        write_docs: list[dict[str, Any]],
        pending_sends: list[tuple[str, Any]],
        *,
        raw: bytes | None = None,
    ) -> CheckpointTuple:
        """Build the tuple the library's ``get_tuple`` returns for the same document."""
        checkpoint_id = from_storage_safe_id(doc["checkpoint_id"])
        parent_id = from_storage_safe_id(doc.get("parent_checkpoint_id") or "")
        inner = doc.get("checkpoint") or {}
        if isinstance(inner, str):
            inner = orjson.loads(inner)
        channel_values = self._revive_channels(inner.get("channel_values") or {}, raw)
        raw_metadata = doc.get("metadata", "{}")
        metadata = orjson.loads(raw_metadata) if isinstance(raw_metadata, str | bytes) else raw_metadata
        metadata = {
            k.replace("\u0000", ""): (v.replace("\u0000", "") if isinstance(v, str) else v)
            for k, v in metadata.items()
        }
        write_docs.sort(key=lambda d: writes_sort_key(d.get("task_path", ""), d.get("task_id", ""), d.get("idx", 0)))
        pending_writes = [
            (d["task_id"], d["channel"], self.serde.loads_typed((d["type"], self._decode_blob(d["blob"]))))
            for d in write_docs
        ]
        return CheckpointTuple(
            config={"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}},
            checkpoint=self._load_checkpoint(inner, channel_values, pending_sends),
            metadata=metadata,
            parent_config=(
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": parent_id}}
                if parent_id
                else None
            ),
            pending_writes=pending_writes,
        )

    def _revive_channels(self, values: dict[str, Any], raw: bytes | None) -> dict[str, Any]:
        """The library's channel-value revival, run only on channels that hold something to revive.

        Its recursive walk returns a value unchanged unless it holds one of the marker keys, and it
        costs a Python call per element: on a long thread's message list, more than the round trip.
        """
        if raw is not None and not any(marker in raw for marker in _REVIVER_MARKERS):
            return values
        out = {}
        for channel, value in values.items():
            if isinstance(value, dict | list):
                encoded = orjson.dumps(value)
                if any(marker in encoded for marker in _REVIVER_MARKERS):
                    value = self._deserialize_channel_values({channel: value})[channel]
            out[channel] = value
        return out

    # -- list ----------------------------------------------------------------------------------

    @staticmethod
    def _exact_namespace(config: RunnableConfig | None) -> RunnableConfig | None:
        """Make an empty ``checkpoint_ns`` select the root namespace only.

        The library only filters on a non-empty namespace, so the history of a root graph would
        also list its subgraphs' checkpoints; langgraph's reference savers treat "" as the root.
        """
        if config and config.get("configurable", {}).get("checkpoint_ns") == "":
            return {**config, "configurable": {**config["configurable"], "checkpoint_ns": EMPTY_STRING_SENTINEL}}
        return config

    @staticmethod
    def _before_id(before: RunnableConfig | None) -> str | None:
        """The ``before`` checkpoint id when the library would ignore it (it only parses ULIDs)."""
        if not before:
            return None
        before_id = get_checkpoint_id(before)
        if not before_id:
            return None
        try:
            from ulid import ULID

            ULID.from_str(before_id)
        except Exception:  # noqa: BLE001 - any parse failure means "not a ULID"
            return before_id
        return None

    # -- errors ------------------------------------------------------------------------------

    def _store_error(self, exc: Exception, what: str, config: RunnableConfig | None) -> CheckpointStoreError:
        thread = (config or {}).get("configurable", {}).get("thread_id", "?")
        reason = str(exc).rstrip(".")
        return CheckpointStoreError(
            f"{self._server_label} failed while {what} for thread {thread!r}: {reason}. The thread's saved "
            "history is intact (each checkpoint is written in one transaction); resume it once Redis is back."
        )


_CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


async def _noop() -> None:
    return None


class FastRedisSaver(_FastPathMixin, RedisSaver):
    """``RedisSaver`` with one round trip per ``put`` / ``put_writes`` and no search on ``get_tuple``.

    Same constructor as ``RedisSaver``, plus ``server_label`` (the server named in error messages).
    Call ``setup()`` before use, or build it with :func:`make_checkpointer`.
    """

    def __init__(self, redis_url: str | None = None, *, server_label: str | None = None, **kwargs: Any) -> None:
        super().__init__(redis_url, **kwargs)
        self._init_fast(server_label)

    def _exchange(self, batch: _Batch) -> list[Any]:
        """Send one batch and read every reply: one round trip."""
        payload, count = _pack(batch.commands, batch.transaction)
        stash = self._connections

        def attempt() -> list[Any]:
            conn = stash.acquire()
            try:
                conn.send_packed_command([payload], check_health=False)
                replies: list[Any] = []
                for _ in range(count):
                    try:
                        replies.append(conn.read_response(disable_decoding=True))
                    except redis.ResponseError as exc:
                        replies.append(exc)
            except BaseException:
                stash.discard(conn)  # unread replies must never reach the next user of the connection
                raise
            stash.release(conn)
            return _unpack(replies, batch.transaction)

        retry = self._redis.get_retry()
        if retry is None:
            return attempt()
        return retry.call_with_retry(attempt, lambda _error: None)

    def _drive(self, steps: Generator[_Batch, list[Any], Any], what: str, config: RunnableConfig | None) -> Any:
        try:
            batch = next(steps)
            while True:
                try:
                    results = self._exchange(batch)
                except _CONNECTION_ERRORS as exc:
                    raise self._store_error(exc, what, config) from exc
                batch = steps.send(results)
        except StopIteration as stop:
            return stop.value

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Save a checkpoint, its latest-pointer and TTLs in one MULTI/EXEC round trip."""
        return self._drive(self._put_steps(config, checkpoint, metadata), "saving a checkpoint", config)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Save a task's writes, their registry entry and the checkpoint's flag in one MULTI/EXEC."""
        self._drive(self._put_writes_steps(config, writes, task_id, task_path), "saving task writes", config)

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Load a checkpoint (the latest when the config names none) with its pending writes."""
        return self._drive(self._get_tuple_steps(config), "loading a checkpoint", config)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,  # noqa: A002 - the library's signature
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """The library's ``list``, with exact namespaces and ``before`` honoured for UUIDv6 ids."""
        config = self._exact_namespace(config)
        try:
            before_id = self._before_id(before)
            if before_id is None:
                yield from super().list(config, filter=filter, before=before, limit=limit)
                return
            count = 0
            for item in super().list(config, filter=filter, limit=None):
                if limit is not None and count >= limit:
                    return
                if item.config["configurable"]["checkpoint_id"] < before_id:
                    count += 1
                    yield item
        except _CONNECTION_ERRORS as exc:
            raise self._store_error(exc, "listing checkpoints", config) from exc

    def delete_thread(self, thread_id: str) -> None:
        """Delete a thread's checkpoints, writes, registries and pointers (the library's way)."""
        self._latest_cache.drop(thread_id)
        try:
            super().delete_thread(thread_id)
        except _CONNECTION_ERRORS as exc:
            raise self._store_error(exc, "deleting a thread", {"configurable": {"thread_id": thread_id}}) from exc
        self._latest_cache.drop(thread_id)


class AsyncFastRedisSaver(_FastPathMixin, AsyncRedisSaver):
    """``AsyncRedisSaver`` with the fast path of :class:`FastRedisSaver`.

    Same constructor as ``AsyncRedisSaver``, plus ``server_label``. Call ``await asetup()`` before
    use, or build it with :func:`async_checkpointer`.
    """

    def __init__(self, redis_url: str | None = None, *, server_label: str | None = None, **kwargs: Any) -> None:
        super().__init__(redis_url, **kwargs)
        self._init_fast(server_label)

    async def _aexchange(self, batch: _Batch) -> list[Any]:
        """Send one batch and read every reply: one round trip."""
        payload, count = _pack(batch.commands, batch.transaction)
        stash = self._connections

        async def attempt() -> list[Any]:
            conn = await stash.aacquire()
            try:
                await conn.send_packed_command([payload], check_health=False)
                replies: list[Any] = []
                for _ in range(count):
                    try:
                        replies.append(await conn.read_response(disable_decoding=True))
                    except redis.ResponseError as exc:
                        replies.append(exc)
            except BaseException:
                await stash.adiscard(conn)  # unread replies must never reach the next user of the connection
                raise
            stash.release(conn)
            return _unpack(replies, batch.transaction)

        retry = self._redis.get_retry()
        if retry is None:
            return await attempt()
        return await retry.call_with_retry(attempt, lambda _error: _noop())

    async def _adrive(
        self, steps: Generator[_Batch, list[Any], Any], what: str, config: RunnableConfig | None
    ) -> Any:
        try:
            batch = next(steps)
            while True:
                try:
                    results = await self._aexchange(batch)
                except _CONNECTION_ERRORS as exc:
                    raise self._store_error(exc, what, config) from exc
                batch = steps.send(results)
        except StopIteration as stop:
            return stop.value

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
        stream_mode: str = "values",
    ) -> RunnableConfig:
        """Save a checkpoint, its latest-pointer and TTLs in one MULTI/EXEC round trip.

        Unlike the library's ``aput``, a cancelled save writes nothing: the transaction is either
        executed whole by the server or never sent.
        """
        return await self._adrive(self._put_steps(config, checkpoint, metadata), "saving a checkpoint", config)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Save a task's writes, their registry entry and the checkpoint's flag in one MULTI/EXEC."""
        await self._adrive(self._put_writes_steps(config, writes, task_id, task_path), "saving task writes", config)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Load a checkpoint (the latest when the config names none) with its pending writes."""
        return await self._adrive(self._get_tuple_steps(config), "loading a checkpoint", config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,  # noqa: A002 - the library's signature
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """The library's ``alist``, with exact namespaces and ``before`` honoured for UUIDv6 ids."""
        config = self._exact_namespace(config)
        try:
            before_id = self._before_id(before)
            if before_id is None:
                async for item in super().alist(config, filter=filter, before=before, limit=limit):
                    yield item
                return
            count = 0
            async for item in super().alist(config, filter=filter, limit=None):
                if limit is not None and count >= limit:
                    return
                if item.config["configurable"]["checkpoint_id"] < before_id:
                    count += 1
                    yield item
        except _CONNECTION_ERRORS as exc:
            raise self._store_error(exc, "listing checkpoints", config) from exc

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete a thread's checkpoints, writes, registries and pointers (the library's way)."""
        self._latest_cache.drop(thread_id)
        try:
            await super().adelete_thread(thread_id)
        except _CONNECTION_ERRORS as exc:
            raise self._store_error(exc, "deleting a thread", {"configurable": {"thread_id": thread_id}}) from exc
        self._latest_cache.drop(thread_id)


# --------------------------------------------------------------------------------------------
# Factories


def _saver_kwargs(config: Config, ttl_minutes: float | None) -> dict[str, Any]:
    minutes = ttl_minutes if ttl_minutes is not None else config.checkpoint_ttl_minutes
    return {"ttl": ttl_settings(minutes), **checkpoint_prefixes(config.key_prefix)}


def _setup_error(config: Config, exc: Exception) -> RedisSetupError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RedisSetupError(f"cannot create the checkpoint indexes on Redis at {describe(config.redis_url)}: {first}")


def make_checkpointer(config: Config, *, ttl_minutes: float | None = None, fast: bool = True):
    """A sync Redis checkpointer under ``config.key_prefix``, with its indexes set up.

    Args:
        config: Settings: the Redis URL, the key prefix and the default TTL.
        ttl_minutes: Expire checkpoints this many minutes after their last write or read
            (default: ``config.checkpoint_ttl_minutes``; ``None``/0 keeps them).
        fast: :class:`FastRedisSaver` (default) or the library's ``RedisSaver`` (same data format).

    Returns:
        The saver, after ``setup()``.

    Raises:
        RedisSetupError: Redis is unreachable or lacks RedisJSON/RediSearch (one line).
    """
    connect(config).close()
    client = redis.Redis.from_url(config.redis_url, **client_options())
    kwargs = _saver_kwargs(config, ttl_minutes)
    if fast:
        saver: RedisSaver = FastRedisSaver(redis_client=client, server_label=f"Redis at {describe(config.redis_url)}",
                                           **kwargs)
    else:
        saver = RedisSaver(redis_client=client, **kwargs)
    try:
        saver.setup()
    except (redis.RedisError, ValueError, RuntimeError) as exc:
        client.close()
        raise _setup_error(config, exc) from None
    return saver


@contextlib.asynccontextmanager
async def async_checkpointer(
    config: Config, *, ttl_minutes: float | None = None, fast: bool = True
) -> AsyncIterator[AsyncRedisSaver]:
    """An async Redis checkpointer under ``config.key_prefix``, set up, closed on exit.

    This is the shape ``langgraph.json`` wants under ``checkpointer.path``. The module check runs
    in a worker thread so that no blocking call happens on the event loop.

    Args:
        config: Settings: the Redis URL, the key prefix and the default TTL.
        ttl_minutes: As for :func:`make_checkpointer`.
        fast: :class:`AsyncFastRedisSaver` (default) or the library's ``AsyncRedisSaver``.

    Yields:
        The saver, after ``asetup()``.

    Raises:
        RedisSetupError: Redis is unreachable or lacks RedisJSON/RediSearch (one line).
    """
    client_check = await asyncio.to_thread(connect, config)
    await asyncio.to_thread(client_check.close)
    client = redis.asyncio.Redis.from_url(config.redis_url, **client_options(asyncio_client=True))
    kwargs = _saver_kwargs(config, ttl_minutes)
    saver: AsyncRedisSaver | None = None
    try:
        if fast:
            saver = AsyncFastRedisSaver(
                redis_client=client, server_label=f"Redis at {describe(config.redis_url)}", **kwargs
            )
        else:
            saver = AsyncRedisSaver(redis_client=client, **kwargs)
        try:
            await saver.asetup()
        except (redis.RedisError, ValueError, RuntimeError) as exc:
            raise _setup_error(config, exc) from None
        yield saver
    finally:
        if isinstance(saver, AsyncFastRedisSaver):
            await saver._connections.aclose()
        await client.aclose()
