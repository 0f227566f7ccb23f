"""The saver's saves and reads as request generators, shared by its sync and async methods."""

from __future__ import annotations

import random
from collections.abc import Generator, Sequence
from typing import Any

import ormsgpack
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)

from xmrt.redis.checkpoint.format import (
    _Cmds,
    _decode_record,
    _Emit,
    _encode_record,
    _encode_writes,
    _raise_errors,
    _Record,
    _Scan,
    _text,
)


class _Steps:
    """The saves and reads, as generators of requests (:mod:`.format`).

    The sync and async drivers of :class:`~xmrt.redis.checkpoint.saver.RedisCheckpointSaver` run them.
    """

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
