"""Retrieval nodes and helpers: search a knowledge-base collection and keep only the relevant passages.

Hybrid scores are fused per query (the best hit always scores 1.0), so they say nothing about whether anything
relevant was found. Relevance is therefore decided on each hit's cosine similarity to the query, against a
threshold computed per query::

    threshold = max(min_similarity, relevance_ratio * best_similarity)

The floor rejects everything when nothing is close to the question (the graph then says so instead of
guessing); the ratio drops the tail of weak hits when there is a strong one. Both are Context fields.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from typing import Any

from langgraph.runtime import Runtime

from graphs.context import RagContext, RatContext, context_of
from nodes.citations import number_passages
from xmrt.config import Config, get_config
from xmrt.errors import UserError

log = logging.getLogger(__name__)


def kb_config(ctx: Any) -> Config:
    """The configuration a run uses: the Context's ``config`` when set, else the process configuration."""
    config = getattr(ctx, "config", None)
    return config if isinstance(config, Config) else get_config()


@functools.lru_cache(maxsize=8)
def _cached_index(config: Config, collection: str):
    from xmrt.kb.index import KnowledgeIndex

    return KnowledgeIndex(config, collection)


def open_index(config: Config, collection: str):
    """The collection's index, cached per process; None when the collection does not exist.

    A cached index whose BM25 side is out of step with Chroma (another process ingested since) is reopened,
    which re-synchronizes it.
    """
    from xmrt.kb.index import KnowledgeIndex

    if collection not in KnowledgeIndex.list_collections(config):
        return None
    index = _cached_index(config, collection)
    try:
        stale = index.count() != index.bm25.count()
    except Exception:  # noqa: BLE001 - a dropped and re-created collection: reopen
        stale = True
    if stale:
        index.close()
        _cached_index.cache_clear()
        index = _cached_index(config, collection)
    return index


def missing_collection_message(config: Config, collection: str) -> str:
    """One line naming the missing collection and the ones that exist."""
    from xmrt.kb.index import KnowledgeIndex

    names = KnowledgeIndex.list_collections(config)
    available = ", ".join(names) if names else "none; ingest something first with `xmrt ingest PATH`"
    return f"no knowledge-base collection named {collection!r} (available: {available})"


def relevance_threshold(similarities: Sequence[float], min_similarity: float, relevance_ratio: float) -> float:
    """The per-query cut: ``max(min_similarity, relevance_ratio * best)``; ``min_similarity`` when empty."""
    best = max(similarities, default=0.0)
    return max(min_similarity, relevance_ratio * best)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def _passage(hit, similarity: float) -> dict[str, Any]:
    meta = hit.metadata or {}
    return {
        "id": hit.id,
        "path": meta.get("source") or hit.id,
        "start_line": meta.get("start_line"),
        "kind": meta.get("kind"),
        "text": hit.text,
        "score": round(float(hit.score), 4),
        "similarity": round(float(similarity), 4),
    }


def search_passages(
    config: Config,
    collection: str,
    query: str,
    *,
    k: int,
    mode: str = "hybrid",
    min_similarity: float = 0.2,
    relevance_ratio: float = 0.5,
) -> dict[str, Any]:
    """Search and keep the relevant hits.

    Returns:
        ``{"query", "passages" (relevant, numbered from 1), "candidates" (how many hits the search gave),
        "best_similarity", "threshold", "error" (None, or why nothing could be searched)}``.

    Raises:
        UserError: Bad search settings (mode, k).
    """
    info: dict[str, Any] = {"query": query, "passages": [], "candidates": 0, "best_similarity": 0.0,
                            "threshold": min_similarity, "error": None}
    if not query.strip():
        info["error"] = "empty query"
        return info
    index = open_index(config, collection)
    if index is None:
        info["error"] = missing_collection_message(config, collection)
        return info
    qvec = index.embed_query(query)
    try:
        hits = index.search(query, k=k, mode=mode, query_embedding=qvec)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a stale cached handle: reopen once
        log.warning("search failed (%s); reopening the collection", exc)
        _cached_index.cache_clear()
        index = open_index(config, collection)
        if index is None:
            info["error"] = missing_collection_message(config, collection)
            return info
        hits = index.search(query, k=k, mode=mode, query_embedding=qvec)
    missing = [h for h in hits if h.dense_score is None]
    computed = dict(zip((h.id for h in missing), index.embed_documents([h.text for h in missing]), strict=True))
    sims = [h.dense_score if h.dense_score is not None else _cosine(qvec, computed[h.id]) for h in hits]
    threshold = relevance_threshold(sims, min_similarity, relevance_ratio)
    kept = [_passage(h, s) for h, s in zip(hits, sims, strict=True) if s >= threshold]
    info.update(passages=number_passages(kept), candidates=len(hits), best_similarity=round(max(sims, default=0.0), 4),
                threshold=round(threshold, 4))
    return info


def similarities(config: Config, query: str, texts: Sequence[str]) -> list[float]:
    """Cosine similarity of each text to the query, with the configured embeddings."""
    if not texts:
        return []
    from xmrt.llm.embeddings import get_embeddings

    model = get_embeddings(config)
    qvec = model.embed_query(query)
    return [_cosine(qvec, vec) for vec in model.embed_documents(list(texts))]


def keep_relevant(config: Config, query: str, passages: Sequence[dict[str, Any]], min_similarity: float,
                  relevance_ratio: float, keep_paths: str = "") -> list[dict[str, Any]]:
    """The passages relevant to the query (the same per-query threshold as a search), renumbered from 1.

    Passages whose path occurs in ``keep_paths`` (e.g. the answer that names them) are kept regardless.
    """
    sims = similarities(config, query, [p.get("text", "") for p in passages])
    threshold = relevance_threshold(sims, min_similarity, relevance_ratio)
    kept = [{**p, "similarity": round(s, 4)} for p, s in zip(passages, sims, strict=True)
            if s >= threshold or (p.get("path") and p["path"] in keep_paths)]
    return number_passages(kept)


def retrieve(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """RAG: search the collection for the (standalone) question; keep the passages above the threshold."""
    ctx = context_of(runtime, RagContext)
    query = state.get("standalone_question") or state.get("question") or ""
    info = search_passages(kb_config(ctx), ctx.collection, query, k=ctx.k, mode=ctx.search_mode,
                           min_similarity=ctx.min_similarity, relevance_ratio=ctx.relevance_ratio)
    passages = info.pop("passages")
    log.debug("retrieved %d relevant of %d hits for %r", len(passages), info["candidates"], query[:60])
    return {"passages": passages, "retrieval": info}


def retrieve_for_step(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """RAT: search with the question plus the step under revision."""
    ctx = context_of(runtime, RatContext)
    steps = state["steps"]
    index = state.get("reflection_count", 0) % len(steps)
    query = f"{state['question']} {steps[index]}".strip()
    info = search_passages(kb_config(ctx), ctx.collection, query, k=ctx.k, mode=ctx.search_mode,
                           min_similarity=ctx.min_similarity, relevance_ratio=ctx.relevance_ratio)
    passages = info.pop("passages")
    return {"step_passages": passages, "step_retrieval": info}
