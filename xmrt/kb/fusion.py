"""Fusing a dense (semantic) ranking with a BM25 ranking.

Two methods, both weighted so that the dense weight ``w`` really acts (``w = 1`` is dense only, ``w = 0`` BM25
only):

* ``"rrf"``: weighted reciprocal-rank fusion, ``w / (k + rank_dense) + (1 - w) / (k + rank_bm25)``.
* ``"convex"``: a convex combination of per-query min-max normalised scores,
  ``w * norm(cosine) + (1 - w) * norm(bm25)``, where each list is normalised by its own best and
  ``norm_depth``-th best score (so the top of each list maps to 1 and its ``norm_depth``-th entry to 0).
  A candidate missing from one list gets its real score in that retriever when the caller supplies it,
  else the lowest score of that list.

The defaults (method, weight, constants) were chosen from measurements on held-out queries; see
BENCHMARKS.md, section "Knowledge base: retrieval".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

FUSION_METHODS = ("convex", "rrf")


@dataclass(frozen=True)
class FusionParams:
    """How to fuse: ``method`` in FUSION_METHODS, dense ``weight`` in [0, 1], and per-method constants."""

    method: str = "convex"
    weight: float = 0.75
    rrf_k: int = 60
    norm_depth: int = 10

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise ValueError(f"fusion method {self.method!r} must be one of {', '.join(FUSION_METHODS)}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"fusion weight {self.weight} must be within [0, 1]")


DEFAULT_FUSION = FusionParams()


def _minmax(scores: Sequence[float], depth: int) -> tuple[float, float]:
    ordered = sorted(scores, reverse=True)
    hi = ordered[0]
    lo = ordered[min(depth, len(ordered)) - 1]
    return lo, hi


def fuse(
    dense: Sequence[tuple[str, float]],
    lexical: Sequence[tuple[str, float]],
    params: FusionParams = DEFAULT_FUSION,
    *,
    dense_extra: Mapping[str, float] | None = None,
    lexical_extra: Mapping[str, float] | None = None,
) -> list[tuple[str, float]]:
    """Fuse two rankings into one, best first.

    Args:
        dense: ``(id, cosine similarity)`` best first.
        lexical: ``(id, BM25 score)`` best first (only documents with a positive score).
        params: Method and weight.
        dense_extra: Cosine similarities of candidates absent from ``dense`` (optional, convex only).
        lexical_extra: BM25 scores of candidates absent from ``lexical`` (optional, convex only).

    Returns:
        ``(id, fused score)`` for the union of both lists, best first; ties keep the dense order first.
    """
    order: dict[str, int] = {}
    for doc_id, _ in dense:
        order.setdefault(doc_id, len(order))
    for doc_id, _ in lexical:
        order.setdefault(doc_id, len(order))
    w = params.weight
    fused: dict[str, float] = dict.fromkeys(order, 0.0)
    if params.method == "rrf":
        for rank, (doc_id, _) in enumerate(dense, 1):
            fused[doc_id] += w / (params.rrf_k + rank)
        for rank, (doc_id, _) in enumerate(lexical, 1):
            fused[doc_id] += (1.0 - w) / (params.rrf_k + rank)
    else:
        for items, extra, weight in ((dense, dense_extra, w), (lexical, lexical_extra, 1.0 - w)):
            if not items or weight == 0.0:
                continue
            scores = dict(items)
            lo, hi = _minmax(list(scores.values()), params.norm_depth)
            floor = min(scores.values())
            span = hi - lo if hi > lo else 1.0
            for doc_id in fused:
                raw = scores.get(doc_id)
                if raw is None and extra is not None:
                    raw = extra.get(doc_id)
                if raw is None:
                    raw = floor
                fused[doc_id] += weight * (raw - lo) / span
    return sorted(fused.items(), key=lambda item: (-item[1], order[item[0]]))
