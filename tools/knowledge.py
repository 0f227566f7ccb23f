"""Knowledge-base tools: search the knowledge base, search code signatures, list collections.

The tools open the knowledge base lazily on first use (nothing happens at import). Inside a graph, a
``collection`` field on the run's context is used when present, else "default"; the configuration is the
process's (:func:`xmrt.services.config`). :func:`knowledge_tools` builds the same tools bound to an explicit
configuration.

Results are compact JSON: source path, score, position and (shortened) text, so an agent can cite them.
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool, tool
from langgraph.prebuilt import ToolRuntime

from xmrt import services
from xmrt.config import Config
from xmrt.errors import XmrtError

DEFAULT_COLLECTION = "default"
#: Characters of chunk text returned per hit.
MAX_TEXT = 700
MAX_K = 50


def _runtime_collection(runtime: ToolRuntime | None, collection: str | None) -> str:
    if collection:
        return collection
    ctx = getattr(runtime, "context", None) if runtime is not None else None
    return getattr(ctx, "collection", None) or DEFAULT_COLLECTION


def _index(config: Config, collection: str):
    """The collection's index (:func:`xmrt.services.knowledge_index`); an error string when it does not exist."""
    from xmrt.kb.index import KnowledgeIndex

    index = services.knowledge_index(collection, config)
    if index is None:
        available = ", ".join(KnowledgeIndex.list_collections(config)) or "none; ingest something first"
        return f"error: no knowledge-base collection named {collection!r} (available: {available})"
    return index


def _search(config: Config, collection: str, query: str, k: int, **kwargs: Any):
    index = _index(config, collection)
    if isinstance(index, str):
        return index
    try:
        return index.search(query, k=k, **kwargs)
    except XmrtError:
        raise
    except Exception:  # the cached handle went stale (collection dropped and re-created): reopen once
        services.forget_index(collection, config)
        index = _index(config, collection)
        return index if isinstance(index, str) else index.search(query, k=k, **kwargs)


def _clamp(k: int) -> int:
    return max(1, min(int(k), MAX_K))


def _hit_dict(hit) -> dict[str, Any]:
    meta = hit.metadata
    text = hit.text if len(hit.text) <= MAX_TEXT else hit.text[: MAX_TEXT - 1] + "…"
    out = {"source": meta.get("source"), "score": round(float(hit.score), 4), "kind": meta.get("kind"),
           "start_line": meta.get("start_line"), "text": text}
    if meta.get("page"):
        out["page"] = meta["page"]
    if meta.get("signatures") and meta.get("kind") == "code":
        out["signatures"] = meta["signatures"].split("\n")[:10]
    return out


def _signature_dict(hit) -> dict[str, Any]:
    meta = hit.metadata
    return {"symbol": meta.get("symbol"), "kind": meta.get("symbol_kind"), "signature": meta.get("signatures"),
            "source": meta.get("source"), "line": meta.get("start_line"), "score": round(float(hit.score), 4)}


def _dump(items: Any) -> str:
    return json.dumps(items, ensure_ascii=False, separators=(",", ":"))


def _run(fn) -> str:
    try:
        result = fn()
    except XmrtError as exc:
        return f"error: {exc}"
    return result if isinstance(result, str) else _dump(result)


def search_knowledge_impl(config: Config, query: str, k: int = 5, mode: str = "hybrid",
                          source_glob: str | None = None, file_type: str | None = None,
                          collection: str = DEFAULT_COLLECTION) -> str:
    """Search a collection; JSON list of hits (source, score, kind, start_line, text)."""

    def run():
        hits = _search(config, collection, query, _clamp(k), mode=mode, source_glob=source_glob or None,
                       file_type=file_type or None)
        return hits if isinstance(hits, str) else [_hit_dict(h) for h in hits]

    return _run(run)


def search_signatures_impl(config: Config, query: str, k: int = 10, source_glob: str | None = None,
                           collection: str = DEFAULT_COLLECTION) -> str:
    """Search class/function signatures; JSON list (symbol, kind, signature, source, line, score)."""

    def run():
        hits = _search(config, collection, query, _clamp(k), mode="hybrid", kind="signature",
                       source_glob=source_glob or None)
        return hits if isinstance(hits, str) else [_signature_dict(h) for h in hits]

    return _run(run)


def list_collections_impl(config: Config) -> str:
    """JSON list of collections with their chunk counts."""
    from xmrt.kb.chroma import chroma_client
    from xmrt.kb.index import KnowledgeIndex

    def run():
        client = chroma_client(config)
        return [{"name": n, "chunks": client.get_collection(n, embedding_function=None).count()}
                for n in KnowledgeIndex.list_collections(config)]

    return _run(run)


@tool
def search_knowledge(query: str, k: int = 5, mode: str = "hybrid", source_glob: str | None = None,
                     file_type: str | None = None, collection: str | None = None,
                     runtime: ToolRuntime = None) -> str:
    """Search the knowledge base (documents and code) for passages relevant to the query.

    Args:
        query: What to look for, in natural language or keywords.
        k: Number of results (1-50).
        mode: "hybrid" (best in general), "semantic" (meaning) or "bm25" (exact words, identifiers).
        source_glob: Only sources whose path matches this glob, e.g. "docs/*" or "*.py".
        file_type: Only this file type (extension without dot), e.g. "md" or "py".
        collection: Collection to search (default: the run's collection or "default").
        runtime: Injected by LangGraph.

    Returns:
        JSON list of hits with source path, score, start line and text.
    """
    return search_knowledge_impl(services.config(), query, k, mode, source_glob, file_type,
                                 _runtime_collection(runtime, collection))


@tool
def search_code_signatures(query: str, k: int = 10, source_glob: str | None = None, collection: str | None = None,
                           runtime: ToolRuntime = None) -> str:
    """Find class and function definitions in ingested code, by name or by what they do.

    Args:
        query: A name ("KnowledgeIndex", "parse_config") or a description ("function that splits text").
        k: Number of results (1-50).
        source_glob: Only sources whose path matches this glob, e.g. "*.py".
        collection: Collection to search (default: the run's collection or "default").
        runtime: Injected by LangGraph.

    Returns:
        JSON list of signatures with symbol, kind, source path, line and score.
    """
    return search_signatures_impl(services.config(), query, k, source_glob,
                                  _runtime_collection(runtime, collection))


@tool
def list_knowledge_collections(runtime: ToolRuntime = None) -> str:
    """List the knowledge-base collections and how many chunks each holds (JSON)."""
    return list_collections_impl(services.config())


KNOWLEDGE_TOOLS: list[BaseTool] = [search_knowledge, search_code_signatures, list_knowledge_collections]


def knowledge_tools(config: Config, collection: str = DEFAULT_COLLECTION) -> list[BaseTool]:
    """The three knowledge tools bound to an explicit configuration and default collection."""
    default = collection

    def search(query: str, k: int = 5, mode: str = "hybrid", source_glob: str | None = None,
               file_type: str | None = None, collection: str | None = None) -> str:
        return search_knowledge_impl(config, query, k, mode, source_glob, file_type, collection or default)

    def signatures(query: str, k: int = 10, source_glob: str | None = None, collection: str | None = None) -> str:
        return search_signatures_impl(config, query, k, source_glob, collection or default)

    def collections() -> str:
        return list_collections_impl(config)

    return [
        StructuredTool.from_function(search, name="search_knowledge", description=search_knowledge.description),
        StructuredTool.from_function(signatures, name="search_code_signatures",
                                     description=search_code_signatures.description),
        StructuredTool.from_function(collections, name="list_knowledge_collections",
                                     description=list_knowledge_collections.description),
    ]
