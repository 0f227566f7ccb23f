r"""A persistent, incrementally updated Okapi BM25 index stored in SQLite: scoring and the reader's caches.

The SQLite file (its tables, transactions and writes) is :class:`xmrt.kb.bm25_store.BM25Store`; an index is that
store plus the reader here.

Scoring is Okapi BM25 with ``k1 = 1.2`` and ``b = 0.75`` (the Robertson/Lucene defaults) and the
non-negative Lucene idf ``ln(1 + (N - df + 0.5) / (df + 0.5))``. A query term that occurs twice counts twice.

Tokenizer (``TOKENIZER_SPEC``): NFKC-normalise, split on Unicode word characters (``\w+``: letters of any
script, digits, underscore), split snake_case and camelCase identifiers into their words (``getHTTPResponse``
-> ``get http response``), lowercase. No stopword removal and no stemming: on the measured datasets removing
stopwords lowered hybrid quality and stemming (which would need a new dependency) did not raise it; see
BENCHMARKS.md, "Knowledge base: retrieval". Identifier splitting lifted BM25 on a code-search set from 0.315 to
0.44 nDCG@10.

The in-process reader caches the document lengths and the id mapping, and reloads them when the generation
number in ``meta`` changes (another process, or this one, wrote to the index). It also caches posting lists
(up to ``CACHE_POSTINGS`` postings, least recently used first out): each term row carries the generation of
its last change, so a cached list is reused exactly as long as that term's postings are unchanged.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter, OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xmrt.kb.bm25_store import SCHEMA_VERSION, BM25Store  # noqa: F401 - imported from here too
from xmrt.kb.tokens import DEFAULT_TOKENIZER, TOKENIZER_SPEC, Tokenizer  # noqa: F401 - imported from here too

#: Okapi BM25 term-frequency saturation.
K1 = 1.2
#: Okapi BM25 length normalisation.
B = 0.75

#: Postings kept in the in-memory cache of posting lists (about 12 bytes each).
CACHE_POSTINGS = 4_000_000


class BM25Index(BM25Store):
    """An Okapi BM25 inverted index in one SQLite file, updated in place.

    Args:
        path: Directory holding the index (created when missing).
        tokenizer: How texts become terms. Opening an index built with another tokenizer empties it
            (``needs_rebuild`` is then True until the caller re-adds the documents).
        k1: BM25 term-frequency saturation.
        b: BM25 length normalisation.
    """

    def __init__(self, path: Path, tokenizer: Tokenizer = DEFAULT_TOKENIZER, k1: float = K1, b: float = B) -> None:
        self.k1 = k1
        self.b = b
        super().__init__(path, tokenizer)
        self._cache_generation: int | None = None
        self._lengths = np.zeros(0, dtype=np.float32)
        self._doc_ids: list[str | None] = []
        self._id_to_doc: dict[str, int] = {}
        self._n_docs = 0
        self._avgdl = 0.0
        self._norm = np.zeros(0, dtype=np.float32)
        self._postings: OrderedDict[int, tuple[int, np.ndarray, np.ndarray]] = OrderedDict()
        self._cached_postings = 0

    # -- reads -----------------------------------------------------------------------------------------------

    def _refresh(self, cur: sqlite3.Cursor) -> None:
        """Reload the cached lengths and id mapping if the index changed (call inside a read transaction)."""
        generation = int(self._meta(cur, "generation") or 0)
        if generation == self._cache_generation:
            return
        rows = cur.execute("SELECT doc, id, length FROM docs").fetchall()
        total = int(self._meta(cur, "total_len") or 0)
        size = (max(r[0] for r in rows) + 1) if rows else 0
        lengths = np.zeros(size, dtype=np.float32)
        doc_ids: list[str | None] = [None] * size
        for doc, doc_id, length in rows:
            lengths[doc] = length
            doc_ids[doc] = doc_id
        self._lengths = lengths
        self._doc_ids = doc_ids
        self._id_to_doc = {doc_id: doc for doc, doc_id, _ in rows}
        self._n_docs = len(rows)
        self._avgdl = total / len(rows) if rows else 0.0
        self._norm = (self.k1 * (1.0 - self.b + self.b * lengths / max(self._avgdl, 1e-9))).astype(np.float32)
        self._cache_generation = generation

    def _posting_list(self, cur: sqlite3.Cursor, term_id: int, gen: int) -> tuple[np.ndarray, np.ndarray]:
        """One term's postings as arrays, from the cache when the term has not changed since it was loaded."""
        cached = self._postings.get(term_id)
        if cached is not None and cached[0] == gen:
            self._postings.move_to_end(term_id)
            return cached[1], cached[2]
        rows = cur.execute("SELECT doc, tf FROM postings WHERE term_id = ?", (term_id,)).fetchall()
        arr = np.array(rows, dtype=np.int64).reshape(-1, 2)
        docs, tf = arr[:, 0].copy(), arr[:, 1].astype(np.float32)
        if cached is not None:
            self._cached_postings -= len(cached[1])
        self._postings[term_id] = (gen, docs, tf)
        self._cached_postings += len(docs)
        while self._cached_postings > CACHE_POSTINGS and len(self._postings) > 1:
            _, (_, old_docs, _) = self._postings.popitem(last=False)
            self._cached_postings -= len(old_docs)
        return docs, tf

    def score_all(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """BM25 scores of every document matching at least one query term.

        Returns:
            ``(docs, scores)``: internal document numbers and their scores (unsorted, float32).
        """
        terms = Counter(self.tokenizer(query))
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN")  # one snapshot: cached lengths, vocabulary and postings agree
            try:
                self._refresh(cur)
                if not terms or not self._n_docs:
                    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
                marks = ",".join("?" * len(terms))
                vocab = cur.execute(f"SELECT term, term_id, df, gen FROM terms WHERE term IN ({marks})", list(terms))
                scores = np.zeros(len(self._lengths), dtype=np.float32)
                touched = np.zeros(len(self._lengths), dtype=bool)
                n = self._n_docs
                norm = self._norm
                for term, term_id, df, gen in vocab.fetchall():
                    docs, tf = self._posting_list(cur, term_id, gen)
                    if not len(docs):
                        continue
                    idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
                    scores[docs] += terms[term] * idf * tf * (self.k1 + 1.0) / (tf + norm[docs])
                    touched[docs] = True
            finally:
                cur.execute("COMMIT")
                cur.close()
            hit = np.flatnonzero(touched)
            return hit, scores[hit]

    def search(self, query: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` best documents for ``query`` as ``(id, score)``, best first."""
        docs, scores = self.score_all(query)
        return self.rank(docs, scores, k)

    def rank(self, docs: np.ndarray, scores: np.ndarray, k: int | None = None) -> list[tuple[str, float]]:
        """Sort ``score_all`` output, best first (ties by document number), and map to ids."""
        if k is not None and 0 < k < len(docs):
            part = np.argpartition(-scores, k - 1)[:k]
            docs, scores = docs[part], scores[part]
        order = np.lexsort((docs, -scores))
        with self._lock:
            names = self._doc_ids
            return [(names[d], float(s)) for d, s in zip(docs[order], scores[order], strict=True) if names[d]]

    def scores_for(self, query: str, ids: Sequence[str]) -> dict[str, float]:
        """BM25 scores of particular documents (0.0 for a document without any query term)."""
        docs, scores = self.score_all(query)
        by_doc = dict(zip(docs.tolist(), scores.tolist(), strict=True))
        with self._lock:
            lookup = self._id_to_doc
            return {i: float(by_doc.get(lookup.get(i, -1), 0.0)) for i in ids}

    def score_text(self, query: str, text: str) -> float:
        """The BM25 score ``text`` would have as a document of this index (its statistics, not changed)."""
        terms = Counter(self.tokenizer(query))
        doc = Counter(self.tokenizer(text))
        length = sum(doc.values())
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN")
            try:
                self._refresh(cur)
                n, avgdl = self._n_docs, self._avgdl
                wanted = [t for t in terms if t in doc]
                dfs = {}
                if wanted:
                    marks = ",".join("?" * len(wanted))
                    dfs = dict(cur.execute(f"SELECT term, df FROM terms WHERE term IN ({marks})", wanted).fetchall())
            finally:
                cur.execute("COMMIT")
                cur.close()
        if not n:
            return 0.0
        norm = self.k1 * (1.0 - self.b + self.b * length / max(avgdl, 1e-9))
        score = 0.0
        for term, qtf in terms.items():
            tf = doc.get(term, 0)
            if tf:
                df = dfs.get(term, 0)
                score += qtf * math.log(1.0 + (n - df + 0.5) / (df + 0.5)) * tf * (self.k1 + 1.0) / (tf + norm)
        return score
