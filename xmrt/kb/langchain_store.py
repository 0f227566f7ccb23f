"""The knowledge base as a LangChain vector store: ``langchain_chroma.Chroma`` over a knowledge index's collection.

For LangChain code that takes a ``VectorStore`` or a retriever (chains, agents, ``create_retriever_tool``)::

    from xmrt.kb.index import KnowledgeIndex

    store = KnowledgeIndex(config, "dao-docs").as_langchain_vectorstore()
    store.similarity_search("Who can spend from the treasury?", k=4)
    retriever = store.as_retriever(search_type="mmr", search_kwargs={"k": 4})

It reads the chunks that ingest wrote, through the index's own Chroma client and collection, and embeds queries
with the index's model (the collection's recorded one), so its dense results are the index's ``semantic`` search.
Documents carry the chunk id and the chunk metadata as stored (with the ``xmrt_lexgen`` stamp that
:class:`~xmrt.kb.index.Hit` hides). Relevance scores are cosine similarities, as the index's. Hybrid (BM25 +
dense) search stays :meth:`KnowledgeIndex.search`.

It is read-only. Writes go through ingest (:mod:`xmrt.kb.ingest`), which stamps each chunk for the BM25 index
and the other machines sharing the store, under the collection's write lease; a write here would bypass all that,
so ``add_texts``/``add_documents``, ``add_images``, ``update_documents``, ``delete`` and ``delete_collection``/
``reset_collection`` raise :class:`~xmrt.errors.UserError`.
"""

from __future__ import annotations

from typing import Any, NoReturn

from langchain_chroma import Chroma
from langchain_core.embeddings import Embeddings

from xmrt.errors import UserError


class IndexEmbeddings(Embeddings):
    """A knowledge index's embedding model as LangChain ``Embeddings`` (the model the collection was built with)."""

    def __init__(self, index: Any) -> None:
        self.index = index

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed texts, in batches."""
        return self.index.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        """Embed one query."""
        return self.index.embed_query(text)


class KnowledgeVectorStore(Chroma):
    """``langchain_chroma.Chroma`` on a knowledge-base collection, for reading (see the module docstring)."""

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise UserError(f"the knowledge-base collection {self._collection_name!r} is read-only through LangChain: "
                        "add or remove documents with `xmrt ingest` (or the ingest graph)")

    add_texts = add_images = update_document = update_documents = delete = _read_only
    delete_collection = reset_collection = _read_only


def knowledge_vectorstore(index: Any, client: Any) -> KnowledgeVectorStore:
    """The LangChain vector store over ``index``'s collection, on the index's Chroma ``client``."""
    return KnowledgeVectorStore(client=client, collection_name=index.name,
                                embedding_function=IndexEmbeddings(index), create_collection_if_not_exists=False)
