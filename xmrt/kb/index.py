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

**Modules.** This one opens a collection and keeps its lexical index in step; :mod:`xmrt.kb.index_writes` and
:mod:`xmrt.kb.index_search` hold the writes and the reads/search of :class:`KnowledgeIndex`; :mod:`xmrt.kb.hits`
the :class:`Hit` type, name and filter checks and the settings; :mod:`xmrt.kb.langchain_store` the read-only
LangChain vector store over a collection (:meth:`KnowledgeIndex.as_langchain_vectorstore`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from xmrt.config import Config
from xmrt.errors import UserError
from xmrt.kb.coordination import RESERVED_PREFIX, ChromaLease
from xmrt.kb.fusion import DEFAULT_FUSION, FusionParams
from xmrt.kb.hits import (  # noqa: F401 - Hit, MODEL_KEY and SEARCH_MODES are imported from here too
    CHUNK_GEN_KEY,
    GEN_KEY,
    HNSW_CONFIG,
    MODEL_KEY,
    RECONCILE_SECONDS,
    SEARCH_MODES,
    TOMBSTONES,
    WRITE_WAIT,
    Hit,
    _chunks,
    validate_collection_name,
)
from xmrt.kb.index_search import _Search
from xmrt.kb.index_writes import _Writes
from xmrt.kb.lexical import BM25Index

log = logging.getLogger(__name__)


class KnowledgeIndex(_Writes, _Search):
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

    def as_langchain_vectorstore(self):
        """This collection as a LangChain ``VectorStore`` (``langchain_chroma.Chroma``), for reading.

        See :mod:`xmrt.kb.langchain_store`: dense search and retrievers over the same chunks, with this index's
        embedding model; writes raise (ingest keeps the BM25 index in step).
        """
        from xmrt.kb.langchain_store import knowledge_vectorstore

        return knowledge_vectorstore(self, self._client)

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
