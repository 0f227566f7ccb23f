"""The measurement behind the hybrid fusion default (run it with ``xmrt bench fusion [--json]``).

1. On MS MARCO (``$XMRT_EVAL_DIR/msmarco``) the judged queries are split deterministically (by SHA-1 of the
   query id) into a tuning half (22) and a held-out half (21). Every method of :mod:`xmrt.kb.fusion`
   (max-normalised convex, min-max convex at depth 10 and 100, weighted RRF k=60) is scored at dense weights
   0.50..0.95 on the tuning half; the best (method, weight) is reported on the held-out half and on all queries.
2. The same selection is repeated on 500 random 22/21 splits, to show how the procedure itself generalises.
3. The chosen setting is checked, untuned, on two datasets built here:

   * ``p2p``: passage-to-passage retrieval on the MS MARCO corpus. For each original query up to three
     grade-3 passages are drawn; the first sentence of each becomes a query whose relevant passages are the other
     passages judged for the original query (graded); the source passages are removed from the corpus.
   * ``code``: code search over this interpreter's standard library. Queries are the first sentence of a public
     function's docstring, the corpus is the functions' source with the docstring removed (one relevant each).

The retrieval is exact (brute-force cosine over cached corpus embeddings, and the real BM25 index), with 100
candidates per retriever, exactly as :class:`~xmrt.kb.index.KnowledgeIndex` fuses them.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
import sysconfig
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from xmrt.config import Config
from xmrt.kb.beir import BeirDataset, load_beir
from xmrt.kb.evaluate import corpus_embeddings, ndcg_at_k
from xmrt.kb.fusion import FusionParams, fuse
from xmrt.kb.lexical import BM25Index

CANDIDATES = 100
WEIGHTS = [round(0.5 + 0.05 * i, 2) for i in range(10)]
METHODS = [("max", 100), ("minmax", 10), ("minmax", 100), ("rrf", 60)]


def _write_beir(root: Path, corpus, queries, qrels) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for doc_id, text in corpus:
            f.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
    with (root / "queries.jsonl").open("w", encoding="utf-8") as f:
        for qid, text in queries:
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with (root / "qrels" / "test.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, rels in qrels.items():
            for doc_id, score in rels.items():
                f.write(f"{qid}\t{doc_id}\t{score}\n")
    return root


def build_p2p(msmarco: BeirDataset, root: Path, seed: int = 13) -> Path:
    """The passage-to-passage dataset described in the module docstring."""
    rng = random.Random(seed)
    text = dict(zip(msmarco.corpus_ids, msmarco.corpus_texts, strict=True))
    sources: set[str] = set()
    queries, qrels = [], {}
    for qid, rels in sorted(msmarco.qrels.items()):
        best = sorted(d for d, s in rels.items() if s == 3 and d in text)
        rng.shuffle(best)
        for doc_id in best[:3]:
            sentence = re.split(r"(?<=[.!?])\s", text[doc_id].strip())[0]
            if len(sentence.split()) < 6:
                continue
            queries.append((f"{qid}-{doc_id}", sentence))
            sources.add(doc_id)
            qrels[f"{qid}-{doc_id}"] = {d: s for d, s in rels.items() if d != doc_id}
    qrels = {q: {d: s for d, s in rels.items() if d not in sources} for q, rels in qrels.items()}
    corpus = [(d, text[d]) for d in msmarco.corpus_ids if d not in sources]
    return _write_beir(root, corpus, queries, qrels)


def build_code(root: Path, n_corpus: int = 2500, n_queries: int = 300, seed: int = 13) -> Path:
    """The code-search dataset described in the module docstring."""
    rng = random.Random(seed)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    funcs, seen_ids, seen_text = [], set(), set()
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib).as_posix()
        if any(part in rel for part in ("test", "idlelib", "lib2to3", "site-packages")):
            continue
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = source.splitlines()
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name.startswith("_"):
                continue
            doc = ast.get_docstring(node)
            if not doc or len(node.body) < 2:
                continue
            summary = re.split(r"(?<=[.!?])\s", doc.strip().split("\n\n")[0].replace("\n", " ").strip())[0]
            first = node.body[0]
            code = "\n".join(lines[node.lineno - 1 : first.lineno - 1] + lines[first.end_lineno : node.end_lineno])
            fid = f"{rel}::{node.name}"
            if len(summary.split()) < 5 or not 80 <= len(code) <= 2500 or fid in seen_ids:
                continue
            if summary.lower() in seen_text:
                continue
            seen_ids.add(fid)
            seen_text.add(summary.lower())
            funcs.append((fid, summary, code))
    rng.shuffle(funcs)
    corpus = funcs[:n_corpus]
    picked = rng.sample(corpus, min(n_queries, len(corpus)))
    queries = [(f"q{i}", s) for i, (_, s, _) in enumerate(picked)]
    qrels = {f"q{i}": {fid: 1} for i, (fid, _, _) in enumerate(picked)}
    return _write_beir(root, [(fid, code) for fid, _, code in corpus], queries, qrels)


def _seed_cache(config: Config, subset: BeirDataset, full: BeirDataset) -> None:
    """Write the embedding cache entry of ``subset`` from the cached embeddings of ``full`` (same texts)."""
    from xmrt.kb.evaluate import embedding_cache_path
    from xmrt.llm.embeddings import embedding_cache_id

    path = embedding_cache_path(config, embedding_cache_id(config), subset.corpus_sha256)
    if path.is_file():
        return
    matrix, _ = corpus_embeddings(config, full, progress=False)
    row = {d: i for i, d in enumerate(full.corpus_ids)}
    text = dict(zip(full.corpus_ids, full.corpus_texts, strict=True))
    if any(text.get(d) != t for d, t in zip(subset.corpus_ids, subset.corpus_texts, strict=True)):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, matrix[[row[d] for d in subset.corpus_ids]], allow_pickle=False)


def per_query_table(config: Config, dataset: BeirDataset, scratch: Path) -> dict[str, dict]:
    """nDCG@10 of dense, BM25 and every (method, weight) for every judged query."""
    from xmrt.llm.embeddings import get_embeddings

    matrix, _ = corpus_embeddings(config, dataset, progress=True)
    model = get_embeddings(config)
    bm25 = BM25Index(scratch / hashlib.sha1(str(dataset.directory).encode()).hexdigest()[:12])
    bm25.clear()
    bm25.add(dataset.corpus_ids, dataset.corpus_texts)
    pos = {d: i for i, d in enumerate(dataset.corpus_ids)}
    table = {}
    for qid in dataset.judged_queries:
        query = dataset.queries[qid]
        sims = matrix @ np.asarray(model.embed_query(query), dtype=np.float32)
        top = np.argsort(-sims)[:CANDIDATES]
        dense = [(dataset.corpus_ids[i], float(sims[i])) for i in top]
        lexical = [x for x in bm25.search(query, CANDIDATES) if x[1] > 0]
        dense_ids, lexical_ids = {d for d, _ in dense}, {d for d, _ in lexical}
        lexical_extra = bm25.scores_for(query, sorted(dense_ids - lexical_ids))
        dense_extra = {d: float(sims[pos[d]]) for d in lexical_ids - dense_ids}
        rels = dataset.qrels[qid]
        row = {"dense": ndcg_at_k([d for d, _ in dense], rels), "bm25": ndcg_at_k([d for d, _ in lexical], rels)}
        for method, const in METHODS:
            for w in WEIGHTS:
                params = FusionParams(method=method, weight=w, rrf_k=const if method == "rrf" else 60,
                                      norm_depth=const if method != "rrf" else 100)
                fused = fuse(dense, lexical, params, dense_extra=dense_extra, lexical_extra=lexical_extra)
                row[f"{method}-{const}@{w}"] = ndcg_at_k([d for d, _ in fused], rels)
        table[qid] = row
    bm25.close()
    return table


def _mean(table: dict, queries, key: str) -> float:
    return float(np.mean([table[q][key] for q in queries]))


def study(config: Config, msmarco_dir: Path) -> dict:
    """Run the whole study; returns every figure."""
    msmarco = load_beir(msmarco_dir)
    with tempfile.TemporaryDirectory(prefix="xmrt-fusion-study-") as tmp:
        scratch = Path(tmp)
        table = per_query_table(config, msmarco, scratch / "bm25")
        keys = [f"{m}-{c}@{w}" for m, c in METHODS for w in WEIGHTS]
        queries = sorted(table, key=lambda q: hashlib.sha1(q.encode()).hexdigest())
        half = len(queries) // 2 + 1
        tune, held = queries[:half], queries[half:]
        chosen = max(keys, key=lambda k: _mean(table, tune, k))
        report = {"chosen": chosen, "msmarco": {}}
        for name, subset in (("tune", tune), ("held_out", held), ("all", queries)):
            report["msmarco"][name] = {
                "queries": len(subset), "dense": _mean(table, subset, "dense"), "bm25": _mean(table, subset, "bm25"),
                "rrf_unweighted": _mean(table, subset, "rrf-60@0.5"), "chosen": _mean(table, subset, chosen),
            }
        report["curves"] = {
            f"{m}-{c}": {part: [round(_mean(table, sub, f"{m}-{c}@{w}"), 4) for w in WEIGHTS]
                         for part, sub in (("tune", tune), ("held_out", held))}
            for m, c in METHODS
        }
        rng = np.random.default_rng(0)
        wins, gains, picks = 0, [], Counter()
        for _ in range(500):
            perm = list(rng.permutation(queries))
            a, b = perm[: len(perm) // 2 + 1], perm[len(perm) // 2 + 1 :]
            pick = max(keys, key=lambda k: _mean(table, a, k))
            picks[pick.split("@")[0]] += 1
            gains.append(_mean(table, b, pick) - _mean(table, b, "dense"))
            wins += gains[-1] >= 0
        report["random_splits"] = {"splits": 500, "mean_heldout_gain_over_dense": float(np.mean(gains)),
                                   "share_not_worse_than_dense": wins / 500, "methods_picked": dict(picks)}
        for name, builder in (("p2p", lambda root: build_p2p(msmarco, root)), ("code", build_code)):
            ds = load_beir(builder(scratch / name))
            if name == "p2p":  # same passages as MS MARCO: reuse their embeddings instead of embedding again
                _seed_cache(config, ds, msmarco)
            t = per_query_table(config, ds, scratch / "bm25")
            qs = list(t)
            own = max(keys, key=lambda k: _mean(t, qs, k))
            report[name] = {"passages": len(ds.corpus_ids), "queries": len(qs), "dense": _mean(t, qs, "dense"),
                            "bm25": _mean(t, qs, "bm25"), "rrf_unweighted": _mean(t, qs, "rrf-60@0.5"),
                            "chosen": _mean(t, qs, chosen), "own_best": own, "own_best_ndcg": _mean(t, qs, own)}
    return report
