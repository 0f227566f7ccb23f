"""Move threads saved in the previous, library-compatible format into :mod:`xmrt.redis.checkpoint`'s format.

Until issue 13 the project's saver wrote langgraph-checkpoint-redis 0.5's layout (``P`` is
``XMRT_KEY_PREFIX``)::

    P:checkpoint:<thread>:<ns>:<checkpoint_id>                 RedisJSON document
    P:checkpoint_latest:<thread>:<ns>                          string: key of the latest document
    P:checkpoint_write:<thread>:<ns>:<id>:<task>:<idx>         RedisJSON document: one write
    write_keys_zset:<thread>:<ns>:<checkpoint_id>              sorted set: a checkpoint's write keys
    RediSearch indexes "P:checkpoint" and "P:checkpoint_write"

(an empty thread id or namespace is stored as ``__empty__``). :func:`migrate_checkpoints` reads
each legacy checkpoint through the library's public ``RedisSaver.get_tuple`` (its own revival of
the stored values) and each write from its document with the library saver's ``serde``, then saves
them with the new saver's public ``put`` / ``put_writes``, oldest first, so each namespace's latest
pointer ends on its newest checkpoint. Saves are idempotent: running it again changes nothing.
With ``delete_legacy`` the legacy keys and indexes are removed once everything is copied.

``xmrt migrate checkpoints`` runs it (``--dry-run`` only counts).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from xmrt.config import Config
from xmrt.redis.clients import new_client

log = logging.getLogger(__name__)

#: The library's stand-in for an empty thread id, namespace or checkpoint id.
_EMPTY = "__empty__"
_EMPTY_ID = "00000000-0000-0000-0000-000000000000"


def _real(value: str) -> str:
    return "" if value in (_EMPTY, _EMPTY_ID) else value


def _blob(value: Any) -> bytes:
    """A write's stored blob: base64 text of the serialized bytes (else the text itself)."""
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return value.encode()
    return value


@dataclass
class MigrationReport:
    """What a migration found and did."""

    threads: int = 0
    checkpoints: int = 0
    writes: int = 0
    legacy_keys: int = 0
    deleted_keys: int = 0
    dropped_indexes: list[str] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return dict(self.__dict__)


def _scan(client: redis.Redis, pattern: str, kind: str | None = None) -> list[bytes]:
    return list(client.scan_iter(match=pattern, count=1000, _type=kind))


def migrate_checkpoints(config: Config, *, delete_legacy: bool = False, dry_run: bool = False,
                        client: redis.Redis | None = None) -> MigrationReport:
    """Copy every legacy thread under ``config.key_prefix`` into the new format.

    Args:
        config: Settings: the Redis URL and the key prefix the legacy threads were saved under.
        delete_legacy: Remove the legacy keys and indexes after copying.
        dry_run: Only count what would be migrated.
        client: A client for the server (default: one of its own, closed at the end; see below).

    Returns:
        The counts.
    """
    from langgraph.checkpoint.redis import RedisSaver

    from xmrt.redis.checkpoint import make_checkpointer

    # Not the process's shared client: the library's saver registers RedisJSON reply callbacks on the client it is
    # given (JSON.GET then returns parsed objects), which the shared client's other users do not expect. The default
    # policy (retries, 30 s replies) lets a long scan and copy ride out a blip.
    own = client is None
    client = client or new_client(config.redis_url)
    prefix = config.key_prefix
    report = MigrationReport(dry_run=dry_run)
    try:
        docs = _scan(client, f"{prefix}:checkpoint:*", "ReJSON-RL")
        write_docs = _scan(client, f"{prefix}:checkpoint_write:*", "ReJSON-RL")
        pointers = _scan(client, f"{prefix}:checkpoint_latest:*")
        found: dict[tuple[str, str], list[tuple[str, bytes]]] = defaultdict(list)
        safe_ids: dict[tuple[str, str, str], tuple[str, str, str]] = {}
        for key in docs:
            raw = client.execute_command("JSON.GET", key, "$.thread_id", "$.checkpoint_ns", "$.checkpoint_id")
            fields = orjson.loads(raw)
            safe = (fields["$.thread_id"][0], fields["$.checkpoint_ns"][0], fields["$.checkpoint_id"][0])
            thread, ns, cid = (_real(v) for v in safe)
            found[(thread, ns)].append((cid, key))
            safe_ids[(thread, ns, cid)] = safe
        writes: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        for key in write_docs:
            doc = orjson.loads(client.execute_command("JSON.GET", key))
            doc = doc[0] if isinstance(doc, list) else doc
            writes[(_real(doc["thread_id"]), _real(doc["checkpoint_ns"]), _real(doc["checkpoint_id"]))].append(doc)
        registries = [f"write_keys_zset:{s[0]}:{s[1]}:{s[2]}" for s in safe_ids.values()]
        report.threads = len({thread for thread, _ in found})
        report.checkpoints = len(docs)
        report.writes = len(write_docs)
        report.legacy_keys = len(docs) + len(write_docs) + len(pointers) + sum(client.exists(k) for k in registries)
        if dry_run or not docs:
            return report

        legacy = RedisSaver(redis_client=client, checkpoint_prefix=f"{prefix}:checkpoint",
                            checkpoint_write_prefix=f"{prefix}:checkpoint_write")
        legacy.setup()
        saver = make_checkpointer(config)  # the configured TTL applies to migrated threads too
        try:
            for (thread, ns), items in found.items():
                for cid, _key in sorted(items):
                    tup = legacy.get_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ns,
                                                             "checkpoint_id": cid}})
                    if tup is None:  # expired or deleted meanwhile
                        continue
                    parent = (tup.parent_config or {}).get("configurable", {}).get("checkpoint_id")
                    conf = {"configurable": {"thread_id": thread, "checkpoint_ns": ns,
                                             **({"checkpoint_id": parent} if parent else {})}}
                    stored = saver.put(conf, tup.checkpoint, tup.metadata, {})
                    _copy_writes(saver, legacy, stored, writes.get((thread, ns, cid), []))
        finally:
            saver.close()
        if delete_legacy:
            doomed = [*docs, *write_docs, *pointers, *registries]
            for start in range(0, len(doomed), 500):
                report.deleted_keys += client.delete(*doomed[start:start + 500])
            for index in (f"{prefix}:checkpoint", f"{prefix}:checkpoint_write"):
                try:
                    client.execute_command("FT.DROPINDEX", index)
                    report.dropped_indexes.append(index)
                except redis.ResponseError as exc:  # no such index, or no RediSearch
                    log.debug("FT.DROPINDEX %s: %s", index, exc)
        return report
    finally:
        if own:
            client.close()


def _copy_writes(saver: Any, legacy: Any, config: dict, docs: list[dict[str, Any]]) -> None:
    """Save one checkpoint's legacy writes: each task's regular writes together, special ones alone."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in docs:
        by_task[doc["task_id"]].append(doc)
    for task_id, items in by_task.items():
        items.sort(key=lambda d: int(d["idx"]))
        task_path = items[0].get("task_path", "") or ""
        regular = [(d["channel"], legacy.serde.loads_typed((d["type"], _blob(d["blob"])))) for d in items
                   if int(d["idx"]) >= 0]
        if regular:
            saver.put_writes(config, regular, task_id, task_path)
        for d in items:
            if int(d["idx"]) < 0:
                value = legacy.serde.loads_typed((d["type"], _blob(d["blob"])))
                saver.put_writes(config, [(d["channel"], value)], task_id, d.get("task_path", "") or "")
