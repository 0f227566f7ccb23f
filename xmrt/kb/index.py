"""The knowledge index: a Chroma collection (dense vectors, HNSW) plus a persistent BM25 index, searched together.

``KnowledgeIndex(config, collection)`` opens (or creates) one named collection:

* Chroma holds ids, texts, metadata and embeddings, with a cosine HNSW index. The collection metadata records
  the embedding model id; opening it with another model is refused, since its vectors would be meaningless.
* A BM25 inverted index (:mod:`xmrt.kb.lexical`) lives under ``<data_dir>/kb/bm25/<collection>.<collection id>``:
  one per vector store and collection (the id is Chroma's UUID of the collection, so two stores, or a dropped
  and re-created collection, never share one). It is a per-machine cache of a lexical truth kept in Chroma.

**One lexical truth across machines.** Every write takes the collection's write lease
(:mod:`xmrt.kb.coordination`, kept in Chroma), stamps the chunks it upserts with the next *lexical generation*
(metadata ``xmrt_lexgen``), records the ids it deletes as a tombstone (hidden collection ``xmrt--tombstones``),
then raises the generation in the collection's metadata (``lexical_generation``). Before every BM25 or hybrid
search the index reads that number (one small request) and, when it moved, applies what changed since the
generation it has applied: tombstoned ids out, chunks stamped later in (their current text), in one SQLite
transaction with the new marker. So every machine's lexical search sees every committed ingest at once. Chunk
counts are compared at most every ``RECONCILE_SECONDS``: a difference while no writer holds the lease (a writer
killed between its Chroma write and its commit) is repaired by comparing the id sets. A missing or unreadable
BM25 file is rebuilt from Chroma's texts.

``search`` runs in three modes: ``semantic`` (cosine similarity), ``bm25`` and ``hybrid`` (the two fused, see
:mod:`xmrt.kb.fusion`), with metadata filters and optional maximal-marginal-relevance diversification.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import re
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmrt.config import Config
from xmrt.errors import UserError
from xmrt.kb.coordination import RESERVED_PREFIX, ChromaLease
from xmrt.kb.fusion import DEFAULT_FUSION, FusionParams, fuse
from xmrt.kb.lexical import BM25Index

log = logging.getLogger(__name__)

SEARCH_MODES = ("semantic", "bm25", "hybrid")
#: Collection metadata key holding the embedding model id.
MODEL_KEY = "embedding_model"
#: HNSW settings of new collections. ef_search 100 keeps recall@100 of the HNSW search close to exact search.
HNSW_CONFIG = {"space": "cosine", "ef_construction": 200, "ef_search": 100, "max_neighbors": 16}
#: Candidates each retriever contributes to a hybrid search (at least; more when k or fetch_k is larger).
HYBRID_CANDIDATES = 100
#: Texts embedded per call when upsert has to embed.
EMBED_BATCH = 256
#: Collection metadata key: the lexical generation of the last committed write.
GEN_KEY = "lexical_generation"
#: Chunk metadata key: the lexical generation that wrote the chunk (hidden from callers).
CHUNK_GEN_KEY = "xmrt_lexgen"
#: Hidden collection of deleted ids per (collection, generation).
TOMBSTONES = RESERVED_PREFIX + "tombstones"
#: Seconds between two comparisons of the chunk counts of Chroma and the local BM25 index.
RECONCILE_SECONDS = 5.0
#: Seconds a writer waits for another writer of the same collection (the lease holder) to finish.
WRITE_WAIT = 3600.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$")
_GLOB_CHARS = re.compile(r"[*?\[]")


def validate_collection_name(name: str) -> str:
    """Check a collection name against Chroma's rules; returns it, or raises UserError naming the problem."""
    if not isinstance(name, str) or not name:
        raise UserError("collection name is empty")
    if not 3 <= len(name) <= 512:
        raise UserError(f"collection name {name!r} must be 3 to 512 characters long (it has {len(name)})")
    bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))})
    if bad:
        raise UserError(f"collection name {name!r} may hold only letters, digits, '.', '_' and '-' (not {bad!r})")
    if not _NAME.match(name):
        raise UserError(f"collection name {name!r} must start and end with a letter or digit")
    if ".." in name:
        raise UserError(f"collection name {name!r} must not contain '..'")
    if name.startswith(RESERVED_PREFIX):
        raise UserError(f"collection names starting with {RESERVED_PREFIX!r} are reserved for the knowledge base")
    return name


def _strip(meta: dict | None) -> dict:
    out = dict(meta or {})
    out.pop(CHUNK_GEN_KEY, None)
    return out


@dataclass
class Hit:
    """One search result.

    Attributes:
        id: Chunk id.
        text: Chunk text.
        metadata: Chunk metadata as stored.
        score: The mode's score, higher is better: cosine similarity (semantic), BM25 (bm25) or fused (hybrid).
        dense_score: Cosine similarity to the query, when known.
        bm25_score: BM25 score, when known (0.0 means no query term occurs in the chunk).
        dense_rank: 1-based rank in the dense candidate list, None when not in it.
        bm25_rank: 1-based rank in the BM25 candidate list, None when not in it.
    """

    id: str
    text: str
    metadata: dict
    score: float
    dense_score: float | None = None
    bm25_score: float | None = None
    dense_rank: int | None = None
    bm25_rank: int | None = None
    extra: dict = field(default_factory=dict, repr=False)


def _combine_where(where: dict | None, file_type: str | None, kind: str | None, source: str | None) -> dict | None:
    clauses: list[dict] = []
    if where:
        clauses.append(where)
    if file_type:
        clauses.append({"file_type": file_type.lstrip(".")})
    if kind:
        clauses.append({"kind": kind})
    if source:
        clauses.append({"source": source})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _clean_metadata(meta: dict | None) -> dict | None:
    if not meta:
        return None
    clean = {k: v for k, v in meta.items() if v is not None}
    return clean or None


_TORCH_THREADS_LOCK = threading.Lock()


@contextlib.contextmanager
def _one_torch_thread():
    """Run the body with torch limited to one intra-op thread, restoring the previous count afterwards."""
    import torch

    with _TORCH_THREADS_LOCK:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


_QUERY_POOL = None
_QUERY_POOL_LOCK = threading.Lock()


def _query_pool():
    """One process-wide worker thread pool that embeds hybrid queries (created on first use, not at import)."""
    global _QUERY_POOL
    with _QUERY_POOL_LOCK:
        if _QUERY_POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            _QUERY_POOL = ThreadPoolExecutor(2, thread_name_prefix="kb-query-embed")
        return _QUERY_POOL


def _chunks(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


class KnowledgeIndex:
    """One knowledge-base collection: Chroma vectors plus a BM25 index, kept in step.

    Args:
        config: Runtime configuration (Chroma location, data directory, embedding model).
        collection: Collection name (3..512 characters of letters, digits, '.', '_', '-', alphanumeric ends).
        fusion: How hybrid search fuses its two rankings; by default ``max`` with the weight calibrated for this
            collection (:meth:`calibrate_fusion`).

    Raises:
        UserError: The name is invalid, or the collection was built with another embedding model.
    """

    def __init__(self, config: Config, collection: str = "default", *, fusion: FusionParams = DEFAULT_FUSION) -> None:
        from xmrt.kb.chroma import chroma_client
        from xmrt.llm.embeddings import embedding_model_id

        self.config = config
        self.name = validate_collection_name(collection)
        self.embedding_model_id = embedding_model_id(config)
        self.fusion = fusion
        self._client = chroma_client(config)
        self._collection = self._open_collection()
        self._lock = threading.RLock()
        self._lease = ChromaLease(self._client, f"write:{self._collection.id}")
        self._bm25 = BM25Index(self.bm25_dir(config, self.name, str(self._collection.id)))
        self._last_count_check = 0.0
        self._meta_seen: dict = dict(self._collection.metadata or {})
        self.refresh_lexical(check_counts=True)

    # -- opening ---------------------------------------------------------------------------------------------

    @staticmethod
    def bm25_dir(config: Config, collection: str, collection_id: str | None = None) -> Path:
        """Directory of a collection's BM25 index on this machine (the pre-1.x layout without the id)."""
        base = Path(config.data_dir) / "kb" / "bm25"
        return base / (f"{collection}.{collection_id}" if collection_id else collection)

    def _open_collection(self):
        from chromadb.errors import NotFoundError

        try:
            col = self._client.get_collection(self.name, embedding_function=None)
        except (NotFoundError, ValueError):
            try:
                col = self._client.create_collection(
                    self.name,
                    configuration={"hnsw": dict(HNSW_CONFIG)},
                    metadata={MODEL_KEY: self.embedding_model_id},
                    embedding_function=None,
                )
            except Exception:  # created meanwhile by another process: open it
                col = self._client.get_collection(self.name, embedding_function=None)
        meta = dict(col.metadata or {})
        built_with = meta.get(MODEL_KEY)
        if built_with is None:
            meta[MODEL_KEY] = self.embedding_model_id
            col.modify(metadata=meta)
        elif built_with != self.embedding_model_id:
            self._follow_engine(str(built_with))
        return col

    def _follow_engine(self, built_with: str) -> None:
        """Query a collection with the engine that built it when no engine was configured; else refuse."""
        from dataclasses import replace

        from xmrt.config import EMBEDDING_ENGINES
        from xmrt.llm.embeddings import embedding_model_id, engine_of_model_id

        engine = engine_of_model_id(built_with)
        if self.config.embedding_engine is None and engine in EMBEDDING_ENGINES:
            followed = replace(self.config, embedding_engine=engine)
            if embedding_model_id(followed) == built_with:
                log.info("collection %r was built with the %s engine: querying it with that engine", self.name, engine)
                self.config = followed
                self.embedding_model_id = built_with
                return
        raise UserError(
            f"collection {self.name!r} was built with embedding model {built_with!r}, but the configured "
            f"model is {self.embedding_model_id!r}: their vectors are not comparable. Query it with the same model "
            f"and engine (XMRT_EMBEDDING_ENGINE={engine}, or unset it to follow the collection), or re-ingest "
            "into a new collection"
        )

    # -- the lexical index: one truth in Chroma, a cache per machine --------------------------------------------

    def _remote_meta(self) -> dict:
        """The collection's metadata as stored now (not the copy cached in the collection object)."""
        return dict(self._client.get_collection(self.name, embedding_function=None).metadata or {})

    def _tombstones(self):
        return self._client.get_or_create_collection(TOMBSTONES, embedding_function=None,
                                                     metadata={"xmrt": "tombstones"})

    def refresh_lexical(self, *, check_counts: bool = False) -> None:
        """Bring the local BM25 index up to the collection's committed lexical generation.

        Args:
            check_counts: Compare chunk counts now (otherwise at most every RECONCILE_SECONDS).
        """
        import time

        with self._lock:
            self._meta_seen = self._remote_meta()
            remote = int(self._meta_seen.get(GEN_KEY, 0))
            local = self._bm25.sync_marker()
            if self._bm25.needs_rebuild or local < 0 or local > remote:
                self._rebuild(remote)
                self._last_count_check = time.monotonic()
                return
            if remote > local:
                self._apply_changes(local, remote)
            now = time.monotonic()
            if check_counts or now - self._last_count_check >= RECONCILE_SECONDS:
                self._last_count_check = now
                if self._collection.count() != self._bm25.count() and self._lease.held_by_other() is None:
                    self._reconcile()

    def _pages(self, where: dict | None, include: list[str]):
        page = self._page_size()
        offset = 0
        while True:
            batch = self._collection.get(where=where, limit=page, offset=offset, include=include)
            if not batch["ids"]:
                return
            yield batch
            offset += len(batch["ids"])
            if len(batch["ids"]) < page:
                return

    def _rebuild(self, remote: int) -> None:
        n_chroma = self._collection.count()
        log.info("rebuilding the BM25 index of collection %r from %d chunks", self.name, n_chroma)
        self._bm25.clear(marker=-1)
        for batch in self._pages(None, ["documents"]):
            self._bm25.add(batch["ids"], [d or "" for d in batch["documents"]])
        self._bm25.set_sync_marker(remote)

    def _apply_changes(self, local: int, remote: int) -> None:
        """Apply the writes of generations after ``local``: tombstoned ids out, re-stamped chunks in."""
        import json

        got = self._tombstones().get(where={"$and": [{"collection": str(self._collection.id)},
                                                     {"gen": {"$gt": local}}]}, include=["documents"])
        dead = [i for doc in got["documents"] or [] for i in json.loads(doc or "[]")]
        if dead:
            self._bm25.delete(dead)
        ids: list[str] = []
        texts: list[str] = []
        for batch in self._pages({CHUNK_GEN_KEY: {"$gt": local}}, ["documents"]):
            ids.extend(batch["ids"])
            texts.extend(d or "" for d in batch["documents"])
        self._bm25.add(ids, texts, marker=remote)

    def _reconcile(self) -> None:
        """Make the local index hold exactly Chroma's ids (after a writer died between its two writes)."""
        chroma_ids: set[str] = set()
        for batch in self._pages(None, []):
            chroma_ids.update(batch["ids"])
        local = set(self._bm25.ids())
        extra, missing = sorted(local - chroma_ids), sorted(chroma_ids - local)
        log.warning("collection %r: the BM25 index differed from Chroma (%d missing, %d extra chunks); repaired",
                    self.name, len(missing), len(extra))
        if extra:
            self._bm25.delete(extra)
        for chunk in _chunks(missing, self._page_size()):
            got = self._collection.get(ids=list(chunk), include=["documents"])
            self._bm25.add(got["ids"], [d or "" for d in got["documents"]])

    @contextlib.contextmanager
    def writing(self, purpose: str = "write", wait: float = WRITE_WAIT):
        """Hold the collection's write lease for the body (re-entrant; waits for another writer to finish).

        Raises:
            UserError: Another writer held the lease for the whole wait.
        """
        from xmrt.kb.coordination import LeaseBusy

        def waiting(holder: dict) -> None:
            log.warning("collection %r is being written by %s pid %s (%s); waiting for it to finish", self.name,
                        holder.get("host"), holder.get("pid"), holder.get("purpose"))

        try:
            self._lease.acquire(wait=wait, purpose=purpose, on_wait=waiting)
        except LeaseBusy as exc:
            raise UserError(f"collection {self.name!r}: {exc}") from None
        try:
            yield self
        finally:
            self._lease.release()

    def _next_generation(self) -> tuple[int, dict]:
        meta = self._remote_meta()
        return int(meta.get(GEN_KEY, 0)) + 1, meta

    def _commit_generation(self, gen: int) -> None:
        """Publish generation ``gen`` in the collection metadata (under the lease: no concurrent writer)."""
        self._lease.check()
        meta = self._remote_meta()
        if int(meta.get(GEN_KEY, 0)) < gen:
            meta[GEN_KEY] = gen
            self._collection.modify(metadata=meta)

    def _page_size(self) -> int:
        try:
            return max(1, min(5000, int(self._client.get_max_batch_size())))
        except Exception:  # older servers do not report it
            return 1000

    # -- writes ----------------------------------------------------------------------------------------------

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed texts with the configured model, in batches."""
        from xmrt.llm.embeddings import get_embeddings

        model = get_embeddings(self.config)
        vectors: list[list[float]] = []
        for batch in _chunks(list(texts), EMBED_BATCH):
            vectors.extend(model.embed_documents(batch))
        return vectors

    def embed_query(self, text: str) -> list[float]:
        """Embed one query with the configured model.

        A local model runs the query on one torch thread: a query is a few tokens, so intra-op parallelism buys
        nothing, and on a busy 2-core machine two threads waiting on each other made the p50 10x slower
        (measured 236 ms with 2 threads against 17 ms with 1; see BENCHMARKS.md).
        """
        from xmrt.llm.embeddings import embedding_engine, get_embeddings

        model = get_embeddings(self.config)
        if embedding_engine(self.config) != "torch":  # OpenAI, or ONNX (its query session has one thread)
            return model.embed_query(text)
        with _one_torch_thread():
            return model.embed_query(text)

    def upsert(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        metadatas: Sequence[dict | None] | None = None,
        embeddings: Sequence[Sequence[float]] | None = None,
    ) -> None:
        """Add or replace chunks in Chroma and in the BM25 index.

        Args:
            ids: Chunk ids; a repeated id keeps its last occurrence.
            texts: Chunk texts.
            metadatas: Scalar metadata per chunk (None values are dropped), or None.
            embeddings: Precomputed vectors from the same model; embedded in batches when None.
        """
        n = len(ids)
        metadatas = list(metadatas) if metadatas is not None else [None] * n
        if len(texts) != n or len(metadatas) != n or (embeddings is not None and len(embeddings) != n):
            raise UserError("upsert needs as many texts, metadatas and embeddings as ids")
        if n == 0:
            return
        last = {doc_id: i for i, doc_id in enumerate(ids)}
        keep = sorted(last.values())
        ids = [str(ids[i]) for i in keep]
        texts = [texts[i] for i in keep]
        metas = [_clean_metadata(metadatas[i]) for i in keep]
        if embeddings is None:
            vectors = self.embed_documents(texts)
        else:
            vectors = [list(map(float, embeddings[i])) for i in keep]
        with self.writing("upsert"), self._lock:
            gen, _ = self._next_generation()
            metas = [{**(m or {}), CHUNK_GEN_KEY: gen} for m in metas]
            page = self._page_size()
            for start in range(0, len(ids), page):
                end = start + page
                self._collection.upsert(
                    ids=ids[start:end], documents=texts[start:end], metadatas=metas[start:end],
                    embeddings=vectors[start:end],
                )
            in_step = self._bm25.sync_marker() == gen - 1
            self._bm25.add(ids, texts, marker=gen if in_step else None)
            self._commit_generation(gen)

    def delete(self, ids: Sequence[str]) -> None:
        """Remove chunks from Chroma and from the BM25 index (unknown ids are ignored)."""
        ids = list(dict.fromkeys(str(i) for i in ids))
        if not ids:
            return
        import json

        with self.writing("delete"), self._lock:
            gen, _ = self._next_generation()
            for batch in _chunks(ids, self._page_size()):
                self._collection.delete(ids=batch)
            self._tombstones().upsert(ids=[f"{self._collection.id}:{gen}"], documents=[json.dumps(ids)],
                                      metadatas=[{"collection": str(self._collection.id), "gen": gen}],
                                      embeddings=[[0.0]])
            in_step = self._bm25.sync_marker() == gen - 1
            self._bm25.delete(ids, marker=gen if in_step else None)
            self._commit_generation(gen)

    def drop(self) -> None:
        """Delete the whole collection and its BM25 index."""
        from chromadb.errors import NotFoundError

        with self._lock:
            try:
                self._client.delete_collection(self.name)
            except (NotFoundError, ValueError):
                pass
            with contextlib.suppress(Exception):  # housekeeping: the tombstones of this collection id
                self._tombstones().delete(where={"collection": str(self._collection.id)})
            self._bm25.close()
            shutil.rmtree(self._bm25.path, ignore_errors=True)

    # -- reads -----------------------------------------------------------------------------------------------

    def count(self) -> int:
        """Number of chunks in the collection."""
        return self._collection.count()

    def get(
        self,
        *,
        ids: Sequence[str] | None = None,
        where: dict | None = None,
        include_embeddings: bool = False,
        limit: int | None = None,
    ) -> dict[str, list]:
        """Fetch chunks by id and/or metadata filter, paging through Chroma.

        Returns:
            ``{"ids", "documents", "metadatas"}`` (plus ``"embeddings"`` as lists of floats when asked).
        """
        include = ["documents", "metadatas"] + (["embeddings"] if include_embeddings else [])
        out: dict[str, list] = {"ids": [], "documents": [], "metadatas": []}
        if include_embeddings:
            out["embeddings"] = []

        def take(batch: dict) -> None:
            out["ids"].extend(batch["ids"])
            out["documents"].extend(batch["documents"] or [None] * len(batch["ids"]))
            out["metadatas"].extend(_strip(m) for m in (batch["metadatas"] or [None] * len(batch["ids"])))
            if include_embeddings:
                out["embeddings"].extend([float(x) for x in e] for e in batch["embeddings"])

        page = self._page_size()
        if ids is not None:
            for chunk in _chunks(list(dict.fromkeys(ids)), page):
                take(self._collection.get(ids=list(chunk), where=where, include=include))
                if limit is not None and len(out["ids"]) >= limit:
                    break
        else:
            offset = 0
            while limit is None or offset < limit:
                size = page if limit is None else min(page, limit - offset)
                batch = self._collection.get(where=where, limit=size, offset=offset, include=include)
                if not batch["ids"]:
                    break
                take(batch)
                offset += len(batch["ids"])
                if len(batch["ids"]) < size:
                    break
        if limit is not None:
            for key in out:
                out[key] = out[key][:limit]
        return out

    def search(
        self,
        query: str,
        k: int = 5,
        mode: str = "hybrid",
        *,
        source_glob: str | None = None,
        file_type: str | None = None,
        kind: str | None = None,
        where: dict | None = None,
        mmr: bool = False,
        fetch_k: int | None = None,
        mmr_lambda: float = 0.5,
        query_embedding: Sequence[float] | None = None,
    ) -> list[Hit]:
        """Search the collection.

        Args:
            query: The query text.
            k: Number of hits.
            mode: ``semantic``, ``bm25`` or ``hybrid``.
            source_glob: Keep chunks whose ``source`` matches this fnmatch pattern (``*`` also crosses ``/``).
            file_type: Keep chunks of this file type (extension without dot).
            kind: Keep chunks of this kind (``text``, ``code``, ``signature``).
            where: An extra Chroma metadata filter, combined with the others by ``$and``.
            mmr: Diversify the k hits by maximal marginal relevance over the candidates' embeddings.
            fetch_k: Candidates per retriever (default: 100 for hybrid, 4k with MMR, else k).
            mmr_lambda: MMR trade-off: 1 is pure relevance, 0 pure diversity.
            query_embedding: A precomputed query vector (skips embedding the query).

        Returns:
            Up to k hits, best first, each with metadata and score.

        Raises:
            UserError: Bad mode, k or mmr_lambda.
        """
        if mode not in SEARCH_MODES:
            raise UserError(f"search mode {mode!r} must be one of {', '.join(SEARCH_MODES)}")
        if not isinstance(k, int) or k < 1:
            raise UserError(f"k={k!r} must be a positive integer")
        if not 0.0 <= mmr_lambda <= 1.0:
            raise UserError(f"mmr_lambda={mmr_lambda} must be within [0, 1]")
        if fetch_k is not None and fetch_k < 1:
            raise UserError(f"fetch_k={fetch_k} must be a positive integer")
        exact_source = None
        if source_glob and not _GLOB_CHARS.search(source_glob):
            exact_source, source_glob = source_glob, None
        where_all = _combine_where(where, file_type, kind, exact_source)
        n_cand = max(k, fetch_k or 0, (4 * k if mmr else 0), HYBRID_CANDIDATES if mode == "hybrid" else 0)

        # A hybrid search embeds the query on a worker thread while BM25 ranks (onnxruntime and SQLite release
        # the GIL), so the two costs overlap instead of adding up.
        pending = None
        qvec = None
        if mode != "bm25":
            if query_embedding is not None:
                qvec = np.asarray(query_embedding, np.float32)
            elif mode == "hybrid":
                pending = _query_pool().submit(self.embed_query, query)
            else:
                qvec = np.asarray(self.embed_query(query), np.float32)
        dense: list[Hit] = []
        lexical: list[Hit] = []
        try:
            if mode != "semantic":
                self.refresh_lexical()  # see every committed write, from any machine, before ranking by BM25
                lexical = self._lexical(query, n_cand, where_all, source_glob)
            if pending is not None:
                qvec = np.asarray(pending.result(), np.float32)
                pending = None
            if mode in ("semantic", "hybrid"):
                dense = self._dense(qvec, n_cand, where_all, source_glob)
        except ValueError as exc:  # chromadb rejects a malformed where filter with ValueError subclasses
            if where_all is None:
                raise
            raise UserError(f"invalid metadata filter {where_all!r}: {exc}".splitlines()[0]) from None
        finally:
            if pending is not None:  # an error before the embedding was awaited: let it finish unobserved
                pending.cancel()

        if mode == "semantic":
            candidates = dense
        elif mode == "bm25":
            candidates = lexical
        else:
            candidates = self._hybrid(query, qvec, dense, lexical, n_cand)
        hits = self._mmr(candidates, k, mmr_lambda) if mmr and candidates else candidates[:k]
        return self._fill(hits)

    def _fill(self, hits: list[Hit]) -> list[Hit]:
        """Fetch text and metadata for hits that were ranked on ids and scores alone."""
        if not hits:
            return hits
        got = self._collection.get(ids=[h.id for h in hits], include=["documents", "metadatas"])
        found = {i: (d, m) for i, d, m in zip(got["ids"], got["documents"], got["metadatas"], strict=True)}
        for hit in hits:
            if hit.id in found:
                doc, meta = found[hit.id]
                hit.text, hit.metadata = doc or "", _strip(meta)
        return [h for h in hits if h.id in found]  # a chunk deleted meanwhile is not returned

    # -- retrievers ------------------------------------------------------------------------------------------

    def _dense(self, qvec: np.ndarray, n: int, where: dict | None, glob: str | None) -> list[Hit]:
        total = self._collection.count()
        if total == 0:
            return []
        want = n
        fetch = min(total, n if glob is None else max(4 * n, 100))
        while True:
            res = self._collection.query(
                query_embeddings=[qvec], n_results=fetch, where=where,
                include=["distances"] + (["metadatas"] if glob is not None else []),
            )
            ids = res["ids"][0]
            hits = []
            for i, doc_id in enumerate(ids):
                if glob is not None:
                    meta = dict(res["metadatas"][0][i] or {})
                    if not fnmatch.fnmatchcase(str(meta.get("source", "")), glob):
                        continue
                sim = 1.0 - float(res["distances"][0][i])
                hits.append(Hit(doc_id, "", {}, sim, dense_score=sim))
            if len(hits) >= want or len(ids) < fetch or fetch >= total:
                break
            fetch = min(total, fetch * 4)
        hits = hits[:want]
        for rank, hit in enumerate(hits, 1):
            hit.dense_rank = rank
        return hits

    def _lexical(self, query: str, n: int, where: dict | None, glob: str | None) -> list[Hit]:
        docs, scores = self._bm25.score_all(query)
        positive = scores > 0
        docs, scores = docs[positive], scores[positive]
        if not len(docs):
            return []
        if where is None and glob is None:
            ranked = self._bm25.rank(docs, scores, n)
            return self._materialise(ranked, n, None, None)
        ranked = self._bm25.rank(docs, scores)  # every match, best first; filtered page by page
        return self._materialise(ranked, n, where, glob)

    def _materialise(self, ranked: list[tuple[str, float]], n: int, where: dict | None, glob: str | None) -> list[Hit]:
        if where is None and glob is None:
            return [Hit(i, "", {}, score, bm25_score=score, bm25_rank=r) for r, (i, score) in enumerate(ranked[:n], 1)]
        hits: list[Hit] = []
        step = max(4 * n, 500)
        include = ["metadatas"] if glob is not None else []
        for start in range(0, len(ranked), step):
            part = ranked[start : start + step]
            got = self._collection.get(ids=[i for i, _ in part], where=where, include=include)
            metas = got.get("metadatas") or [None] * len(got["ids"])
            found = dict(zip(got["ids"], metas, strict=True))
            for doc_id, score in part:
                if doc_id not in found:
                    continue
                if glob is not None and not fnmatch.fnmatchcase(str((found[doc_id] or {}).get("source", "")), glob):
                    continue
                hits.append(Hit(doc_id, "", {}, score, bm25_score=score, bm25_rank=len(hits) + 1))
                if len(hits) >= n:
                    return hits
        return hits

    def _hybrid(self, query: str, qvec: np.ndarray, dense: list[Hit], lexical: list[Hit], depth: int) -> list[Hit]:
        by_id: dict[str, Hit] = {}
        for hit in dense:
            by_id[hit.id] = hit
        for hit in lexical:
            if hit.id in by_id:
                by_id[hit.id].bm25_score = hit.bm25_score
                by_id[hit.id].bm25_rank = hit.bm25_rank
            else:
                by_id[hit.id] = hit
        lexical_extra = dense_extra = None
        if self.fusion.method == "convex":
            missing_bm25 = [h.id for h in dense if h.bm25_score is None]
            if missing_bm25:
                lexical_extra = self._bm25.scores_for(query, missing_bm25)
                for doc_id, score in lexical_extra.items():
                    by_id[doc_id].bm25_score = score
            missing_dense = [h.id for h in lexical if h.dense_score is None]
            if missing_dense:
                got = self._collection.get(ids=missing_dense, include=["embeddings"])
                dense_extra = {
                    doc_id: float(np.dot(np.asarray(vec, np.float32), qvec))
                    for doc_id, vec in zip(got["ids"], got["embeddings"], strict=True)
                }
                for doc_id, score in dense_extra.items():
                    by_id[doc_id].dense_score = score
        fused = fuse(
            [(h.id, h.dense_score) for h in dense],
            [(h.id, h.bm25_score) for h in lexical],
            self.fusion_params(),
            dense_extra=dense_extra,
            lexical_extra=lexical_extra,
            depth=depth,
        )
        out = []
        for doc_id, score in fused:
            hit = by_id[doc_id]
            hit.score = score
            out.append(hit)
        return out

    def _mmr(self, candidates: list[Hit], k: int, lam: float) -> list[Hit]:
        got = self._collection.get(ids=[h.id for h in candidates], include=["embeddings"])
        vec_of = {doc_id: np.asarray(v, np.float32) for doc_id, v in zip(got["ids"], got["embeddings"], strict=True)}
        cands = [h for h in candidates if h.id in vec_of]
        if not cands:
            return candidates[:k]
        mat = np.stack([vec_of[h.id] for h in cands])
        mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
        rel = np.array([h.score for h in cands], dtype=np.float64)
        span = rel.max() - rel.min()
        rel = (rel - rel.min()) / span if span > 0 else np.ones_like(rel)
        chosen: list[int] = []
        remaining = list(range(len(cands)))
        while remaining and len(chosen) < k:
            if chosen:
                redundancy = (mat[remaining] @ mat[chosen].T).max(axis=1)
            else:
                redundancy = np.zeros(len(remaining))
            gain = lam * rel[remaining] - (1.0 - lam) * redundancy
            best = remaining[int(np.argmax(gain))]
            chosen.append(best)
            remaining.remove(best)
        return [cands[i] for i in chosen]

    def record_shared(self, key: str, value: dict) -> None:
        """Store a JSON record in the collection's metadata (under the write lease), for every machine to read."""
        import json

        with self.writing(f"record {key}"):
            meta = self._remote_meta()
            meta[key] = json.dumps(value, sort_keys=True)
            self._lease.check()
            self._collection.modify(metadata=meta)
            self._meta_seen = meta

    # -- fusion calibration ----------------------------------------------------------------------------------

    def fusion_params(self) -> FusionParams:
        """The fusion hybrid search uses now: the configured one, with the calibrated weight when it has none."""
        from dataclasses import replace

        from xmrt.kb.calibration import NEUTRAL_WEIGHT

        if self.fusion.weight is not None:
            return self.fusion
        weight = self._meta_seen.get("fusion_weight")
        return replace(self.fusion, weight=float(weight) if isinstance(weight, int | float) else NEUTRAL_WEIGHT)

    def calibrate_fusion(self, *, force: bool = False, seed: int = 0) -> dict | None:
        """Calibrate the hybrid weight from this collection's own chunks and store it in its metadata.

        Skipped (returns None) for collections under ``MIN_CHUNKS`` chunks, and unless ``force``, when the last
        calibration was made at a chunk count within ``DRIFT`` of today's. See :mod:`xmrt.kb.calibration`.

        Returns:
            The stored calibration fields, or None when skipped.
        """
        import random

        from xmrt.kb.calibration import DRIFT, MIN_CHUNKS, calibrate, calibration_samples

        total = self.count()
        if total < MIN_CHUNKS:
            return None
        meta = self._remote_meta()
        done_at = meta.get("fusion_calibrated_chunks")
        if not force and isinstance(done_at, int) and done_at > 0 and abs(total - done_at) <= DRIFT * done_at:
            return None
        with self.writing("calibrate fusion"):
            self.refresh_lexical()
            ids = self._bm25.ids()
            sample = random.Random(seed).sample(ids, min(len(ids), 1000))
            got = self._collection.get(ids=sample, include=["documents"])

            def embed(texts: list[str]) -> np.ndarray:
                return np.asarray(self.embed_documents(texts), dtype=np.float32)

            def dense_search(qvec: np.ndarray, n: int) -> list[tuple[str, float]]:
                return [(h.id, h.dense_score) for h in self._dense(qvec, n, None, None)]

            def lexical_search(query: str, n: int) -> list[tuple[str, float]]:
                return [(h.id, h.bm25_score) for h in self._lexical(query, n, None, None)]

            result = calibrate(list(zip(got["ids"], [d or "" for d in got["documents"]], strict=True)), embed=embed,
                               dense_search=dense_search, lexical_search=lexical_search,
                               lexical_score=self._bm25.score_text, total_chunks=total, seed=seed,
                               samples=calibration_samples(total),
                               method=self.fusion.method if self.fusion.method != "rrf" else "max")
            fields = result.to_metadata()
            meta = self._remote_meta()
            meta.update(fields)
            self._lease.check()
            self._collection.modify(metadata=meta)
            self._meta_seen = meta
        log.info("collection %r: hybrid dense weight calibrated to %.2f on %d pseudo-queries", self.name,
                 result.weight, result.queries)
        return fields

    # -- collections -----------------------------------------------------------------------------------------

    @staticmethod
    def list_collections(config: Config) -> list[str]:
        """Names of every collection in the configured Chroma store."""
        from xmrt.kb.chroma import chroma_client

        cols = chroma_client(config).list_collections()
        names = (c if isinstance(c, str) else c.name for c in cols)
        return sorted(n for n in names if not n.startswith(RESERVED_PREFIX))

    def close(self) -> None:
        """Release the BM25 index's SQLite connection (Chroma's client is shared and stays open)."""
        self._bm25.close()

    def __repr__(self) -> str:
        return f"KnowledgeIndex(collection={self.name!r}, model={self.embedding_model_id!r})"

    @property
    def bm25(self) -> BM25Index:
        """The collection's BM25 index (read-only use)."""
        return self._bm25

    def stats(self) -> dict[str, Any]:
        """Chunk counts of both indexes and the embedding model."""
        return {"collection": self.name, "chunks": self.count(), "bm25_chunks": self._bm25.count(),
                "embedding_model": self.embedding_model_id}
