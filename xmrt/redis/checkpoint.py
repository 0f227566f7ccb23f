"""The Redis checkpointer: our own format on ``BaseCheckpointSaver``'s public API, sync and async.

:class:`RedisCheckpointSaver` is one class with both the sync methods (``graph.invoke``) and the
async ones (``graph.ainvoke``, ``langgraph dev``), in the manner of langgraph's own Postgres and
SQLite savers. It uses only public APIs: redis-py clients and their pipelines/transactions
(``redis.Redis`` or, on a Redis Cluster, ``redis.cluster.RedisCluster``, and their asyncio twins)
and langgraph's serializer protocol (``serde.dumps_typed`` / ``loads_typed``, by default
``JsonPlusSerializer``: msgpack). It needs no Redis module and creates no search index.

Key layout (``P`` is ``XMRT_KEY_PREFIX``; ``T`` the thread id with ``%``, ``{`` and ``}``
percent-encoded; ``N`` the namespace with ``%`` and ``:`` percent-encoded)::

    P:checkpoint:{T}                    hash: the thread. Fields:
                                          c:N:<checkpoint_id>   a checkpoint (see _encode_record)
                                          l:N                   id of the namespace's latest checkpoint
                                          r:<run_id>            a run that saved checkpoints here
    P:checkpoint:{T}:writes:N:<id>      hash: the pending writes of one checkpoint, one field per task
                                        (t:<task_id>, its regular writes, insert-only: the first
                                        save of a task's writes stays whole) or per special write
                                        (s:<task_id>:<idx>: error, interrupt, resume, scheduled;
                                        the latest wins)
    P:checkpoint_run:{<run_id>}         set: the threads a run saved checkpoints in (for delete_for_runs)

Every key of a thread carries the same hash tag ``{T}``, so every key a save touches lives in one
cluster slot. What this guarantees:

* **Each save is atomic.** ``put`` is one ``HSET`` (the checkpoint and the latest pointer, plus the
  run marker on a run's first checkpoint in the thread); ``put_writes`` is one ``HSETNX``/``HSET``.
  A single command is atomic by itself; when a save needs more than one (a TTL adds ``EXPIRE``;
  regular and special writes together), they go in one ``MULTI``/``EXEC`` on the one node that owns
  the thread's slot. A connection cut or a server killed mid-save leaves the previous state; a
  transaction is never half-applied. The run registry (another slot) is written before the save
  on a cluster, inside it on a single Redis; it is only a lookup hint for ``delete_for_runs``.
* **Idempotent retries.** Every save can be sent twice without changing the result (same fields;
  a task's regular writes are insert-only), so the client's retry policy may resend a transaction
  whose reply was lost.
* **No search index.** The history of a thread is its hash; listing reads its fields and sorts
  them, so it works on every shard of a cluster. ``list(None)`` (every thread) scans the key space
  of every primary for thread keys.
* **Latest = highest checkpoint id** of the namespace, as in langgraph's reference savers; the
  pointer is kept with every save and recomputed by the operations that delete checkpoints.
* **TTL** (``ttl={"default_ttl": minutes, "refresh_on_read": bool}``): every key a save touches gets
  the TTL; a read extends the thread hash and the read checkpoint's writes (``EXPIRE ... GT``:
  persistent keys stay persistent). The thread's checkpoints (one hash) therefore expire together,
  TTL minutes after the thread's last save or read; an older checkpoint's pending writes expire TTL
  minutes after they were saved or last read; a run's registry entry TTL minutes after the run's
  first checkpoint in the thread.

The async methods use the asyncio client on its own event loop; elsewhere (e.g. ``graph.ainvoke`` on
the saver of :func:`make_checkpointer`, from any loop) they run the sync methods in a worker thread.

Known limit: under ``durability="async"`` a process killed after a task's writes were saved but
before the checkpoint they belong to leaves that writes hash without a checkpoint; nothing reads it
and ``delete_thread`` does not find it (it expires with a TTL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import ormsgpack
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from xmrt.config import Config
from xmrt.errors import XmrtError
from xmrt.redis.clients import client_options  # one policy for every client
from xmrt.redis.server import RedisSetupError, connect, describe

log = logging.getLogger(__name__)

__all__ = [
    "CheckpointStoreError",
    "RedisCheckpointSaver",
    "async_checkpointer",
    "client_options",
    "is_cluster",
    "make_checkpointer",
    "ttl_settings",
]

#: Version of the record layout written by :func:`_encode_record`.
FORMAT_VERSION = 1

#: Attempts of an operation whose watched thread changed under it (delete, prune, copy).
WATCH_ATTEMPTS = 20


class CheckpointStoreError(XmrtError, redis.ConnectionError):
    """Redis failed while a checkpoint was being saved or loaded.

    Raised instead of a bare connection error so that the run fails with one clear line. Because
    every save is atomic, the thread's stored history is intact: resume it once Redis is back. It
    is also a ``redis.ConnectionError``, so existing handlers keep working.
    """


def ttl_settings(minutes: float | None, *, refresh_on_read: bool = True) -> dict[str, Any] | None:
    """The saver's ``ttl`` argument for a TTL in minutes (``None`` or 0: keep forever)."""
    if not minutes:
        return None
    return {"default_ttl": minutes, "refresh_on_read": refresh_on_read}


# --------------------------------------------------------------------------------------------
# Keys and records


def _escape_tag(thread_id: str) -> str:
    return thread_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def _unescape_tag(text: str) -> str:
    return text.replace("%7D", "}").replace("%7B", "{").replace("%25", "%")


def _escape_ns(ns: str) -> str:
    return ns.replace("%", "%25").replace(":", "%3A")


def _unescape_ns(text: str) -> str:
    return text.replace("%3A", ":").replace("%25", "%")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


@dataclass(frozen=True)
class _Keys:
    """Key and field names under one prefix."""

    prefix: str

    def thread(self, thread_id: str) -> str:
        return f"{self.prefix}:checkpoint:{{{_escape_tag(thread_id)}}}"

    def writes(self, thread_id: str, ns: str, checkpoint_id: str) -> str:
        return f"{self.thread(thread_id)}:writes:{_escape_ns(ns)}:{checkpoint_id}"

    def run(self, run_id: str) -> str:
        return f"{self.prefix}:checkpoint_run:{{{_escape_tag(run_id)}}}"

    def thread_pattern(self) -> str:
        return f"{self.prefix}:checkpoint:{{*}}"

    def thread_of(self, key: str) -> str | None:
        match = re.fullmatch(re.escape(f"{self.prefix}:checkpoint:") + r"\{([^}]*)\}", key)
        return _unescape_tag(match.group(1)) if match else None

    @staticmethod
    def checkpoint_field(ns: str, checkpoint_id: str) -> str:
        return f"c:{_escape_ns(ns)}:{checkpoint_id}"

    @staticmethod
    def latest_field(ns: str) -> str:
        return f"l:{_escape_ns(ns)}"

    @staticmethod
    def run_field(run_id: str) -> str:
        return f"r:{run_id}"

    @staticmethod
    def parse_checkpoint_field(field: str) -> tuple[str, str] | None:
        """``(ns, checkpoint_id)`` of a ``c:`` field, or None for the thread's other fields."""
        if not field.startswith("c:"):
            return None
        ns, _, checkpoint_id = field[2:].partition(":")
        return _unescape_ns(ns), checkpoint_id


@dataclass
class _Record:
    """A stored checkpoint, decoded down to its typed blobs."""

    parent_id: str | None
    run_id: str | None
    metadata: tuple[str, bytes]
    checkpoint: tuple[str, bytes]


def _encode_record(parent_id: str | None, run_id: str | None, metadata: tuple[str, bytes],
                   checkpoint: tuple[str, bytes]) -> bytes:
    """``[version, parent id, run id, metadata type, metadata, checkpoint type, checkpoint]`` in msgpack."""
    return ormsgpack.packb([FORMAT_VERSION, parent_id, run_id, metadata[0], metadata[1], checkpoint[0],
                            checkpoint[1]])


def _decode_record(raw: bytes) -> _Record:
    version, parent_id, run_id, mtype, mdata, ctype, cdata = ormsgpack.unpackb(raw)
    if version != FORMAT_VERSION:
        raise ValueError(f"unknown checkpoint record version {version!r}")
    return _Record(parent_id, run_id, (mtype, mdata), (ctype, cdata))


def _encode_writes(task_id: str, task_path: str, items: list[list[Any]]) -> bytes:
    """One task's writes: ``[task id, task path, [[idx, channel, type, blob], ...]]`` in msgpack."""
    return ormsgpack.packb([task_id, task_path, items])


# --------------------------------------------------------------------------------------------
# The shared logic. Each operation is a generator that yields requests (Redis commands, a key
# scan, a watch) and receives their results, so the sync and async saver share every line but
# the I/O.


@dataclass
class _Cmds:
    """Commands sent in one round trip: one command alone, else a pipeline (MULTI/EXEC if atomic)."""

    commands: list[tuple[Any, ...]]
    atomic: bool = False


@dataclass
class _Watch:
    """WATCH ``key``, then run ``reads`` at once; the next ``_Cmds`` runs as the watched transaction."""

    key: str
    reads: list[tuple[Any, ...]]


@dataclass
class _Scan:
    """Every key matching ``match`` on every primary."""

    match: str


@dataclass
class _Emit:
    """A checkpoint tuple that ``list`` yields to its caller."""

    item: CheckpointTuple


class _Watched(Exception):
    """The watched key changed before the transaction ran; the operation starts again."""


def _raise_errors(results: Sequence[Any]) -> None:
    for result in results:
        if isinstance(result, Exception):
            raise result


class _LatestCache:
    """A bounded LRU of the latest checkpoint record per (thread, namespace), as stored.

    A record is immutable once saved, and an entry is only served after the thread's latest
    pointer in Redis has been read in the same round trip and still names the cached checkpoint,
    so saves from other processes, deletes and expiry are always seen.
    """

    def __init__(self, max_entries: int = 256, max_entry_bytes: int = 1 << 20, max_total_bytes: int = 32 << 20):
        self.max_entries = max_entries
        self.max_entry_bytes = max_entry_bytes
        self.max_total_bytes = max_total_bytes
        self._data: OrderedDict[tuple[str, str], tuple[str, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, thread_id: str, ns: str) -> tuple[str, bytes] | None:
        with self._lock:
            entry = self._data.get((thread_id, ns))
            if entry is not None:
                self._data.move_to_end((thread_id, ns))
            return entry

    def put(self, thread_id: str, ns: str, checkpoint_id: str, raw: bytes) -> None:
        with self._lock:
            old = self._data.pop((thread_id, ns), None)
            if old is not None:
                self._bytes -= len(old[1])
            if len(raw) > self.max_entry_bytes:
                return
            self._data[(thread_id, ns)] = (checkpoint_id, raw)
            self._bytes += len(raw)
            while len(self._data) > self.max_entries or self._bytes > self.max_total_bytes:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= len(evicted[1])

    def drop(self, thread_id: str) -> None:
        with self._lock:
            for key in [k for k in self._data if k[0] == thread_id]:
                self._bytes -= len(self._data.pop(key)[1])


class _SeenRuns:
    """The (thread, run) pairs this saver has registered, so a run is registered once per thread."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def seen(self, thread_id: str, run_id: str) -> bool:
        """True once :meth:`add` has remembered the pair (and it was not evicted or forgotten since)."""
        with self._lock:
            if (thread_id, run_id) in self._data:
                self._data.move_to_end((thread_id, run_id))
                return True
            return False

    def add(self, thread_id: str, run_id: str) -> None:
        """Remember the pair: its registration is stored."""
        with self._lock:
            self._data[(thread_id, run_id)] = None
            self._data.move_to_end((thread_id, run_id))
            if len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def forget(self, thread_id: str) -> None:
        with self._lock:
            for key in [k for k in self._data if k[0] == thread_id]:
                del self._data[key]



_CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
_CLUSTER_TYPES = (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)


class RedisCheckpointSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on Redis or Redis Cluster; sync and async in one class.

    Args:
        client: A sync client (``redis.Redis`` or ``redis.cluster.RedisCluster``) for the sync methods.
        aclient: An asyncio client for the async methods, used on the event loop it was made on (or
            first used on).
        client_factory: Makes the sync client on first use when ``client`` is not given.
        key_prefix: Every key starts with ``<key_prefix>:``.
        ttl: ``{"default_ttl": minutes, "refresh_on_read": bool}`` (see :func:`ttl_settings`), or None.
        serde: The serializer (default: langgraph's ``JsonPlusSerializer``).
        server_label: The server named in error messages.

    The async methods use ``aclient`` on its event loop. On any other loop, or without ``aclient``,
    they run the sync methods in a worker thread (``asyncio.to_thread``): the event loop never blocks
    and no client is left behind per loop. :func:`make_checkpointer` gives a sync client (so
    ``graph.ainvoke`` works on it this way), :func:`async_checkpointer` an asyncio client and a
    factory for a sync one.
    """

    def __init__(
        self,
        client: Any = None,
        *,
        aclient: Any = None,
        client_factory: Callable[[], Any] | None = None,
        key_prefix: str = "xmrt",
        ttl: dict[str, Any] | None = None,
        serde: SerializerProtocol | None = None,
        server_label: str | None = None,
    ) -> None:
        super().__init__(serde=serde)
        if client is None and aclient is None and client_factory is None:
            raise ValueError("RedisCheckpointSaver needs a client, an asyncio client or a client factory")
        self._client = client
        self._client_factory = client_factory
        self._client_lock = threading.Lock()
        self._aclient = aclient
        self._aclient_loop: asyncio.AbstractEventLoop | None = None
        if aclient is not None:
            with contextlib.suppress(RuntimeError):
                self._aclient_loop = asyncio.get_running_loop()
        self.keys = _Keys(key_prefix)
        self.ttl_config = ttl
        self._latest = _LatestCache()
        self._seen_runs = _SeenRuns()
        self._server_label = server_label or "Redis"
        self.cluster = isinstance(client, _CLUSTER_TYPES) or isinstance(aclient, _CLUSTER_TYPES)

    # -- clients -------------------------------------------------------------------------------

    def _sync_client(self) -> Any:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    if self._client_factory is None:
                        raise RuntimeError("this RedisCheckpointSaver has no sync client; use the async methods")
                    self._client = self._client_factory()
                    self.cluster = self.cluster or isinstance(self._client, _CLUSTER_TYPES)
        return self._client

    def _async_client(self) -> Any | None:
        """The asyncio client if it belongs to the running loop; None: use the sync methods in a thread."""
        loop = asyncio.get_running_loop()
        if self._aclient is not None and (self._aclient_loop is None or self._aclient_loop is loop):
            self._aclient_loop = loop
            return self._aclient
        if self._client is None and self._client_factory is None:
            raise RuntimeError("this RedisCheckpointSaver's asyncio client belongs to another event loop, "
                               "and it has no sync client to fall back on")
        return None

    def close(self) -> None:
        """Close the sync client (the caller closes asyncio clients with :meth:`aclose`)."""
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """Close the asyncio client (on its own event loop)."""
        if self._aclient is not None and self._aclient_loop in (None, asyncio.get_running_loop()):
            await self._aclient.aclose()

    def setup(self) -> None:
        """Nothing to create: the saver needs no index or module. Kept for langgraph's saver protocol."""

    async def asetup(self) -> None:
        """Nothing to create (see :meth:`setup`)."""

    # -- TTL -------------------------------------------------------------------------------------

    def _ttl_seconds(self) -> int | None:
        ttl = self.ttl_config
        if ttl and ttl.get("default_ttl"):
            return max(1, int(ttl["default_ttl"] * 60))
        return None

    def _refresh_seconds(self) -> int | None:
        ttl = self.ttl_config
        if ttl and ttl.get("refresh_on_read", True):
            return self._ttl_seconds()
        return None

    # -- versions --------------------------------------------------------------------------------

    def get_next_version(self, current: str | None, channel: None) -> str:
        """``<counter, 32 digits>.<random>``: increasing, and unique across concurrent writers."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    # -- put -------------------------------------------------------------------------------------

    def _put_steps(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata
    ) -> Generator[Any, Any, RunnableConfig]:
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        thread = str(thread_id)
        ns = conf.get("checkpoint_ns", "")
        checkpoint_id = checkpoint["id"]
        parent_id = conf.get("checkpoint_id")
        if parent_id == checkpoint_id:
            parent_id = None
        meta = get_serializable_checkpoint_metadata(config, metadata)
        run_id = meta.get("run_id")
        run_id = str(run_id) if run_id else None
        raw = _encode_record(parent_id, run_id, self.serde.dumps_typed(meta), self.serde.dumps_typed(checkpoint))
        key = self.keys.thread(thread)
        fields: list[Any] = [self.keys.checkpoint_field(ns, checkpoint_id), raw, self.keys.latest_field(ns),
                             checkpoint_id]
        commands: list[tuple[Any, ...]] = []
        ttl = self._ttl_seconds()
        if run_id:  # the thread's own record of its runs: free, it rides in the same HSET
            fields += [self.keys.run_field(run_id), b""]
        new_run = bool(run_id) and not self._seen_runs.seen(thread, run_id)
        if new_run:
            registry = [("SADD", self.keys.run(run_id), thread)]
            if ttl:
                registry.append(("EXPIRE", self.keys.run(run_id), ttl))
            if self.cluster:  # another slot: a hint written first, on its own
                _raise_errors((yield _Cmds(registry, atomic=False)))
            else:
                commands += registry
        commands.append(("HSET", key, *fields))
        if ttl:
            commands.append(("EXPIRE", key, ttl))
        _raise_errors((yield _Cmds(commands, atomic=True)))
        if new_run:  # only once it is stored: a failed save registers the run again next time
            self._seen_runs.add(thread, run_id)
        self._latest.put(thread, ns, checkpoint_id, raw)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}}

    # -- put_writes ------------------------------------------------------------------------------

    def _put_writes_steps(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> Generator[Any, Any, None]:
        if not writes:
            return None
        conf = config["configurable"]
        thread = str(conf["thread_id"])
        ns = conf.get("checkpoint_ns", "")
        key = self.keys.writes(thread, ns, conf["checkpoint_id"])
        regular: list[list[Any]] = []
        commands: list[tuple[Any, ...]] = []
        for position, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, position)
            type_, blob = self.serde.dumps_typed(value)
            if idx >= 0:
                regular.append([idx, channel, type_, blob])
            else:  # errors, interrupts, resumes, scheduled: the latest one wins
                item = _encode_writes(task_id, task_path, [[idx, channel, type_, blob]])
                commands.append(("HSET", key, f"s:{task_id}:{idx}", item))
        if regular:  # a task's regular writes are saved once: a retried task never replaces them
            commands.insert(0, ("HSETNX", key, f"t:{task_id}", _encode_writes(task_id, task_path, regular)))
        ttl = self._ttl_seconds()
        if ttl:
            commands.append(("EXPIRE", key, ttl))
        _raise_errors((yield _Cmds(commands, atomic=True)))
        return None

    # -- reads -----------------------------------------------------------------------------------

    def _refresh(self, *keys: str) -> list[tuple[Any, ...]]:
        seconds = self._refresh_seconds()
        if not seconds:
            return []
        # GT: only keys that already expire get a later expiry; persistent keys stay persistent.
        return [("EXPIRE", key, seconds, "GT") for key in keys]

    def _get_tuple_steps(self, config: RunnableConfig) -> Generator[Any, Any, CheckpointTuple | None]:
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        thread = str(thread_id)
        ns = conf.get("checkpoint_ns", "")
        key = self.keys.thread(thread)
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id:
            wkey = self.keys.writes(thread, ns, checkpoint_id)
            results = yield _Cmds([("HGET", key, self.keys.checkpoint_field(ns, checkpoint_id)), ("HGETALL", wkey),
                                   *self._refresh(key, wkey)])
            _raise_errors(results)
            if results[0] is None:
                return None
            return self._make_tuple(thread_id, ns, checkpoint_id, results[0], results[1])
        latest_field = self.keys.latest_field(ns)
        cached = self._latest.get(thread, ns)
        if cached is not None:
            # One round trip: is the cached checkpoint still the latest, and what writes does it have?
            wkey = self.keys.writes(thread, ns, cached[0])
            results = yield _Cmds([("HGET", key, latest_field), ("HGETALL", wkey), *self._refresh(key, wkey)])
            _raise_errors(results)
            if results[0] is None:
                self._latest.drop(thread)
                return None
            if _text(results[0]) == cached[0]:
                return self._make_tuple(thread_id, ns, cached[0], cached[1], results[1])
            latest_id = _text(results[0])
        else:
            (pointer,) = yield _Cmds([("HGET", key, latest_field)])
            _raise_errors([pointer])
            if pointer is None:
                return None
            latest_id = _text(pointer)
        wkey = self.keys.writes(thread, ns, latest_id)
        results = yield _Cmds([("HGET", key, self.keys.checkpoint_field(ns, latest_id)), ("HGETALL", wkey),
                               *self._refresh(key, wkey)])
        _raise_errors(results)
        if results[0] is None:  # deleted between the two round trips
            return None
        self._latest.put(thread, ns, latest_id, results[0])
        return self._make_tuple(thread_id, ns, latest_id, results[0], results[1])

    def _pending_writes(self, stored: Any) -> list[tuple[str, str, Any]]:
        if not stored:
            return []
        items = []
        for raw in (stored.values() if isinstance(stored, dict) else stored):
            task_id, task_path, writes = ormsgpack.unpackb(raw)
            for idx, channel, type_, blob in writes:
                items.append((writes_sort_key(task_path, task_id, idx), task_id, channel, type_, blob))
        items.sort(key=lambda item: item[0])
        return [(task_id, channel, self.serde.loads_typed((type_, blob))) for _, task_id, channel, type_, blob in items]

    def _make_tuple(self, thread_id: Any, ns: str, checkpoint_id: str, raw: bytes, writes: Any,
                    record: _Record | None = None, metadata: Any = None) -> CheckpointTuple:
        record = record or _decode_record(raw)
        if metadata is None:
            metadata = self.serde.loads_typed(record.metadata)
        return CheckpointTuple(
            config={"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}},
            checkpoint=self.serde.loads_typed(record.checkpoint),
            metadata=metadata,
            parent_config=(
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": record.parent_id}}
                if record.parent_id
                else None
            ),
            pending_writes=self._pending_writes(writes),
        )

    # -- list ------------------------------------------------------------------------------------

    #: Checkpoints fetched per round trip while listing.
    LIST_BATCH = 32

    def _list_steps(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,  # noqa: A002 - langgraph's signature
        before: RunnableConfig | None,
        limit: int | None,
    ) -> Generator[Any, Any, None]:
        if limit is not None and limit <= 0:
            return None
        if config:
            conf = config["configurable"]
            threads: list[Any] = [conf["thread_id"]]
            only_ns = conf.get("checkpoint_ns")  # absent: every namespace; "" the root one
            only_id = get_checkpoint_id(config)
        else:
            keys = yield _Scan(self.keys.thread_pattern())
            threads = sorted({t for t in (self.keys.thread_of(_text(k)) for k in keys) if t is not None})
            only_ns = only_id = None
        before_id = get_checkpoint_id(before) if before else None
        remaining = limit
        for thread_id in threads:
            thread = str(thread_id)
            key = self.keys.thread(thread)
            (fields,) = yield _Cmds([("HKEYS", key)])
            _raise_errors([fields])
            found = []
            for field in fields:
                parsed = self.keys.parse_checkpoint_field(_text(field))
                if parsed is None:
                    continue
                ns, checkpoint_id = parsed
                if only_ns is not None and ns != only_ns:
                    continue
                if only_id and checkpoint_id != only_id:
                    continue
                if before_id and checkpoint_id >= before_id:
                    continue
                found.append((ns, checkpoint_id))
            found.sort(key=lambda item: (item[1], item[0]), reverse=True)  # newest first
            start = 0
            while start < len(found):
                # without a filter, a limit says how many records to fetch
                size = self.LIST_BATCH if filter or remaining is None else max(1, min(self.LIST_BATCH, remaining))
                batch = found[start:start + size]
                start += size
                commands: list[tuple[Any, ...]] = []
                for ns, checkpoint_id in batch:
                    commands += [("HGET", key, self.keys.checkpoint_field(ns, checkpoint_id)),
                                 ("HGETALL", self.keys.writes(thread, ns, checkpoint_id))]
                results = yield _Cmds(commands)
                _raise_errors(results)
                for i, (ns, checkpoint_id) in enumerate(batch):
                    raw, writes = results[2 * i], results[2 * i + 1]
                    if raw is None:  # deleted or expired since the listing
                        continue
                    record = _decode_record(raw)
                    metadata = self.serde.loads_typed(record.metadata)
                    if filter and not all(metadata.get(k) == v for k, v in filter.items()):
                        continue
                    yield _Emit(self._make_tuple(thread_id, ns, checkpoint_id, raw, writes, record, metadata))
                    if remaining is not None:
                        remaining -= 1
                        if remaining <= 0:
                            return None
        return None

    # -- delete, prune, copy ---------------------------------------------------------------------

    def _thread_fields(self, fields: Any) -> tuple[list[tuple[str, str]], list[str]]:
        """The thread hash's checkpoints ``(ns, id)`` and run ids."""
        checkpoints, runs = [], []
        for field in fields or []:
            field = _text(field)
            parsed = self.keys.parse_checkpoint_field(field)
            if parsed is not None:
                checkpoints.append(parsed)
            elif field.startswith("r:"):
                runs.append(field[2:])
        return checkpoints, runs

    def _delete_thread_steps(self, thread_id: str) -> Generator[Any, Any, None]:
        thread = str(thread_id)
        key = self.keys.thread(thread)
        (fields,) = yield _Watch(key, [("HKEYS", key)])
        checkpoints, runs = self._thread_fields(fields)
        doomed = [key, *(self.keys.writes(thread, ns, cid) for ns, cid in checkpoints)]
        _raise_errors((yield _Cmds([("DEL", *doomed)], atomic=True)))
        self._latest.drop(thread)
        self._seen_runs.forget(thread)
        for run_id in runs:  # the registry hints live in other slots
            _raise_errors((yield _Cmds([("SREM", self.keys.run(run_id), thread)])))
        return None

    def _delete_checkpoints_steps(
        self, thread_id: str, choose: Callable[[list[tuple[str, str]], dict[tuple[str, str], _Record]], set]
    ) -> Generator[Any, Any, list[str]]:
        """Delete the checkpoints ``choose(checkpoints, records)`` picks, in one watched transaction.

        Moves each namespace's latest pointer to its highest remaining checkpoint and forgets the runs
        that no remaining checkpoint belongs to. Returns the thread's runs as they were.
        """
        thread = str(thread_id)
        key = self.keys.thread(thread)
        (values,) = yield _Watch(key, [("HGETALL", key)])
        records: dict[tuple[str, str], _Record] = {}
        checkpoints: list[tuple[str, str]] = []
        runs: list[str] = []
        for field, raw in (values or {}).items():
            field = _text(field)
            parsed = self.keys.parse_checkpoint_field(field)
            if parsed is not None:
                checkpoints.append(parsed)
                records[parsed] = _decode_record(raw)
            elif field.startswith("r:"):
                runs.append(field[2:])
        doomed = choose(checkpoints, records)
        if not doomed:
            yield _Cmds([("UNWATCH",)])
            return runs
        kept = [c for c in checkpoints if c not in doomed]
        latest: dict[str, str] = {}
        for ns, cid in kept:
            latest[ns] = max(latest.get(ns, ""), cid)
        kept_runs = {records[c].run_id for c in kept if records[c].run_id}
        gone_runs = [r for r in runs if r not in kept_runs]
        drop_fields = [self.keys.checkpoint_field(ns, cid) for ns, cid in doomed]
        drop_fields += [self.keys.latest_field(ns) for ns in {ns for ns, _ in checkpoints} if ns not in latest]
        drop_fields += [self.keys.run_field(r) for r in gone_runs]
        commands: list[tuple[Any, ...]] = [("HDEL", key, *drop_fields)]
        if latest:
            pointers = [x for ns, cid in latest.items() for x in (self.keys.latest_field(ns), cid)]
            commands.append(("HSET", key, *pointers))
        commands.append(("DEL", *(self.keys.writes(thread, ns, cid) for ns, cid in doomed)))
        _raise_errors((yield _Cmds(commands, atomic=True)))
        self._latest.drop(thread)
        self._seen_runs.forget(thread)
        for run_id in gone_runs:
            _raise_errors((yield _Cmds([("SREM", self.keys.run(run_id), thread)])))
        return runs

    def _prune_steps(self, thread_ids: Sequence[str], strategy: str) -> Generator[Any, Any, None]:
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")
        for thread_id in thread_ids:
            if strategy == "delete":
                yield from self._retrying(lambda t=thread_id: self._delete_thread_steps(t))
                continue

            def older(checkpoints, records):
                latest: dict[str, str] = {}
                for ns, cid in checkpoints:
                    latest[ns] = max(latest.get(ns, ""), cid)
                return {(ns, cid) for ns, cid in checkpoints if cid != latest[ns]}

            yield from self._retrying(lambda t=thread_id, choose=older: self._delete_checkpoints_steps(t, choose))
        return None

    def _delete_for_runs_steps(self, run_ids: Sequence[str]) -> Generator[Any, Any, None]:
        for run_id in {str(r) for r in run_ids}:
            (members,) = yield _Cmds([("SMEMBERS", self.keys.run(run_id))])
            _raise_errors([members])
            for thread in sorted(_text(m) for m in members or ()):

                def of_run(checkpoints, records, run_id=run_id):
                    return {c for c in checkpoints if records[c].run_id == run_id}

                yield from self._retrying(lambda t=thread, choose=of_run: self._delete_checkpoints_steps(t, choose))
            _raise_errors((yield _Cmds([("DEL", self.keys.run(run_id))])))
        return None

    def _copy_thread_steps(self, source: str, target: str) -> Generator[Any, Any, None]:
        source, target = str(source), str(target)
        src = self.keys.thread(source)
        (values,) = yield _Cmds([("HGETALL", src)])
        _raise_errors([values])
        if not values:
            return None
        checkpoints, runs = [], []
        fields: list[Any] = []
        for field, raw in values.items():
            field = _text(field)
            parsed = self.keys.parse_checkpoint_field(field)
            if parsed is not None:
                checkpoints.append(parsed)
                fields += [field, raw]
            elif field.startswith("r:"):
                runs.append(field[2:])
                fields += [field, b""]
        writes = yield _Cmds([("HGETALL", self.keys.writes(source, ns, cid)) for ns, cid in checkpoints])
        _raise_errors(writes)
        dst = self.keys.thread(target)
        ttl = self._ttl_seconds()
        if self.cluster:
            for run_id in runs:
                _raise_errors((yield _Cmds([("SADD", self.keys.run(run_id), target)])))
        (existing,) = yield _Watch(dst, [("HGETALL", dst)])
        latest: dict[str, str] = {}
        for field, value in (existing or {}).items():
            field = _text(field)
            if field.startswith("l:"):
                latest[_unescape_ns(field[2:])] = _text(value)
        for ns, cid in checkpoints:
            latest[ns] = max(latest.get(ns, ""), cid)
        fields += [x for ns, cid in latest.items() for x in (self.keys.latest_field(ns), cid)]
        commands: list[tuple[Any, ...]] = [("HSET", dst, *fields)]
        for (ns, cid), stored in zip(checkpoints, writes, strict=True):
            if stored:
                wkey = self.keys.writes(target, ns, cid)
                commands.append(("HSET", wkey, *[x for item in stored.items() for x in item]))
                if ttl:
                    commands.append(("EXPIRE", wkey, ttl))
        if ttl:
            commands.append(("EXPIRE", dst, ttl))
        if not self.cluster:
            commands += [("SADD", self.keys.run(run_id), target) for run_id in runs]
        _raise_errors((yield _Cmds(commands, atomic=True)))
        self._latest.drop(target)
        return None

    @staticmethod
    def _retrying(make: Callable[[], Generator[Any, Any, Any]]) -> Generator[Any, Any, Any]:
        """Run a watched operation again (from its first read) while its thread changes under it."""
        for _ in range(WATCH_ATTEMPTS):
            try:
                return (yield from make())
            except _Watched:
                continue
        raise redis.WatchError(f"the thread kept changing during {WATCH_ATTEMPTS} attempts; try again")

    # -- errors ----------------------------------------------------------------------------------

    def _store_error(self, exc: Exception, what: str, thread: Any) -> CheckpointStoreError:
        reason = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
        return CheckpointStoreError(
            f"{self._server_label} failed while {what} for thread {thread!r}: {reason}. The thread's saved "
            "history is intact (each checkpoint is saved atomically); resume it once Redis is back."
        )

    # -- sync I/O --------------------------------------------------------------------------------

    def _execute(self, client: Any, request: Any, watched: list[Any]) -> list[Any]:
        """Run one request; ``watched`` holds the pipeline of a WATCH between two requests."""
        if isinstance(request, _Scan):
            return list(client.scan_iter(match=request.match, count=1000))
        if isinstance(request, _Watch):
            pipe = watched[0] = client.pipeline(transaction=True)
            pipe.watch(request.key)
            return [pipe.execute_command(*c) for c in request.reads]
        if watched[0] is not None:  # the transaction of a watched operation
            pipe, watched[0] = watched[0], None
            try:
                if request.commands == [("UNWATCH",)]:
                    return [True]
                pipe.multi()
                for command in request.commands:
                    pipe.execute_command(*command)
                try:
                    return pipe.execute()
                except redis.WatchError:
                    raise _Watched() from None
            finally:
                pipe.reset()
        if len(request.commands) == 1:
            try:
                return [client.execute_command(*request.commands[0])]
            except redis.ResponseError as exc:
                return [exc]
        pipe = client.pipeline(transaction=request.atomic)
        for command in request.commands:
            pipe.execute_command(*command)
        return pipe.execute(raise_on_error=request.atomic)

    def _iterate(
        self, steps: Generator[Any, Any, Any], what: str, thread: Any
    ) -> Generator[CheckpointTuple, None, Any]:
        """Drive an operation with the sync client: yield what it emits, return its result."""
        client = self._sync_client()
        watched: list[Any] = [None]
        try:
            request = next(steps)
            while True:
                if isinstance(request, _Emit):
                    yield request.item
                    request = steps.send(None)
                    continue
                try:
                    results = self._execute(client, request, watched)
                except _Watched:
                    request = steps.throw(_Watched())
                    continue
                except _CONNECTION_ERRORS as exc:
                    raise self._store_error(exc, what, thread) from exc
                request = steps.send(results)
        except StopIteration as stop:
            return stop.value
        finally:
            if watched[0] is not None:
                watched[0].reset()

    def _drive(self, steps: Generator[Any, Any, Any], what: str, thread: Any) -> Any:
        """Drive an operation that emits nothing and return its result."""
        iterator = self._iterate(steps, what, thread)
        while True:
            try:
                next(iterator)
            except StopIteration as stop:
                return stop.value

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        """Save a checkpoint and move the namespace's latest pointer to it, atomically."""
        return self._drive(self._put_steps(config, checkpoint, metadata), "saving a checkpoint",
                           config["configurable"]["thread_id"])

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                   task_path: str = "") -> None:
        """Save a task's writes for a checkpoint, atomically."""
        self._drive(self._put_writes_steps(config, writes, task_id, task_path), "saving task writes",
                    config["configurable"]["thread_id"])

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Load a checkpoint (the namespace's latest when the config names none) with its pending writes."""
        return self._drive(self._get_tuple_steps(config), "loading a checkpoint", config["configurable"]["thread_id"])

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,  # noqa: A002
             before: RunnableConfig | None = None, limit: int | None = None) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first: of one thread (one namespace if the config names one), or of all.

        ``filter`` keeps checkpoints whose metadata has every given key with the given value.
        """
        thread = (config or {}).get("configurable", {}).get("thread_id", "*")
        yield from self._iterate(self._list_steps(config, filter, before, limit), "listing checkpoints", thread)

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint and write of a thread, atomically."""
        self._drive(self._retrying(lambda: self._delete_thread_steps(thread_id)), "deleting a thread", thread_id)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) that the given runs saved, in every thread."""
        self._drive(self._delete_for_runs_steps(run_ids), "deleting runs' checkpoints", "*")

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of a thread into another (one transaction on the target)."""
        steps = self._retrying(lambda: self._copy_thread_steps(source_thread_id, target_thread_id))
        self._drive(steps, "copying a thread", source_thread_id)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep only each namespace's latest checkpoint (``keep_latest``), or delete the threads (``delete``).

        Not safe for graphs that use ``DeltaChannel`` (see ``BaseCheckpointSaver.prune``).
        """
        self._drive(self._prune_steps(thread_ids, strategy), "pruning", list(thread_ids))

    # -- async I/O -------------------------------------------------------------------------------

    async def _aexecute(self, client: Any, request: Any, watched: list[Any]) -> list[Any]:
        """The asyncio twin of :meth:`_execute`."""
        if isinstance(request, _Scan):
            return [k async for k in client.scan_iter(match=request.match, count=1000)]
        if isinstance(request, _Watch):
            pipe = watched[0] = client.pipeline(transaction=True)
            await pipe.watch(request.key)
            return [await pipe.execute_command(*c) for c in request.reads]
        if watched[0] is not None:
            pipe, watched[0] = watched[0], None
            try:
                if request.commands == [("UNWATCH",)]:
                    return [True]
                pipe.multi()
                for command in request.commands:
                    pipe.execute_command(*command)
                try:
                    return await pipe.execute()
                except redis.WatchError:
                    raise _Watched() from None
            finally:
                await pipe.reset()
        if len(request.commands) == 1:
            try:
                return [await client.execute_command(*request.commands[0])]
            except redis.ResponseError as exc:
                return [exc]
        pipe = client.pipeline(transaction=request.atomic)
        for command in request.commands:
            pipe.execute_command(*command)
        return await pipe.execute(raise_on_error=request.atomic)

    async def _aiterate(self, client: Any, steps: Generator[Any, Any, Any], what: str, thread: Any,
                        result: list[Any]) -> AsyncIterator[CheckpointTuple]:
        """Drive an operation with the asyncio client: yield what it emits; its result goes in ``result``."""
        watched: list[Any] = [None]
        try:
            request = next(steps)
            while True:
                if isinstance(request, _Emit):
                    yield request.item
                    request = steps.send(None)
                    continue
                try:
                    results = await self._aexecute(client, request, watched)
                except _Watched:
                    request = steps.throw(_Watched())
                    continue
                except _CONNECTION_ERRORS as exc:
                    raise self._store_error(exc, what, thread) from exc
                request = steps.send(results)
        except StopIteration as stop:
            result.append(stop.value)
        finally:
            if watched[0] is not None:
                await watched[0].reset()

    async def _adrive(self, steps: Generator[Any, Any, Any], what: str, thread: Any) -> Any:
        """Drive an operation that emits nothing and return its result (in a thread without our loop's client)."""
        client = self._async_client()
        if client is None:
            return await asyncio.to_thread(self._drive, steps, what, thread)
        result: list[Any] = []
        async for _ in self._aiterate(client, steps, what, thread, result):
            pass
        return result[0] if result else None

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
                   new_versions: ChannelVersions) -> RunnableConfig:
        """Async :meth:`put`. A cancelled save writes nothing or everything: it is one command or transaction."""
        return await self._adrive(self._put_steps(config, checkpoint, metadata), "saving a checkpoint",
                                  config["configurable"]["thread_id"])

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                          task_path: str = "") -> None:
        """Async :meth:`put_writes`."""
        await self._adrive(self._put_writes_steps(config, writes, task_id, task_path), "saving task writes",
                           config["configurable"]["thread_id"])

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async :meth:`get_tuple`."""
        return await self._adrive(self._get_tuple_steps(config), "loading a checkpoint",
                                  config["configurable"]["thread_id"])

    async def alist(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,  # noqa: A002
                    before: RunnableConfig | None = None, limit: int | None = None) -> AsyncIterator[CheckpointTuple]:
        """Async :meth:`list`."""
        thread = (config or {}).get("configurable", {}).get("thread_id", "*")
        steps = self._list_steps(config, filter, before, limit)
        client = self._async_client()
        if client is None:
            items = await asyncio.to_thread(lambda: list(self._iterate(steps, "listing checkpoints", thread)))
            for item in items:
                yield item
            return
        async for item in self._aiterate(client, steps, "listing checkpoints", thread, []):
            yield item

    async def adelete_thread(self, thread_id: str) -> None:
        """Async :meth:`delete_thread`."""
        await self._adrive(self._retrying(lambda: self._delete_thread_steps(thread_id)), "deleting a thread",
                           thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async :meth:`delete_for_runs`."""
        await self._adrive(self._delete_for_runs_steps(run_ids), "deleting runs' checkpoints", "*")

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async :meth:`copy_thread`."""
        steps = self._retrying(lambda: self._copy_thread_steps(source_thread_id, target_thread_id))
        await self._adrive(steps, "copying a thread", source_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Async :meth:`prune`."""
        await self._adrive(self._prune_steps(thread_ids, strategy), "pruning", list(thread_ids))


# --------------------------------------------------------------------------------------------
# Factories


def is_cluster(client: redis.Redis) -> bool:
    """True when the server ``client`` talks to runs in cluster mode."""
    try:
        return str(client.info("cluster").get("cluster_enabled", 0)) == "1"
    except redis.ResponseError:
        return False


def sync_client(url: str, cluster: bool) -> Any:
    """A sync client for ``url``: ``RedisCluster`` on a cluster, else ``Redis``, with :func:`client_options`."""
    if cluster:
        return redis.cluster.RedisCluster.from_url(url, **client_options())
    return redis.Redis.from_url(url, **client_options())


def async_client(url: str, cluster: bool) -> Any:
    """The asyncio twin of :func:`sync_client`, bound to the running event loop on first use."""
    if cluster:
        return redis.asyncio.cluster.RedisCluster.from_url(url, **client_options(asyncio_client=True))
    return redis.asyncio.Redis.from_url(url, **client_options(asyncio_client=True))


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
        sync_client(url, cluster),
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
        aclient=async_client(url, cluster),
        client_factory=lambda: sync_client(url, cluster),
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


#: Kept for callers of the previous module: the error type of an unreachable server.
__all__ += ["RedisSetupError"]
