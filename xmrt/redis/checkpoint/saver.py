"""RedisCheckpointSaver: the clients, and the sync and async drivers of its operations (:mod:`.steps`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from xmrt.redis.checkpoint.format import (
    _CLUSTER_TYPES,
    _RUN_ERRORS,
    CheckpointStoreError,
    _Emit,
    _Keys,
    _LatestCache,
    _queued,
    _Run,
    _Scan,
    _SeenRuns,
    _Watch,
    _Watched,
)
from xmrt.redis.checkpoint.maintenance import _MaintenanceSteps
from xmrt.redis.checkpoint.steps import _Steps

log = logging.getLogger(__name__)


class RedisCheckpointSaver(_Steps, _MaintenanceSteps, BaseCheckpointSaver[str]):
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

    # -- errors ----------------------------------------------------------------------------------

    def _store_error(self, exc: Exception, what: str, thread: Any) -> CheckpointStoreError:
        reason = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
        return CheckpointStoreError(
            f"{self._server_label} failed while {what} for thread {thread!r}: {reason}. The thread's saved "
            "history is intact (each checkpoint is saved atomically); resume it once Redis is back."
        )

    def _run(self, steps: Generator[Any, Any, Any], what: str, thread: Any) -> _Run:
        """An operation to drive; a connection error fails it with a :class:`CheckpointStoreError` on ``thread``."""
        return _Run(steps, lambda exc: self._store_error(exc, what, thread))

    # -- sync I/O --------------------------------------------------------------------------------

    def _execute(self, client: Any, request: Any, run: _Run) -> list[Any]:
        """Run one request; ``run.watched`` holds the pipeline of a WATCH between two requests."""
        if isinstance(request, _Scan):
            return list(client.scan_iter(match=request.match, count=1000))
        if isinstance(request, _Watch):
            pipe = run.watched = client.pipeline(transaction=True)
            pipe.watch(request.key)
            return [pipe.execute_command(*c) for c in request.reads]
        pipe, ended = run.transaction(request)
        if pipe is not None:  # the transaction of a watched operation
            try:
                return ended if ended is not None else pipe.execute()
            except redis.WatchError:
                raise _Watched() from None
            finally:
                pipe.reset()
        if len(request.commands) == 1:
            try:
                return [client.execute_command(*request.commands[0])]
            except redis.ResponseError as exc:
                return [exc]
        return _queued(client.pipeline(transaction=request.atomic), request.commands).execute(
            raise_on_error=request.atomic)

    def _attempt(self, client: Any, request: Any, run: _Run) -> tuple[list[Any] | None, Exception | None]:
        try:
            return self._execute(client, request, run), None
        except _RUN_ERRORS as exc:
            return None, exc

    def _iterate(
        self, steps: Generator[Any, Any, Any], what: str, thread: Any
    ) -> Generator[CheckpointTuple, None, Any]:
        """Drive an operation with the sync client: yield what it emits, return its result."""
        client = self._sync_client()
        with self._run(steps, what, thread) as run:
            for request in run:
                if isinstance(request, _Emit):
                    yield request.item
                else:
                    run.reply(*self._attempt(client, request, run))
            return run.result

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

    async def _aexecute(self, client: Any, request: Any, run: _Run) -> list[Any]:
        """The asyncio twin of :meth:`_execute`."""
        if isinstance(request, _Scan):
            return [k async for k in client.scan_iter(match=request.match, count=1000)]
        if isinstance(request, _Watch):
            pipe = run.watched = client.pipeline(transaction=True)
            await pipe.watch(request.key)
            return [await pipe.execute_command(*c) for c in request.reads]
        pipe, ended = run.transaction(request)
        if pipe is not None:
            try:
                return ended if ended is not None else await pipe.execute()
            except redis.WatchError:
                raise _Watched() from None
            finally:
                await pipe.reset()
        if len(request.commands) == 1:
            try:
                return [await client.execute_command(*request.commands[0])]
            except redis.ResponseError as exc:
                return [exc]
        return await _queued(client.pipeline(transaction=request.atomic), request.commands).execute(
            raise_on_error=request.atomic)

    async def _aattempt(self, client: Any, request: Any, run: _Run) -> tuple[list[Any] | None, Exception | None]:
        try:
            return await self._aexecute(client, request, run), None
        except _RUN_ERRORS as exc:
            return None, exc

    async def _aiterate(self, client: Any, steps: Generator[Any, Any, Any], what: str, thread: Any,
                        result: list[Any]) -> AsyncIterator[CheckpointTuple]:
        """Drive an operation with the asyncio client: yield what it emits; its result goes in ``result``."""
        async with self._run(steps, what, thread) as run:
            for request in run:
                if isinstance(request, _Emit):
                    yield request.item
                else:
                    run.reply(*await self._aattempt(client, request, run))
            result.append(run.result)

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
