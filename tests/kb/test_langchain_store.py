"""The knowledge base as a LangChain vector store (langchain_chroma.Chroma) on a real Chroma store, no mocks."""

from __future__ import annotations

import pytest
from langchain_chroma import Chroma
from langchain_core.documents import Document
from langchain_core.vectorstores import VectorStore

from xmrt.errors import UserError
from xmrt.kb.index import KnowledgeIndex
from xmrt.kb.ingest import ingest_path

FILES = {
    "treasury.md": "The DAO treasury holds 1,200 XMR. Spending from the treasury needs a 3-of-5 multisig approval.",
    "mining.md": "Mobile miners contribute hash rate from phones. Mining rewards are paid out every day.",
    "garden.txt": "The cat sat on the mat and watched the birds in the garden.",
}


@pytest.fixture
def ingested(config, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in FILES.items():
        (docs / name).write_text(text + "\n")
    summary = ingest_path(config, str(docs), collection="lc-docs", progress=False)
    assert summary["added"] == len(FILES)
    index = KnowledgeIndex(config, "lc-docs")
    yield index
    index.close()


def test_the_ingested_chunks_come_back_through_langchain_chroma(ingested):
    store = ingested.as_langchain_vectorstore()
    assert isinstance(store, Chroma) and isinstance(store, VectorStore)
    held = ingested.get()
    by_id = dict(zip(held["ids"], held["documents"], strict=True))

    docs = store.similarity_search("Who approves spending from the treasury?", k=2)
    assert len(docs) == 2 and all(isinstance(d, Document) for d in docs)
    assert all(d.id in by_id and d.page_content == by_id[d.id] for d in docs)
    assert docs[0].metadata["source"].endswith("treasury.md") and "multisig" in docs[0].page_content

    # the same ranking and scores as the index's own semantic search (same collection, same embedding model)
    query = "phones mining hash rate"
    hits = ingested.search(query, k=3, mode="semantic")
    scored = store.similarity_search_with_score(query, k=3)  # cosine distances
    assert [d.id for d, _ in scored] == [h.id for h in hits]
    assert [1.0 - distance for _, distance in scored] == pytest.approx([h.score for h in hits], abs=1e-4)

    retrieved = store.as_retriever(search_kwargs={"k": 1}).invoke("a cat watching birds")
    assert [d.metadata["source"] for d in retrieved][0].endswith("garden.txt")
    mmr = store.max_marginal_relevance_search("treasury multisig", k=2, fetch_k=3)
    assert {d.id for d in mmr} <= set(by_id) and len(mmr) == 2


def test_the_langchain_view_is_read_only(ingested):
    store = ingested.as_langchain_vectorstore()
    before = ingested.count()
    for write in (lambda: store.add_texts(["injected"]), lambda: store.add_documents([Document("injected")]),
                  lambda: store.delete(ingested.get()["ids"][:1]), store.delete_collection, store.reset_collection):
        with pytest.raises(UserError, match="read-only through LangChain"):
            write()
    assert ingested.count() == before and ingested.bm25.count() == before
