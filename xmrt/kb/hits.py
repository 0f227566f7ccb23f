"""What a knowledge-base search returns (:class:`Hit`), collection names and filters, and the index's settings."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from xmrt.errors import UserError
from xmrt.kb.coordination import RESERVED_PREFIX

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
