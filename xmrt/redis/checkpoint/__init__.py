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

**Modules.** :mod:`.format` (keys, records, the request protocol), :mod:`.steps` (each operation as requests),
:mod:`.saver` (:class:`RedisCheckpointSaver`: clients, sync and async drivers) and :mod:`.factories`.
"""

from __future__ import annotations

from xmrt.redis.checkpoint.factories import (
    async_checkpointer,
    is_cluster,
    legacy_checkpoints,
    make_checkpointer,
)
from xmrt.redis.checkpoint.format import CheckpointStoreError, ttl_settings
from xmrt.redis.checkpoint.saver import RedisCheckpointSaver
from xmrt.redis.clients import client_options  # one policy for every client
from xmrt.redis.server import RedisSetupError  # the error type of an unreachable server, for callers of this module

__all__ = [
    "CheckpointStoreError",
    "RedisCheckpointSaver",
    "RedisSetupError",
    "async_checkpointer",
    "client_options",
    "is_cluster",
    "legacy_checkpoints",
    "make_checkpointer",
    "ttl_settings",
]
