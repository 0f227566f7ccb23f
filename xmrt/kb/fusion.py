"""Fusing a dense (semantic) ranking with a BM25 ranking.

Every method is weighted: ``weight`` is the dense share, ``1 - weight`` the BM25 share, so ``weight = 1`` is dense
only and ``weight = 0`` BM25 only.

* ``"max"`` (the default): a convex combination of max-normalised scores,
  ``weight * cos / max(cos) + (1 - weight) * bm25 / max(bm25)``, the maxima taken over each retriever's candidate
  list for this query. Both scores have a natural zero (no similarity / no query term), so only the upper end is
  normalised, as in theoretical-min-max normalisation (Bruch et al., "An Analysis of Fusion Functions for Hybrid
  Retrieval", 2023). A query whose lexical evidence is weak does not see it stretched to the full [0, 1] range,
  unlike min-max.
* ``"minmax"``: the same convex combination over min-max normalised scores (per query, each list's best and
  ``norm_depth``-th best score map to 1 and 0).
* ``"rrf"``: weighted reciprocal-rank fusion, ``weight / (rrf_k + rank_dense) + (1 - weight) / (rrf_k + rank_bm25)``.

The score fusions use each candidate's real score in the other retriever when the caller supplies it
(``dense_extra``/``lexical_extra``): the index computes the BM25 score of every dense candidate and the cosine of
every BM25 candidate, so no candidate is scored as if it were absent from one list.

The default method, ``max``, was chosen by measurement (BENCHMARKS.md, "Knowledge base: retrieval"). Its weight
is not a constant: by default (``weight=None``) each collection calibrates it from its own chunks
(:mod:`xmrt.kb.calibration`), since the weight that suits one kind of text (0.8 on MS MARCO) lost to dense
retrieval alone on another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

FUSION_METHODS = ("max", "minmax", "rrf")


@dataclass(frozen=True)
class FusionParams:
    """How to fuse: ``method`` in FUSION_METHODS, dense ``weight`` in [0, 1], and per-method constants.

    ``weight=None`` means "the collection's calibrated weight" (resolved by the index before fusing).
    """

    method: str = "max"
    weight: float | None = 0.8
    rrf_k: int = 60
    norm_depth: int = 100

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise ValueError(f"fusion method {self.method!r} must be one of {', '.join(FUSION_METHODS)}")
        if self.weight is not None and not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"fusion weight {self.weight} must be within [0, 1]")
        if self.rrf_k < 0 or self.norm_depth < 1:
            raise ValueError("rrf_k must be >= 0 and norm_depth >= 1")


#: What the index uses unless told otherwise: ``max`` with the collection's calibrated weight.
DEFAULT_FUSION = FusionParams(weight=None)


def _scale(scores: Sequence[float], method: str, depth: int) -> tuple[float, float]:
    """The (zero, unit) points mapping a list's raw scores to normalised ones."""
    ordered = sorted(scores, reverse=True)
    hi = ordered[0]
    if method == "max":
        return 0.0, hi if hi > 0 else 1.0
    lo = ordered[min(depth, len(ordered)) - 1]
    return lo, (hi - lo) if hi > lo else 1.0


def fuse(
    dense: Sequence[tuple[str, float]],
    lexical: Sequence[tuple[str, float]],
    params: FusionParams = DEFAULT_FUSION,
    *,
    dense_extra: Mapping[str, float] | None = None,
    lexical_extra: Mapping[str, float] | None = None,
    depth: int | None = None,
) -> list[tuple[str, float]]:
    """Fuse two rankings into one, best first.

    Args:
        dense: ``(id, cosine similarity)``, best first.
        lexical: ``(id, BM25 score)``, best first (documents with a positive score).
        params: Method and weight.
        dense_extra: Cosine similarities of candidates absent from ``dense`` (score methods only).
        lexical_extra: BM25 scores of candidates absent from ``lexical`` (score methods only).
        depth: How many candidates each list was asked for. A list shorter than that is complete (every document
            with a positive score is in it), so with ``max`` an absent candidate scores the natural zero, not the
            list's lowest score. Without it a query that matches one document lexically gets no lexical
            evidence at all (every candidate would tie with that document's score).

    Returns:
        ``(id, fused score)`` for the union of both lists, best first; ties keep dense order, then BM25 order.
        A candidate absent from a list, with no extra score, gets that list's lowest score.
    """
    order: dict[str, int] = {}
    for doc_id, _ in dense:
        order.setdefault(doc_id, len(order))
    for doc_id, _ in lexical:
        order.setdefault(doc_id, len(order))
    if params.weight is None:
        raise ValueError("fuse() needs a concrete weight; the index resolves weight=None per collection")
    w = params.weight
    fused: dict[str, float] = dict.fromkeys(order, 0.0)
    if params.method == "rrf":
        for rank, (doc_id, _) in enumerate(dense, 1):
            fused[doc_id] += w / (params.rrf_k + rank)
        for rank, (doc_id, _) in enumerate(lexical, 1):
            fused[doc_id] += (1.0 - w) / (params.rrf_k + rank)
    else:
        for items, extra, share in ((dense, dense_extra, w), (lexical, lexical_extra, 1.0 - w)):
            if not items or share == 0.0:
                continue
            scores = dict(items)
            zero, unit = _scale(list(scores.values()), params.method, params.norm_depth)
            complete = depth is not None and len(items) < depth
            floor = 0.0 if complete and params.method == "max" else min(scores.values())
            for doc_id in fused:
                raw = scores.get(doc_id)
                if raw is None and extra is not None:
                    raw = extra.get(doc_id)
                if raw is None:
                    raw = floor
                fused[doc_id] += share * (raw - zero) / unit
    return sorted(fused.items(), key=lambda item: (-item[1], order[item[0]]))
