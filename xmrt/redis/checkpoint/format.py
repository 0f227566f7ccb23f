"""The checkpointer's format and protocol: key layout, record encoding, the commands a step yields, caches.

Also the part of the sync and async drivers that does no I/O: :class:`_Run`.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import ormsgpack
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from langgraph.checkpoint.base import (
    CheckpointTuple,
)

from xmrt.errors import XmrtError

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


# -- driving an operation --------------------------------------------------------------------------------------

#: What a request may fail with that the driver hands back to the operation (a lost WATCH) or reports.
_RUN_ERRORS = (_Watched, *_CONNECTION_ERRORS)


def _queued(pipe: Any, commands: Sequence[tuple[Any, ...]]) -> Any:
    """``pipe`` with ``commands`` queued (a sync and an asyncio pipeline queue alike)."""
    for command in commands:
        pipe.execute_command(*command)
    return pipe


class _Run:
    """One operation being driven: what the sync and the async driver share (no I/O but closing a WATCH).

    Iterating gives the operation's requests. After each one the driver runs, :meth:`reply` hands back its
    outcome: the results; a lost WATCH, which the operation retries; a connection error, which ``fail`` turns
    into the error to raise (a :class:`CheckpointStoreError`). An emitted item needs no reply. ``result`` holds
    the operation's value once the iteration ends. The sync driver runs it in ``with``, the async one in
    ``async with``: on the way out, however the operation ended, a WATCH it left open is reset.
    """

    def __init__(self, steps: Iterator[Any], fail: Callable[[Exception], Exception]) -> None:
        self.steps = steps
        self.fail = fail
        self.watched: Any = None  # the pipeline of a WATCH between two requests
        self.result: Any = None
        self._next: Callable[[], Any] = lambda: next(steps)

    def __iter__(self) -> Iterator[Any]:
        while True:
            step, self._next = self._next, lambda: self.steps.send(None)
            try:
                request = step()
            except StopIteration as stop:
                self.result = stop.value
                return
            yield request

    def __enter__(self) -> _Run:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.watched is not None:
            self.watched.reset()

    async def __aenter__(self) -> _Run:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.watched is not None:
            await self.watched.reset()

    def reply(self, results: list[Any] | None, error: Exception | None) -> None:
        """The outcome of the last request: ``results``, or the ``error`` it failed with."""
        if isinstance(error, _Watched):
            self._next = lambda: self.steps.throw(_Watched())
        elif error is not None:
            raise self.fail(error) from error
        else:
            self._next = lambda: self.steps.send(results)

    def transaction(self, request: Any) -> tuple[Any, list[Any] | None]:
        """After a WATCH, its pipeline with ``request`` queued in MULTI.

        Returns:
            ``(pipeline, None)``; ``(pipeline, [True])`` when the request only ends the watch (``UNWATCH``);
            ``(None, None)`` when nothing is watched.
        """
        pipe, self.watched = self.watched, None
        if pipe is None:
            return None, None
        if request.commands == [("UNWATCH",)]:
            return pipe, [True]
        try:
            pipe.multi()
            _queued(pipe, request.commands)
        except BaseException:
            self.watched = pipe  # the driver still resets it
            raise
        return pipe, None
