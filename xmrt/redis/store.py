"""The long-term memory store: LangGraph's ``BaseStore`` on Redis (RedisJSON + RediSearch), in a format of our own.

It answers like LangGraph's reference ``InMemoryStore`` (the behaviour tests run both side by side):

* **Namespaces are exact.** Each label is stored hex-encoded, and every prefix of a namespace is a RediSearch
  TAG, so a search under ``("bob",)`` matches ``("bob", ...)`` and never ``("bobby", ...)``; any label that
  ``BaseStore`` accepts (unicode, punctuation, one character, stop words) round-trips.
* **Filters** take values and the operators ``$eq $ne $gt $gte $lt $lte``, nested objects and lists, checked
  on the stored value after the namespace query (as InMemoryStore does).
* **Search** without a query lists items in insertion order; with a query it ranks by the cosine similarity of
  the best-matching embedded field (max pooling), then fills up with the items that have no embedding
  (``index=False`` or no text), unscored, exactly like InMemoryStore.
* **list_namespaces** takes prefix and suffix conditions (``*`` matches any label), ``max_depth``, ``limit`` and
  ``offset``, over the namespaces that hold at least one live item.
* **TTL** in minutes per item (``supports_ttl``); with a TTL config whose ``refresh_on_read`` is on (the
  default of a config), reads push the expiry back. Redis expires the item and its vectors together. A read
  racing an expiry sees the item or nothing, never an error.

Every key lives under ``XMRT_KEY_PREFIX``::

    {prefix}:store:item:{id}       JSON: ns, ns_path (TAGs), ns_key, key, value, created_at, updated_at, order,
                                   nvec (how many vectors), ttl (minutes)
    {prefix}:store:vec:{id}:{n}    HASH: one embedded field of an item (ns_path TAGs, FLOAT32 vector)
    {prefix}:store:seq             insertion counter
    {prefix}:store:ns_seq          HASH: the insertion number of each namespace's first item (listing order)
    indexes {prefix}:store:items (JSON) and {prefix}:store:vectors (HASH)

Sync and async share one implementation: each operation is a generator that yields the Redis commands (or the
texts to embed) it needs, and :meth:`RedisStore.batch` / :meth:`RedisStore.abatch` run it with a sync or an
asyncio client. The sync methods never bridge to an event loop, so sync graph nodes on a server's worker
threads never wait on each other (the pool deadlock of a sync bridge over an async store).

The format (labels, keys, filters, the requests an operation yields, reply parsing) is in
:mod:`xmrt.redis.store_format`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Iterable, Sequence
from typing import Any, Literal

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)

from xmrt.redis.store_format import (  # noqa: F401 - the label and key helpers are imported from here too
    MAX_SCAN,
    ORDER_SPAN,
    PAGE,
    Commands,
    Embed,
    _aggregate_rows,
    _item_from_doc,
    _namespace_matches,
    _search_docs,
    _search_fields,
    _vector_bytes,
    decode_label,
    encode_label,
    item_id,
    matches,
    ns_from_key,
    ns_key,
    ns_paths,
    setup_indexes,
)


class RedisStore(BaseStore):
    """LangGraph's ``BaseStore`` on Redis with vector search and TTL (see the module docstring).

    Args:
        client: A sync ``redis.Redis`` (needed for the sync methods).
        aclient: A ``redis.asyncio.Redis``, or a callable returning the one of the running event loop
            (needed for the async methods).
        prefix: Key prefix (``XMRT_KEY_PREFIX``).
        index: ``{"dims", "embed", "fields"}``: what to embed; None disables semantic search.
        ttl: ``{"default_ttl": minutes, "refresh_on_read": bool}``.
    """

    supports_ttl = True

    def __init__(self, client: Any = None, aclient: Any = None, *, prefix: str = "xmrt",
                 index: IndexConfig | None = None, ttl: TTLConfig | None = None) -> None:
        self.client = client
        self.aclient = aclient
        self.prefix = prefix
        self.ttl_config = ttl
        self.index_config = dict(index) if index else None
        self.embeddings = ensure_embeddings(index.get("embed")) if index else None
        self.dims = int(index["dims"]) if index else 0
        fields = (index or {}).get("fields") or ["$"]
        self._fields = [(f, tokenize_path(f) if f != "$" else f) for f in fields]
        self.k_seq = f"{prefix}:store:seq"
        self.k_ns_seq = f"{prefix}:store:ns_seq"
        self.items_index = f"{prefix}:store:items"
        self.vectors_index = f"{prefix}:store:vectors"

    # -- keys --------------------------------------------------------------------------------------------
    def _item_key(self, iid: str) -> str:
        return f"{self.prefix}:store:item:{iid}"

    def _vec_key(self, iid: str, n: int) -> str:
        return f"{self.prefix}:store:vec:{iid}:{n}"

    # -- setup -------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Create the indexes (idempotent)."""
        self._run_sync(setup_indexes(self.prefix, self.items_index, self.vectors_index, self.dims))

    async def asetup(self) -> None:
        """Create the indexes (idempotent)."""
        await self._run_async(setup_indexes(self.prefix, self.items_index, self.vectors_index, self.dims))

    # -- drivers -----------------------------------------------------------------------------------------
    def _run_sync(self, gen: Generator[Any, Any, Any]) -> Any:
        if self.client is None:
            raise RuntimeError("this store has no sync Redis client; use the async methods")
        try:
            request = next(gen)
            while True:
                if isinstance(request, Embed):
                    if request.query:
                        reply = [self.embeddings.embed_query(request.texts[0])]
                    else:
                        reply = self.embeddings.embed_documents(request.texts)
                else:
                    pipe = self.client.pipeline(transaction=request.atomic)
                    for command in request.commands:
                        pipe.execute_command(*command)
                    reply = pipe.execute(raise_on_error=not request.tolerate)
                request = gen.send(reply)
        except StopIteration as stop:
            return stop.value

    async def _run_async(self, gen: Generator[Any, Any, Any]) -> Any:
        if self.aclient is None:
            raise RuntimeError("this store has no asyncio Redis client; use the sync methods")
        aclient = self.aclient() if callable(self.aclient) and not hasattr(self.aclient, "pipeline") else self.aclient
        try:
            request = next(gen)
            while True:
                if isinstance(request, Embed):
                    if request.query:
                        reply = [await self.embeddings.aembed_query(request.texts[0])]
                    else:
                        reply = await self.embeddings.aembed_documents(request.texts)
                else:
                    pipe = aclient.pipeline(transaction=request.atomic)
                    for command in request.commands:
                        pipe.execute_command(*command)
                    reply = await pipe.execute(raise_on_error=not request.tolerate)
                request = gen.send(reply)
        except StopIteration as stop:
            return stop.value

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run the operations in order (sync Redis client)."""
        return [self._run_sync(self._op(op)) for op in ops]

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Run the operations in order (asyncio Redis client)."""
        return [await self._run_async(self._op(op)) for op in ops]

    def _op(self, op: Op) -> Generator[Any, Any, Result]:
        validate_op_namespace(op)
        if isinstance(op, GetOp):
            return (yield from self._get(op))
        if isinstance(op, PutOp):
            return (yield from self._put(op))
        if isinstance(op, SearchOp):
            return (yield from self._search(op))
        if isinstance(op, ListNamespacesOp):
            return (yield from self._list_namespaces(op))
        raise ValueError(f"unknown store operation {type(op).__name__}")

    # -- get ---------------------------------------------------------------------------------------------
    def _refresh(self, docs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """EXPIRE commands that push back the expiry of items read, when the store refreshes on read."""
        if not (self.ttl_config and self.ttl_config.get("refresh_on_read", True)):
            return []
        commands = []
        for doc in docs:
            if doc.get("ttl"):
                seconds = max(1, int(doc["ttl"] * 60))
                iid = item_id(doc["ns"], doc["key"])
                commands.append(("EXPIRE", self._item_key(iid), seconds))
                commands += [("EXPIRE", self._vec_key(iid, n), seconds) for n in range(int(doc.get("nvec") or 0))]
        return commands

    def _fetch(self, iids: list[str]) -> Generator[Any, Any, list[dict[str, Any] | None]]:
        if not iids:
            return []
        reply = yield Commands([("JSON.MGET", *[self._item_key(i) for i in iids], "$")])
        docs = []
        for raw in reply[0]:
            parsed = json.loads(raw) if raw else None
            docs.append(parsed[0] if isinstance(parsed, list) and parsed else None)
        return docs

    def _get(self, op: GetOp) -> Generator[Any, Any, Item | None]:
        docs = yield from self._fetch([item_id(op.namespace, op.key)])
        doc = docs[0]
        if doc is None:
            return None
        if op.refresh_ttl and (commands := self._refresh([doc])):
            yield Commands(commands)
        return _item_from_doc(doc)

    # -- put / delete ------------------------------------------------------------------------------------
    def _texts(self, op: PutOp) -> list[str]:
        if not self.embeddings or op.value is None or op.index is False:
            return []
        fields = self._fields if op.index is None else [(f, tokenize_path(f)) for f in op.index]
        texts: list[str] = []
        for _, path in fields:
            texts += [t for t in get_text_at_path(op.value, path) if isinstance(t, str) and t]
        return texts

    def _put(self, op: PutOp) -> Generator[Any, Any, None]:
        iid = item_id(op.namespace, op.key)
        key = self._item_key(iid)
        (existing,) = yield from self._fetch([iid])
        old_vectors = int((existing or {}).get("nvec") or 0)
        if op.value is None:
            yield Commands([("DEL", key, *[self._vec_key(iid, n) for n in range(old_vectors)])], atomic=True)
            return None
        texts = self._texts(op)
        vectors = (yield Embed(texts)) if texts else []
        now = time.time()
        encoded = ns_key(op.namespace)
        if existing is None:
            (seq,) = yield Commands([("INCR", self.k_seq)])
            _, ns_seq = yield Commands([("HSETNX", self.k_ns_seq, encoded, seq), ("HGET", self.k_ns_seq, encoded)])
            order = int(ns_seq) * ORDER_SPAN + int(seq) % ORDER_SPAN
            created = now
        else:
            order, created = existing.get("order", 0), existing.get("created_at", now)
        paths = ns_paths(op.namespace)
        doc = {"ns": list(op.namespace), "ns_path": paths, "ns_key": encoded, "key": op.key,
               "value": op.value, "created_at": created, "updated_at": now, "order": order,
               "nvec": len(vectors), "ttl": op.ttl}
        commands: list[tuple[Any, ...]] = [("JSON.SET", key, "$", json.dumps(doc, ensure_ascii=False))]
        stale = [self._vec_key(iid, n) for n in range(len(vectors), old_vectors)]
        if stale:
            commands.append(("DEL", *stale))
        for n, vector in enumerate(vectors):
            commands.append(("HSET", self._vec_key(iid, n), "item", iid, "ns_path", ",".join(paths),
                             "embedding", _vector_bytes(vector)))
        keys = [key] + [self._vec_key(iid, n) for n in range(len(vectors))]
        if op.ttl:
            seconds = max(1, int(op.ttl * 60))
            commands += [("EXPIRE", k, seconds) for k in keys]
        elif existing is not None and existing.get("ttl"):
            commands += [("PERSIST", k) for k in keys]
        yield Commands(commands, atomic=True)
        return None

    def restore(self, namespace: tuple[str, ...], key: str, value: dict[str, Any], *, created_at: float,
                updated_at: float, ttl: float | None = None, index: Literal[False] | list[str] | None = None) -> None:
        """Put an item with the timestamps it had elsewhere (migrations and imports keep an item's history)."""
        self.put(namespace, key, value, index=index, ttl=ttl)
        item = self._item_key(item_id(namespace, key))
        pipe = self.client.pipeline(transaction=True)
        pipe.execute_command("JSON.SET", item, "$.created_at", json.dumps(float(created_at)))
        pipe.execute_command("JSON.SET", item, "$.updated_at", json.dumps(float(updated_at)))
        pipe.execute()

    # -- search ------------------------------------------------------------------------------------------
    def _prefix_query(self, prefix: Sequence[str]) -> str:
        # Encoded tags are [0-9a-fx] only: nothing to escape.
        return f"@ns_path:{{{ns_key(prefix)}}}" if prefix else "*"

    def _page(self, query: str, offset: int, count: int) -> Generator[Any, Any, tuple[int, list[dict[str, Any]]]]:
        reply = yield Commands([("FT.SEARCH", self.items_index, query, "SORTBY", "order", "ASC", "RETURN", "1", "$",
                                 "LIMIT", str(offset), str(count), "DIALECT", "2")])
        total, docs = _search_docs(reply[0])
        return total, docs

    def _listing(self, query: str, op: SearchOp) -> Generator[Any, Any, list[dict[str, Any]]]:
        """Items in insertion order, filtered, offset and limited (paging through when a filter applies)."""
        if not op.filter:
            _, docs = yield from self._page(query, op.offset, op.limit)
            return docs
        kept: list[dict[str, Any]] = []
        start = 0
        while len(kept) < op.offset + op.limit and start < MAX_SCAN:
            total, docs = yield from self._page(query, start, PAGE)
            kept += [d for d in docs if matches(d["value"], op.filter)]
            start += PAGE
            if start >= total:
                break
        return kept[op.offset: op.offset + op.limit]

    def _search(self, op: SearchOp) -> Generator[Any, Any, list[SearchItem]]:
        prefix_query = self._prefix_query(op.namespace_prefix)
        if op.limit <= 0:
            return []
        if not (op.query and self.embeddings):
            docs = yield from self._listing(prefix_query, op)
            scored = [(None, d) for d in docs]
        else:
            scored = yield from self._semantic(op, prefix_query)
        if op.refresh_ttl and (commands := self._refresh([d for _, d in scored])):
            yield Commands(commands)
        return [_item_from_doc(d, score, searched=True) for score, d in scored]

    def _semantic(self, op: SearchOp, prefix_query: str) -> Generator[Any, Any, list[tuple[float | None, dict]]]:
        (vector,) = yield Embed([op.query], query=True)
        blob = _vector_bytes(vector)
        wanted = op.offset + op.limit
        k = max(wanted * 3, 10)
        best: dict[str, float] = {}
        docs_by_id: dict[str, dict[str, Any]] = {}
        ranked: list[str] = []
        while True:
            filter_part = f"({prefix_query})" if op.namespace_prefix else "*"
            reply = yield Commands([(
                "FT.SEARCH", self.vectors_index, f"{filter_part}=>[KNN {k} @embedding $vec AS dist]",
                "PARAMS", "2", "vec", blob, "SORTBY", "dist", "ASC", "RETURN", "2", "item", "dist",
                "LIMIT", "0", str(k), "DIALECT", "2",
            )])
            total, hits = _search_fields(reply[0])
            for fields in hits:
                iid, dist = fields.get("item"), fields.get("dist")
                if iid is None or dist is None:
                    continue
                score = 1.0 - float(dist)
                if iid not in best or score > best[iid]:
                    best[iid] = score
            ranked = sorted(best, key=lambda i: -best[i])
            missing = [i for i in ranked if i not in docs_by_id]
            for iid, doc in zip(missing, (yield from self._fetch(missing)), strict=True):
                docs_by_id[iid] = doc
            live = [i for i in ranked if docs_by_id.get(i) is not None and matches(docs_by_id[i]["value"], op.filter)]
            if len(live) >= wanted or len(hits) < k or k >= MAX_SCAN or total <= k:
                break
            k = min(k * 4, MAX_SCAN)
        live = [i for i in ranked if docs_by_id.get(i) is not None and matches(docs_by_id[i]["value"], op.filter)]
        kept = [(best[i], docs_by_id[i]) for i in live[op.offset: op.offset + op.limit]]
        if len(kept) < op.limit:  # as InMemoryStore: fill up with the items that have no embedding, unscored
            unembedded_query = f"{prefix_query} @nvec:[0 0]" if op.namespace_prefix else "@nvec:[0 0]"
            fill = SearchOp(op.namespace_prefix, op.filter, op.limit - len(kept), 0, None, op.refresh_ttl)
            docs = yield from self._listing(unembedded_query, fill)
            kept += [(None, d) for d in docs]
        return kept

    # -- namespaces ---------------------------------------------------------------------------------------
    def _list_namespaces(self, op: ListNamespacesOp) -> Generator[Any, Any, list[tuple[str, ...]]]:
        reply = yield Commands([("FT.AGGREGATE", self.items_index, "*", "LOAD", "1", "@ns_key",
                                 "GROUPBY", "1", "@ns_key", "LIMIT", "0", str(MAX_SCAN), "DIALECT", "2")])
        namespaces = [ns_from_key(row["ns_key"]) for row in _aggregate_rows(reply[0]) if row.get("ns_key")]
        if op.match_conditions:
            namespaces = [ns for ns in namespaces if all(_namespace_matches(c, ns) for c in op.match_conditions)]
        if op.max_depth is not None:
            namespaces = [ns[: op.max_depth] for ns in namespaces]
        return sorted(set(namespaces))[op.offset: op.offset + op.limit]
