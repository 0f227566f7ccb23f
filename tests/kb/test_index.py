"""KnowledgeIndex and the BM25 index on a real Chroma store with the real MiniLM embeddings (no mocks)."""

from __future__ import annotations

import math
import sqlite3

import pytest

from xmrt.errors import UserError
from xmrt.kb.chroma import chroma_client
from xmrt.kb.fusion import FusionParams, fuse
from xmrt.kb.index import Hit, KnowledgeIndex, validate_collection_name
from xmrt.kb.lexical import BM25Index, Tokenizer

DOCS = {
    "redis": ("Redis is an in-memory key-value store, often used as a cache and message broker.",
              {"source": "/repo/docs/redis.md", "file_type": "md", "kind": "text"}),
    "chroma": ("Chroma is a vector database that stores embeddings for semantic search.",
               {"source": "/repo/docs/chroma.md", "file_type": "md", "kind": "text"}),
    "bm25": ("Okapi BM25 ranks documents by term frequency and inverse document frequency.",
             {"source": "/repo/notes/bm25.txt", "file_type": "txt", "kind": "text"}),
    "code": ("def get_embeddings(config):\n    return load_model(config.embedding_model)",
             {"source": "/repo/src/embeddings.py", "file_type": "py", "kind": "code"}),
    "sig": ("def get_embeddings(config)  # Return the configured embedding model",
            {"source": "/repo/src/embeddings.py", "file_type": "py", "kind": "signature"}),
    "cat": ("The cat sat on the mat and watched the birds in the garden.",
            {"source": "/repo/misc/cat.txt", "file_type": "txt", "kind": "text"}),
}


def _fill(index: KnowledgeIndex) -> None:
    ids = list(DOCS)
    index.upsert(ids, [DOCS[i][0] for i in ids], [DOCS[i][1] for i in ids])


@pytest.fixture
def index(config):
    idx = KnowledgeIndex(config, "test-index")
    _fill(idx)
    yield idx
    idx.drop()


# -- collection names and models -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ab", "-abc", "abc-", "has space", "x" * 513, "a..b", "caf\u00e9s"])
def test_bad_collection_names_are_refused(config, name):
    with pytest.raises(UserError, match="collection name"):
        KnowledgeIndex(config, name)


def test_valid_collection_names():
    for name in ("abc", "docs_v2", "my.collection-1", "A" * 512):
        assert validate_collection_name(name) == name


def test_embedding_model_is_recorded_and_checked(config, index):
    meta = chroma_client(config).get_collection("test-index").metadata
    assert meta["embedding_model"] == index.embedding_model_id == "huggingface:all-MiniLM-L6-v2+onnx-int8"
    other = config.with_overrides(embedding_model="text-embedding-3-small", embedding_provider="openai")
    with pytest.raises(UserError, match="built with embedding model"):
        KnowledgeIndex(other, "test-index")


def test_list_collections(config, index):
    KnowledgeIndex(config, "second-one")
    assert {"test-index", "second-one"} <= set(KnowledgeIndex.list_collections(config))


# -- search modes -------------------------------------------------------------------------------------


def test_modes_return_hits_with_metadata_and_scores(index):
    for mode in ("semantic", "bm25", "hybrid"):
        hits = index.search("vector database for embeddings", k=3, mode=mode)
        assert hits and isinstance(hits[0], Hit)
        assert hits[0].id == "chroma", mode
        assert hits[0].metadata["source"] == "/repo/docs/chroma.md"
        assert hits[0].text.startswith("Chroma is")
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    semantic = index.search("vector database", k=2, mode="semantic")
    assert semantic[0].dense_score == semantic[0].score and -1.0 <= semantic[0].score <= 1.0
    hybrid = index.search("vector database", k=2, mode="hybrid")
    assert hybrid[0].dense_score is not None and hybrid[0].bm25_score is not None


def test_bad_mode_and_k(index):
    with pytest.raises(UserError, match="search mode"):
        index.search("x", mode="fuzzy")
    with pytest.raises(UserError, match="k="):
        index.search("x", k=0)


def test_bm25_finds_split_identifiers(index):
    hits = index.search("embeddings get", k=2, mode="bm25")
    assert {h.id for h in hits} == {"code", "sig"}


def test_fusion_weight_really_acts(index):
    query = "inverse document frequency ranking"
    dense = [(h.id, h.score) for h in index.search(query, k=6, mode="semantic")]
    lexical = [(h.id, h.score) for h in index.search(query, k=6, mode="bm25")]
    assert fuse(dense, lexical, FusionParams(weight=1.0))[0][0] == dense[0][0]
    assert fuse(dense, lexical, FusionParams(weight=0.0))[0][0] == lexical[0][0]
    only_dense = [i for i, _ in fuse(dense, lexical, FusionParams(weight=1.0))][: len(dense)]
    assert only_dense == [i for i, _ in dense]
    # A document only BM25 found climbs as its weight grows.
    a = [(i, 1.0 - 0.1 * r) for r, i in enumerate(["d1", "d2", "d3"])]
    b = [("d3", 9.0), ("d1", 1.0)]
    low = [i for i, _ in fuse(a, b, FusionParams(weight=0.9))]
    high = [i for i, _ in fuse(a, b, FusionParams(weight=0.3))]
    assert low.index("d3") > high.index("d3") == 0
    rrf = fuse(a, b, FusionParams(method="rrf", weight=0.5, rrf_k=60))
    assert rrf[0][0] == "d1" and math.isclose(rrf[0][1], 0.5 / 61 + 0.5 / 62)


# -- filters -------------------------------------------------------------------------------------


def test_filters_combine_with_every_mode(index):
    for mode in ("semantic", "bm25", "hybrid"):
        md = index.search("store search rank", k=10, mode=mode, file_type="md")
        assert md and {h.metadata["file_type"] for h in md} == {"md"}, mode
        docs = index.search("store search rank", k=10, mode=mode, source_glob="/repo/docs/*")
        assert docs and all(h.metadata["source"].startswith("/repo/docs/") for h in docs), mode
        sigs = index.search("embedding model", k=10, mode=mode, kind="signature")
        assert [h.id for h in sigs] == ["sig"], mode
        exact = index.search("embedding", k=10, mode=mode, source_glob="/repo/src/embeddings.py", kind="code")
        assert [h.id for h in exact] == ["code"], mode
        none = index.search("cat", k=10, mode=mode, file_type="rs")
        assert none == [], mode
        where = index.search("cat garden", k=10, mode=mode, where={"source": {"$in": ["/repo/misc/cat.txt"]}})
        assert [h.id for h in where] == ["cat"], mode


def test_glob_filter_widens_the_candidate_set(config):
    idx = KnowledgeIndex(config, "glob-wide")
    try:
        ids = [f"n{i}" for i in range(40)]
        texts = [f"note number {i} about gardening and plants" for i in range(40)]
        metas = [{"source": f"/notes/{i}.txt", "file_type": "txt", "kind": "text"} for i in range(40)]
        texts.append("a lonely paragraph on distributed databases")
        ids.append("far")
        metas.append({"source": "/far/away.md", "file_type": "md", "kind": "text"})
        idx.upsert(ids, texts, metas)
        for mode in ("semantic", "bm25", "hybrid"):
            hits = idx.search("gardening plants", k=3, mode=mode, source_glob="/far/*")
            assert [h.id for h in hits] == (["far"] if mode != "bm25" else []), mode
    finally:
        idx.drop()


# -- MMR -------------------------------------------------------------------------------------


def test_mmr_diversifies(config):
    idx = KnowledgeIndex(config, "mmr-test")
    try:
        texts = [
            "Python is a programming language.",
            "Python is a popular programming language.",
            "Python is a widely used programming language.",
            "Snakes such as pythons are reptiles found in Asia and Africa.",
        ]
        idx.upsert(["p1", "p2", "p3", "snake"], texts, [{"source": f"/t/{i}"} for i in range(4)])
        plain = [h.id for h in idx.search("python", k=2, mode="semantic")]
        diverse = [h.id for h in idx.search("python", k=2, mode="semantic", mmr=True, mmr_lambda=0.3)]
        assert "snake" not in plain and "snake" in diverse
        assert len(idx.search("python", k=3, mode="hybrid", mmr=True)) == 3
    finally:
        idx.drop()


# -- writes, get, delete, persistence ---------------------------------------------------------------------------


def test_upsert_replaces_and_delete_removes_from_both_indexes(config, index):
    assert index.count() == len(DOCS) == index.bm25.count()
    index.upsert(["cat"], ["A dog chased a frisbee across the park."], [{"source": "/repo/misc/cat.txt"}])
    assert index.count() == len(DOCS) == index.bm25.count()
    assert index.search("frisbee", k=1, mode="bm25")[0].id == "cat"
    assert all(h.id != "cat" for h in index.search("mat birds garden", k=5, mode="bm25"))
    index.delete(["cat", "unknown-id"])
    assert index.count() == len(DOCS) - 1 == index.bm25.count()
    assert index.search("frisbee", k=3, mode="bm25") == []
    got = index.get(ids=["redis", "chroma", "gone"], include_embeddings=True)
    assert sorted(got["ids"]) == ["chroma", "redis"] and len(got["embeddings"][0]) == 384
    assert index.get(where={"file_type": "py"})["ids"] and len(index.get(limit=2)["ids"]) == 2


def test_precomputed_embeddings_are_used(config):
    idx = KnowledgeIndex(config, "precomputed")
    try:
        vecs = idx.embed_documents(["alpha text", "beta text"])
        idx.upsert(["a", "b"], ["alpha text", "beta text"], [None, {"k": None}], embeddings=vecs)
        got = idx.get(ids=["a"], include_embeddings=True)
        assert got["embeddings"][0] == pytest.approx(vecs[0], abs=1e-6)
        assert idx.search("alpha", k=1, mode="semantic")[0].id == "a"
    finally:
        idx.drop()


def test_bm25_persists_and_is_not_rebuilt_on_reopen(config, index):
    path = index.bm25.path / BM25Index.FILENAME
    before = index.search("cache broker", k=3, mode="bm25")
    index.close()
    with sqlite3.connect(path) as db:
        doc_rows = db.execute("SELECT doc, id FROM docs ORDER BY doc").fetchall()
    reopened = KnowledgeIndex(config, "test-index")
    after = reopened.search("cache broker", k=3, mode="bm25")
    assert [(h.id, h.score) for h in after] == [(h.id, h.score) for h in before]
    with sqlite3.connect(path) as db:  # same internal rows: the index was reused, not rebuilt
        assert db.execute("SELECT doc, id FROM docs ORDER BY doc").fetchall() == doc_rows
    reopened.drop()
    assert not path.exists()


def test_bm25_rebuilds_from_chroma_when_missing(config, index):
    index.close()
    path = index.bm25.path
    for file in path.iterdir():
        file.unlink()
    reopened = KnowledgeIndex(config, "test-index")
    assert reopened.bm25.count() == len(DOCS)
    assert reopened.search("cache broker", k=1, mode="bm25")[0].id == "redis"
    reopened.drop()


# -- the BM25 index on its own -----------------------------------------------------------------------------------


def _okapi(query, docs, target, k1=1.2, b=0.75, tok=Tokenizer()):
    toks = {i: tok(t) for i, t in docs.items()}
    n = len(docs)
    avgdl = sum(len(t) for t in toks.values()) / n
    score = 0.0
    for term in tok(query):
        df = sum(term in t for t in toks.values())
        if not df:
            continue
        tf = toks[target].count(term)
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(toks[target]) / avgdl))
    return score


def test_bm25_scores_match_okapi_formula_and_update_incrementally(tmp_path):
    docs = {"a": "red apples and green apples", "b": "green pears", "c": "a red car", "d": "blue sky"}
    idx = BM25Index(tmp_path / "bm")
    idx.add(["a", "b"], [docs["a"], docs["b"]])
    idx.add(["c", "d"], [docs["c"], docs["d"]])  # a second batch: only its own postings are written
    ranked = dict(idx.search("red apples", k=10))
    for doc_id in ("a", "c"):
        assert ranked[doc_id] == pytest.approx(_okapi("red apples", docs, doc_id), rel=1e-5)
    assert set(ranked) == {"a", "c"}
    assert idx.document_frequency("red") == 2
    idx.delete(["c"])
    del docs["c"]
    assert idx.document_frequency("red") == 1 and idx.count() == 3
    assert dict(idx.search("red apples"))["a"] == pytest.approx(_okapi("red apples", docs, "a"), rel=1e-5)
    idx.add(["a"], ["completely new words"])  # replace
    docs["a"] = "completely new words"
    assert idx.search("apples") == [] and idx.count() == 3
    assert idx.document_frequency("apples") == 0
    idx.close()
    again = BM25Index(tmp_path / "bm")
    assert not again.needs_rebuild and again.count() == 3
    assert dict(again.search("green"))["b"] == pytest.approx(_okapi("green", docs, "b"), rel=1e-5)


def test_bm25_failed_transaction_leaves_index_intact(tmp_path):
    idx = BM25Index(tmp_path / "bm")
    idx.add(["a"], ["alpha beta"])
    with pytest.raises(ValueError):
        idx.add(["b", "c"], ["gamma"])  # mismatched lengths: rejected before writing
    with pytest.raises(sqlite3.IntegrityError), idx._transaction() as cur:  # a crash mid-update
        cur.execute("INSERT INTO docs(id, length, terms) VALUES ('z', 1, x'')")
        cur.execute("INSERT INTO docs(id, length, terms) VALUES ('z', 1, x'')")
    assert idx.count() == 1 and idx.ids() == ["a"] and idx.search("alpha")[0][0] == "a"


def test_bm25_tokenizer_change_triggers_rebuild(tmp_path):
    BM25Index(tmp_path / "bm").add(["a"], ["alpha"])
    other = BM25Index(tmp_path / "bm", Tokenizer(stopwords=True))
    assert other.needs_rebuild and other.count() == 0


def test_tokenizer():
    assert Tokenizer()("getHTTPResponse snake_case __init__ Café 42") == [
        "get", "http", "response", "snake", "case", "init", "café", "42"]
    assert Tokenizer(stopwords=True)("the cat and the hat") == ["cat", "hat"]
