"""Writes of a :class:`~xmrt.kb.index.KnowledgeIndex`: embedding, upsert, delete, drop."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Sequence

from xmrt.errors import UserError
from xmrt.kb.hits import CHUNK_GEN_KEY, EMBED_BATCH, _chunks, _clean_metadata, _one_torch_thread


class _Writes:
    """Embedding and changing a collection; every change takes the write lease and moves the lexical generation."""

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
