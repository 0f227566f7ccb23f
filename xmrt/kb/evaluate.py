"""Retrieval evaluation on BEIR-format datasets: nDCG@10, recall@10, recall@100 and MRR@10 per search mode.

``evaluate_retrieval(config, directory)`` loads the dataset (:mod:`xmrt.kb.beir`), ingests the corpus into a
throw-away collection of a :class:`~xmrt.kb.index.KnowledgeIndex` (deleted afterwards, also on error), runs every
judged query through each search mode with the query embedding computed as in production, and averages the
metrics over the judged queries (those with at least one passage of relevance > 0).

Metric definitions (``k`` = cut-off):

* nDCG@k: gain ``2^rel - 1`` discounted by ``log2(rank + 1)``, divided by the same sum for the ideal ordering of
  all judged passages. This is the exponential-gain form; with it the MiniLM dense baseline on
  ``shared/eval/msmarco`` is the reference 0.704. (trec_eval's linear gain gives higher numbers on graded sets.)
* recall@k: share of the relevant (rel > 0) passages found in the top k.
* MRR@k: reciprocal rank of the first relevant passage in the top k, 0 if none.

As in BEIR, a passage whose id equals the query id is never counted as retrieved.

Corpus embeddings are cached under ``<data_dir>/kb/eval-cache/`` in a file named after the embedding model id and
the SHA-256 of ``corpus.jsonl``, so evaluating the same corpus again with the same model embeds nothing. Any
change to the corpus file changes the hash and so the cache entry; delete the directory to reclaim the space.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from xmrt.config import Config
from xmrt.errors import UserError
from xmrt.kb.beir import BeirDataset, load_beir
from xmrt.kb.index import SEARCH_MODES, KnowledgeIndex

log = logging.getLogger(__name__)

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
#: Depth of every ranking that is evaluated (enough for recall@100).
RUN_DEPTH = 100
EMBED_CHUNK = 256


# -- metrics ------------------------------------------------------------------------------------------------------


def ndcg_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with exponential gain ``2^rel - 1``; 0.0 when the query has no relevant passage."""
    dcg = sum((2.0 ** qrels.get(doc, 0) - 1.0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((r for r in qrels.values() if r > 0), reverse=True)[:k]
    idcg = sum((2.0**r - 1.0) / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Share of relevant passages (rel > 0) within the top k; 0.0 when there is none."""
    relevant = {doc for doc, rel in qrels.items() if rel > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int = 10) -> float:
    """Reciprocal rank of the first relevant passage within the top k, else 0.0."""
    for i, doc in enumerate(ranked[:k]):
        if qrels.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def score_run(run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """Average every metric of METRICS over the queries of ``run`` (query id -> ranked passage ids)."""
    if not run:
        return dict.fromkeys(METRICS, 0.0)
    totals = dict.fromkeys(METRICS, 0.0)
    for qid, ranked in run.items():
        rels = qrels.get(qid, {})
        totals["ndcg@10"] += ndcg_at_k(ranked, rels, 10)
        totals["recall@10"] += recall_at_k(ranked, rels, 10)
        totals["recall@100"] += recall_at_k(ranked, rels, 100)
        totals["mrr@10"] += mrr_at_k(ranked, rels, 10)
    return {name: value / len(run) for name, value in totals.items()}


# -- corpus embeddings cache ------------------------------------------------------------------------------------


def embedding_cache_path(config: Config, model_id: str, corpus_sha256: str) -> Path:
    """Where the corpus embeddings for (model id, corpus file hash) are cached."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)
    return Path(config.data_dir) / "kb" / "eval-cache" / f"{safe}-{corpus_sha256[:32]}.npy"


def corpus_embeddings(config: Config, dataset: BeirDataset, *, progress: bool = True) -> tuple[np.ndarray, bool]:
    """The corpus embeddings, from the cache or computed (with a progress bar on stderr) and then cached.

    Returns:
        ``(matrix, cached)``: one float32 row per passage in corpus order, and whether it came from the cache.
    """
    from xmrt.llm.embeddings import embedding_cache_id, get_embeddings

    path = embedding_cache_path(config, embedding_cache_id(config), dataset.corpus_sha256)
    if path.is_file():
        try:
            matrix = np.load(path, allow_pickle=False)
            if matrix.ndim == 2 and matrix.shape[0] == len(dataset.corpus_ids):
                return matrix.astype(np.float32, copy=False), True
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable embedding cache %s: %s", path, exc)
    from tqdm import tqdm

    model = get_embeddings(config)
    rows: list[list[float]] = []
    texts = dataset.corpus_texts
    with tqdm(total=len(texts), desc="embedding corpus", unit="passage", file=sys.stderr, disable=not progress,
              dynamic_ncols=True) as bar:
        for start in range(0, len(texts), EMBED_CHUNK):
            batch = texts[start : start + EMBED_CHUNK]
            rows.extend(model.embed_documents(batch))
            bar.update(len(batch))
    matrix = np.asarray(rows, dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        np.save(handle, matrix, allow_pickle=False)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache entry
    return matrix, False


# -- evaluation ----------------------------------------------------------------------------------------------------


def _modes(mode: str | Sequence[str]) -> list[str]:
    modes = list(SEARCH_MODES) if mode == "all" else [mode] if isinstance(mode, str) else list(mode)
    for m in modes:
        if m not in SEARCH_MODES:
            raise UserError(f"mode {m!r} must be one of {', '.join(SEARCH_MODES)} or 'all'")
    return modes


def ingest_dataset(index: KnowledgeIndex, dataset: BeirDataset, embeddings: np.ndarray, batch: int = 2000) -> None:
    """Upsert a BEIR corpus with precomputed embeddings into ``index``."""
    for start in range(0, len(dataset.corpus_ids), batch):
        end = start + batch
        ids = dataset.corpus_ids[start:end]
        index.upsert(
            ids,
            dataset.corpus_texts[start:end],
            [{"source": f"beir:{doc_id}", "file_type": "txt", "kind": "text", "chunk_index": 0} for doc_id in ids],
            embeddings=embeddings[start:end],
        )


def run_queries(
    index: KnowledgeIndex, dataset: BeirDataset, query_ids: Sequence[str], mode: str, depth: int = RUN_DEPTH
) -> tuple[dict[str, list[str]], list[float]]:
    """Search every query (embedding it, as in production); returns the run and per-query latencies in seconds."""
    run: dict[str, list[str]] = {}
    latencies: list[float] = []
    for qid in query_ids:
        start = time.perf_counter()
        hits = index.search(dataset.queries[qid], k=depth, mode=mode)
        latencies.append(time.perf_counter() - start)
        run[qid] = [h.id for h in hits if h.id != qid]
    return run, latencies


def evaluate_retrieval(
    config: Config,
    directory: str | Path,
    mode: str | Sequence[str] = "all",
    *,
    collection: str | None = None,
    limit_queries: int | None = None,
    progress: bool = True,
    on_status: Callable[[str], None] | None = None,
) -> dict:
    """Evaluate the knowledge index's search modes on a BEIR directory.

    Args:
        config: Runtime configuration (embedding model, Chroma and data locations).
        directory: The BEIR dataset directory.
        mode: ``semantic``, ``bm25``, ``hybrid``, ``all`` or a list of modes.
        collection: Name of the throw-away collection (default: a fresh random ``eval-…`` name). It must not exist.
        limit_queries: Evaluate only the first N judged queries.
        progress: Show a tqdm progress bar on stderr while embedding.
        on_status: Called with short status lines (loading, embedding, ingesting...).

    Returns:
        ``{"dataset", "passages", "queries", "embedding_model", "embeddings_cached", "fusion", "modes":
        {mode: {"ndcg@10", "recall@10", "recall@100", "mrr@10", "latency_ms_mean"}}, "seconds"}``.

    Raises:
        UserError: Bad directory or file contents, bad mode, or an existing collection name.
    """
    status = on_status or (lambda _msg: None)
    modes = _modes(mode)
    if limit_queries is not None and limit_queries < 1:
        raise UserError(f"--limit-queries {limit_queries} must be at least 1")
    began = time.perf_counter()
    dataset = load_beir(directory)
    query_ids = dataset.judged_queries[:limit_queries] if limit_queries else dataset.judged_queries
    status(f"{dataset.directory}: {len(dataset.corpus_ids)} passages, {len(query_ids)} judged queries")

    name = collection or f"eval-{uuid.uuid4().hex[:12]}"
    if name in KnowledgeIndex.list_collections(config):
        raise UserError(f"collection {name!r} already exists; the evaluator needs a throw-away collection name")
    index = KnowledgeIndex(config, name)
    try:
        embeddings, cached = corpus_embeddings(config, dataset, progress=progress)
        status("corpus embeddings " + ("loaded from cache" if cached else "computed and cached"))
        ingest_dataset(index, dataset, embeddings)
        status(f"ingested into throw-away collection {name!r}")
        if "hybrid" in modes and index.calibrate_fusion() is not None:
            status(f"hybrid dense weight calibrated on the corpus itself: {index.fusion_params().weight}")
        results: dict[str, dict[str, float]] = {}
        for m in modes:
            run, latencies = run_queries(index, dataset, query_ids, m)
            scores = score_run(run, dataset.qrels)
            scores["latency_ms_mean"] = 1000.0 * float(np.mean(latencies)) if latencies else 0.0
            results[m] = scores
    finally:
        index.drop()
    fusion = index.fusion_params()
    return {
        "dataset": str(dataset.directory),
        "passages": len(dataset.corpus_ids),
        "queries": len(query_ids),
        "embedding_model": index.embedding_model_id,
        "embeddings_cached": cached,
        "fusion": {"method": fusion.method, "dense_weight": fusion.weight},
        "modes": results,
        "seconds": round(time.perf_counter() - began, 2),
    }


def format_results(result: dict) -> str:
    """A human-readable table of an ``evaluate_retrieval`` result."""
    lines = [
        f"dataset: {result['dataset']}  ({result['passages']} passages, {result['queries']} judged queries, "
        f"model {result['embedding_model']})",
        f"{'mode':<10}" + "".join(f"{name:>12}" for name in METRICS) + f"{'ms/query':>11}",
    ]
    for mode, scores in result["modes"].items():
        lines.append(
            f"{mode:<10}" + "".join(f"{scores[name]:>12.4f}" for name in METRICS)
            + f"{scores['latency_ms_mean']:>11.1f}"
        )
    fusion = result["fusion"]
    lines.append(f"hybrid fusion: {fusion['method']}, dense weight {fusion['dense_weight']}; {result['seconds']} s")
    return "\n".join(lines)


def to_json(result: dict) -> str:
    """One-line JSON of a result."""
    return json.dumps(result, sort_keys=True)
