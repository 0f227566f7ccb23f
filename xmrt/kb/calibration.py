"""The hybrid fusion weight, calibrated per collection from the collection itself (no labelled queries).

Which retriever deserves more trust depends on the text: on entity descriptions dense retrieval is far ahead of
BM25, on code or identifiers lexical matches carry more. A weight chosen on one evaluation set does not carry
over (MS MARCO's 0.8 lost to dense alone on a DBpedia-entity subset), so the weight is learned for each
collection from pseudo-queries made of its own chunks, the inverse-cloze task (Lee et al., 2019):

1. Sample up to ``samples`` chunks (seeded; :func:`calibration_samples`: one per 25 chunks, 40 to 200). From
   each, cut out one *prose segment* (a sentence, or a comment line of code, of 4 to 40 words, mostly plain
   words: :func:`is_prose`): the segment is the query, the rest of the chunk is the one relevant passage. The rest is
   embedded, and scored by BM25 with the collection's statistics, as if it were a chunk of the collection; the
   original chunk is removed from both candidate lists, so the query's words are not found verbatim.
2. For every dense weight ``w`` in 0, 0.1, ..., 1 the two candidate lists (100 each, as in a real hybrid search)
   are fused exactly as :meth:`~xmrt.kb.index.KnowledgeIndex.search` fuses them, and the reciprocal rank of the
   relevant passage within the top 10 is recorded.
3. The chosen weight is the mean of the weights in [``MIN_WEIGHT``, 1] whose MRR@10 is within one standard
   error of the best one there (a flat optimum gives a central weight, not an arbitrary end of the plateau).
   The floor of 0.5 is a prior, not a fit: see ``MIN_WEIGHT``.

The result is stored in the collection's metadata (``fusion_weight``, ``fusion_calibrated_chunks``), so every
machine sharing the collection uses it, and recomputed when the collection has grown or shrunk by a quarter
since. A collection of fewer than ``MIN_CHUNKS`` chunks keeps the neutral weight 0.5.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from xmrt.kb.fusion import FusionParams, fuse

log = logging.getLogger(__name__)

WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))
SAMPLES = 200
MIN_CHUNKS = 50
NEUTRAL_WEIGHT = 0.5
#: The dense weight is chosen within [MIN_WEIGHT, 1]: BM25 may equal dense, never outweigh it. Inverse-cloze
#: pseudo-queries favour BM25 (a sentence shares rare words with the rest of its own chunk more than a real
#: query does with its answer): on all four measured sets the calibrated optimum lay below the weight that was
#: best on the real queries (msmarco 0.65 vs 0.8, entities 0.75 vs 0.7-0.8, code 0.3-0.45 vs 0.7), and on code
#: an unbounded choice put the hybrid 0.06 below dense.
MIN_WEIGHT = 0.5
#: Recalibrate when the chunk count moved by this share since the last calibration.
DRIFT = 0.25
CANDIDATES = 100
_SEGMENT = re.compile(r"(?<=[.!?])\s+|\n+")


def calibration_samples(total_chunks: int) -> int:
    """Pseudo-queries for a collection of ``total_chunks``: one per 25 chunks, 40 to SAMPLES.

    Each costs about one chunk embedding (the rest of its chunk), so a calibration adds at most about 4% to the
    embedding work of the ingest that triggers it (5% at the 40-query floor).
    """
    return max(40, min(SAMPLES, total_chunks // 25))


@dataclass(frozen=True)
class PseudoQuery:
    """One inverse-cloze pseudo-query: the chunk it was cut from, the cut segment and the rest."""

    chunk_id: str
    query: str
    rest: str


_WORD = re.compile(r"""^["'(]*[A-Za-z][a-z'-]*[)"',.;:!?]*$""")
_COMMENT = re.compile(r"""^\s*(#+|//+|/\*+|\*+|--|;+|"{3}|'{3})\s*""")


_CODE_SIGNS = re.compile(r"[=\[\]{}]|\(\)|->|:$")


def is_prose(segment: str) -> bool:
    """Whether a segment reads like a natural-language query: 4..40 words, at least 80% of them plain words.

    Code lines (``for key, value in items.items():``) fail; comments pass once their marker is stripped. People
    ask a knowledge base in words, so pseudo-queries are made of words: a line of code as the query rewards BM25
    for matching identifiers that real queries do not contain (measured: on the code set, pseudo-queries made of
    any line chose a dense weight of 0.3, and the hybrid fell 0.06 below dense).
    """
    text = _COMMENT.sub("", segment).strip()
    if _CODE_SIGNS.search(text):
        return False
    tokens = text.split()
    if not 4 <= len(tokens) <= 40:
        return False
    words = sum(1 for t in tokens if _WORD.match(t))
    return words >= 4 and words >= 0.8 * len(tokens)


def pseudo_query(chunk_id: str, text: str, rng: random.Random) -> PseudoQuery | None:
    """Cut one prose segment out of ``text``; None when the chunk has no such segment, or too little rest."""
    segments = [s.strip() for s in _SEGMENT.split(text) if s and s.strip()]
    if len(segments) < 2:
        return None
    usable = [i for i, s in enumerate(segments) if is_prose(s)]
    if not usable:
        return None
    cut = rng.choice(usable)
    rest = " ".join(s for i, s in enumerate(segments) if i != cut)
    if len(rest.split()) < 8:
        return None
    return PseudoQuery(chunk_id, _COMMENT.sub("", segments[cut]), rest)


def _insert(ranked: list[tuple[str, float]], doc_id: str, score: float, depth: int) -> list[tuple[str, float]]:
    """Put ``(doc_id, score)`` into a best-first list if it makes the top ``depth``."""
    out = [x for x in ranked]
    if len(out) >= depth and score <= out[-1][1]:
        return out
    pos = next((i for i, (_, s) in enumerate(out) if score > s), len(out))
    out.insert(pos, (doc_id, score))
    return out[:depth]


@dataclass
class Calibration:
    """The outcome: chosen weight, MRR@10 per weight, and how many pseudo-queries it rests on."""

    weight: float
    mrr: dict[float, float]
    queries: int
    chunks: int

    def to_metadata(self) -> dict:
        """The collection-metadata fields recording this calibration."""
        return {"fusion_weight": self.weight, "fusion_calibrated_chunks": self.chunks,
                "fusion_calibration": json.dumps({"queries": self.queries,
                                                  "mrr": {str(w): round(v, 4) for w, v in self.mrr.items()}})}


def calibrate(
    chunks: Sequence[tuple[str, str]],
    *,
    embed: Callable[[list[str]], np.ndarray],
    dense_search: Callable[[np.ndarray, int], list[tuple[str, float]]],
    lexical_search: Callable[[str, int], list[tuple[str, float]]],
    lexical_score: Callable[[str, str], float],
    total_chunks: int,
    samples: int = SAMPLES,
    seed: int = 0,
    method: str = "max",
) -> Calibration:
    """Learn the dense weight of the hybrid fusion from pseudo-queries cut from ``chunks`` (see module docstring).

    Args:
        chunks: ``(id, text)`` of sampled chunks of the collection (more than ``samples`` is fine).
        embed: Texts to a matrix of L2-normalised vectors (the collection's model).
        dense_search: A query vector to the ``n`` best ``(id, cosine)`` of the collection.
        lexical_search: A query to the ``n`` best ``(id, BM25)`` of the collection (positive scores only).
        lexical_score: BM25 score of a query against a text, with the collection's statistics.
        total_chunks: The collection's size (recorded, to know when to recalibrate).
        samples: Pseudo-queries to make at most.
        seed: Sampling seed.
        method: The fusion method whose weight is calibrated.
    """
    rng = random.Random(seed)
    pool = list(chunks)
    rng.shuffle(pool)
    pqs: list[PseudoQuery] = []
    for chunk_id, text in pool:
        pq = pseudo_query(chunk_id, text or "", rng)
        if pq is not None:
            pqs.append(pq)
            if len(pqs) >= samples:
                break
    if len(pqs) < 10:
        return Calibration(NEUTRAL_WEIGHT, {}, len(pqs), total_chunks)
    qvecs = embed([p.query for p in pqs])
    rvecs = embed([p.rest for p in pqs])
    rr = np.zeros((len(pqs), len(WEIGHTS)))
    target = "\x00pseudo-relevant"
    for n, (pq, qv, rv) in enumerate(zip(pqs, qvecs, rvecs, strict=True)):
        dense = [x for x in dense_search(qv, CANDIDATES + 1) if x[0] != pq.chunk_id][:CANDIDATES]
        lexical = [x for x in lexical_search(pq.query, CANDIDATES + 1) if x[0] != pq.chunk_id][:CANDIDATES]
        dense = _insert(dense, target, float(np.dot(qv, rv)), CANDIDATES)
        score = lexical_score(pq.query, pq.rest)
        if score > 0:
            lexical = _insert(lexical, target, score, CANDIDATES)
        for j, w in enumerate(WEIGHTS):
            fused = fuse(dense, lexical, FusionParams(method=method, weight=w), depth=CANDIDATES) if lexical else dense
            for rank, (doc_id, _) in enumerate(fused[:10], 1):
                if doc_id == target:
                    rr[n, j] = 1.0 / rank
                    break
    means = rr.mean(axis=0)
    allowed = [j for j, w in enumerate(WEIGHTS) if w >= MIN_WEIGHT]
    best = max(allowed, key=lambda j: means[j])
    stderr = rr[:, best].std(ddof=1) / np.sqrt(len(pqs)) if len(pqs) > 1 else 0.0
    near = [WEIGHTS[j] for j in allowed if means[j] >= means[best] - stderr]
    weight = round(float(np.mean(near)), 2)
    return Calibration(weight, {w: float(m) for w, m in zip(WEIGHTS, means, strict=True)}, len(pqs), total_chunks)
