"""Search latency benchmark: p50/p95 per mode over a synthetic collection of N chunks, query embedding included.

The collection is synthesised from a BEIR corpus (by default ``$XMRT_EVAL_DIR/msmarco``, 5,000 passages) so that
50,000 chunks need no 50,000 embeddings:

* copy 0 of every passage is the passage itself with its real embedding (from the evaluator's cache);
* copy ``c > 0`` drops about 15% of the passage's words at random (seeded) and appends the token ``variant<c>``,
  so every chunk has distinct text and BM25 statistics stay realistic; its vector is the passage's embedding plus
  Gaussian noise (sigma 0.1 / sqrt(dim), a cosine of about 0.99 to the original), renormalised, so the HNSW graph
  holds N distinct points.

Every chunk has the ingester's metadata fields (``source``, ``file_type``, ``kind``, ``chunk_index``...). The
collection lives in a temporary data directory that is deleted afterwards. Each timed search embeds its query
with the configured model, searches with ``k=10`` and materialises hits with text and metadata, as the tools do.
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import eval_dir
from xmrt.config import Config
from xmrt.errors import UserError
from xmrt.kb.beir import load_beir
from xmrt.kb.index import SEARCH_MODES, KnowledgeIndex


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    pos = (len(ordered) - 1) * pct / 100.0
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def synthesize(texts: list[str], vectors: np.ndarray, n: int, seed: int = 7) -> tuple[list[str], np.ndarray]:
    """N chunk texts and vectors made from the base passages as described in the module docstring."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    base = len(texts)
    dim = vectors.shape[1]
    out_texts: list[str] = []
    out_vecs = np.empty((n, dim), dtype=np.float32)
    for i in range(n):
        j, copy = i % base, i // base
        if copy == 0:
            out_texts.append(texts[j])
            out_vecs[i] = vectors[j]
            continue
        words = texts[j].split()
        kept = [w for w in words if rng.random() > 0.15] or words[:1]
        out_texts.append(" ".join(kept) + f" variant{copy}")
        vec = vectors[j] + nrng.normal(0.0, 0.1 / np.sqrt(dim), dim).astype(np.float32)
        out_vecs[i] = vec / np.linalg.norm(vec)
    return out_texts, out_vecs


def bench_search(
    config: Config,
    chunks: int = 50_000,
    *,
    dataset_dir: str | Path | None = None,
    rounds: int = 3,
    progress: bool = True,
    on_status: Callable[[str], None] | None = None,
) -> dict:
    """Build a synthetic N-chunk collection and time ``search`` per mode.

    Returns:
        ``{"chunks", "queries", "rounds", "build_seconds", "modes": {mode: {"p50_ms", "p95_ms", "mean_ms",
        "first_round_p50_ms"}}, "embed_query_p50_ms", "fusion"}``.
    """
    from xmrt.kb.evaluate import corpus_embeddings

    status = on_status or (lambda _msg: None)
    if chunks < 1:
        raise UserError(f"--chunks {chunks} must be at least 1")
    if rounds < 1:
        raise UserError(f"--rounds {rounds} must be at least 1")
    dataset = load_beir(dataset_dir or eval_dir("msmarco"))
    queries = [dataset.queries[q] for q in dataset.queries]
    scratch = Path(tempfile.mkdtemp(prefix="xmrt-bench-search-"))
    bench_config = config.with_overrides(data_dir=scratch, vector_store_dir=scratch / "chroma", chroma_host=None)
    try:
        # The embedding cache lives in the real data dir, so repeated benchmarks do not re-embed the corpus.
        vectors, _ = corpus_embeddings(config, dataset, progress=progress)
        texts, vecs = synthesize(dataset.corpus_texts, vectors, chunks)
        index = KnowledgeIndex(bench_config, "bench-search")
        began = time.perf_counter()
        batch = 5000
        for start in range(0, chunks, batch):
            end = min(start + batch, chunks)
            ids = [f"chunk-{i}" for i in range(start, end)]
            base = len(dataset.corpus_ids)
            metas = [
                {"source": f"bench/copy{i // base}/{dataset.corpus_ids[i % base]}.txt", "file_type": "txt",
                 "kind": "text", "chunk_index": i // base, "start_line": 1, "language": "text"}
                for i in range(start, end)
            ]
            index.upsert(ids, texts[start:end], metas, embeddings=vecs[start:end])
            status(f"built {end}/{chunks} chunks")
        build_seconds = time.perf_counter() - began

        warm = queries[: min(5, len(queries))]
        for mode in SEARCH_MODES:  # load the model and the collection, not the measured queries' posting lists
            for q in warm:
                index.search(q + " warmup", k=10, mode=mode)
        embed_times = []
        for q in queries:
            t0 = time.perf_counter()
            index.embed_query(q)
            embed_times.append(1000.0 * (time.perf_counter() - t0))
        modes: dict[str, dict[str, float]] = {}
        for mode in SEARCH_MODES:
            times: list[float] = []
            first: list[float] = []
            for r in range(rounds):
                for q in queries:
                    t0 = time.perf_counter()
                    index.search(q, k=10, mode=mode)
                    ms = 1000.0 * (time.perf_counter() - t0)
                    times.append(ms)
                    if r == 0:
                        first.append(ms)
            modes[mode] = {
                "p50_ms": round(_percentile(times, 50), 2),
                "p95_ms": round(_percentile(times, 95), 2),
                "mean_ms": round(statistics.fmean(times), 2),
                "first_round_p50_ms": round(_percentile(first, 50), 2),
            }
        count = index.count()
        index.drop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        from xmrt.kb.chroma import clear_client_cache

        clear_client_cache()
    return {
        "chunks": count,
        "queries": len(queries),
        "rounds": rounds,
        "build_seconds": round(build_seconds, 1),
        "embed_query_p50_ms": round(_percentile(embed_times, 50), 2),
        "modes": modes,
        "fusion": {"method": index.fusion_params().method, "dense_weight": index.fusion_params().weight},
    }
