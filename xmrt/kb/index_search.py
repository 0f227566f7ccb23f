"""Reads and search of a :class:`~xmrt.kb.index.KnowledgeIndex`: get, count, the three search modes, MMR."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import numpy as np

from xmrt.errors import UserError
from xmrt.kb.fusion import fuse
from xmrt.kb.hits import (
    _GLOB_CHARS,
    HYBRID_CANDIDATES,
    SEARCH_MODES,
    Hit,
    _chunks,
    _combine_where,
    _query_pool,
    _strip,
)


class _Search:
    """Reading a collection and searching it: semantic, BM25 and hybrid, with filters and MMR."""

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
        if mmr and candidates:
            if qvec is None:  # bm25 ranked the candidates; MMR measures relevance to the query's embedding
                qvec = np.asarray(self.embed_query(query), np.float32)
            hits = self._mmr(candidates, k, mmr_lambda, qvec)
        else:
            hits = candidates[:k]
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

    def _mmr(self, candidates: list[Hit], k: int, lam: float, qvec: Any) -> list[Hit]:
        """The k candidates chosen by maximal marginal relevance (LangChain's) over their stored embeddings."""
        from langchain_core.vectorstores.utils import maximal_marginal_relevance

        got = self._collection.get(ids=[h.id for h in candidates], include=["embeddings"])
        vec_of = {doc_id: np.asarray(v, np.float32) for doc_id, v in zip(got["ids"], got["embeddings"], strict=True)}
        cands = [h for h in candidates if h.id in vec_of]
        if not cands:
            return candidates[:k]
        chosen = maximal_marginal_relevance(np.asarray(qvec, np.float32), [vec_of[h.id] for h in cands],
                                            lambda_mult=lam, k=k)
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
