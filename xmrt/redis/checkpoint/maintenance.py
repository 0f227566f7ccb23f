"""The saver's deletes, prunes and copies as request generators, shared by its sync and async methods."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from xmrt.redis.checkpoint.format import (
    WATCH_ATTEMPTS,
    _Cmds,
    _decode_record,
    _raise_errors,
    _Record,
    _text,
    _unescape_ns,
    _Watch,
    _Watched,
)


class _MaintenanceSteps:
    """Deleting threads, checkpoints and runs, pruning, copying a thread, as generators of requests.

    The sync and async drivers of :class:`~xmrt.redis.checkpoint.saver.RedisCheckpointSaver` run them.
    """

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
