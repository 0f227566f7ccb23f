"""Knowledge-base statistics for ``/status`` and ``xmrt kb stats``, and the record of the last ingest per collection.

The last ingest of each collection is kept in ``<data_dir>/kb/ingest-log.json`` (written atomically), with the
source, the time and the counts of that run. Counts of chunks, documents (distinct ``source`` files) and
sources (distinct ``source_root``) come from Chroma: documents are counted from the first content chunk of
each file only (``chunk_index == 0``, kind text or code), so no full scan of the metadata is needed.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from xmrt.config import Config

log = logging.getLogger(__name__)

LOG_NAME = "ingest-log.json"
_lock = threading.Lock()


def ingest_log_path(config: Config) -> Path:
    """Where the last-ingest records live."""
    return Path(config.data_dir) / "kb" / LOG_NAME


def _read_log(config: Config) -> dict[str, Any]:
    path = ingest_log_path(config)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable ingest log %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _write_log(config: Config, data: dict[str, Any]) -> None:
    path = ingest_log_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ingest-log.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_ingest(config: Config, collection: str, record: dict[str, Any]) -> None:
    """Remember the last ingest into ``collection`` (``record`` must hold ``ingested_at``)."""
    with _lock:
        data = _read_log(config)
        data[collection] = record
        _write_log(config, data)
    from xmrt.redis.audit import record as audit  # every ingest, from the CLI, the API or Python

    audit("kb.ingest", outcome="ok", config=config, details={"collection": collection, **record})


def forget_collection(config: Config, collection: str) -> None:
    """Drop the ingest record of a collection (after ``kb drop``)."""
    with _lock:
        data = _read_log(config)
        if data.pop(collection, None) is not None:
            _write_log(config, data)


def last_ingest(config: Config, collection: str | None = None) -> str | None:
    """ISO time of the last ingest into ``collection``, or into any collection when None."""
    data = _read_log(config)
    if collection is not None:
        return (data.get(collection) or {}).get("ingested_at")
    times = [r.get("ingested_at") for r in data.values() if isinstance(r, dict) and r.get("ingested_at")]
    return max(times) if times else None


def collection_stats(config: Config, name: str, client: Any = None) -> dict[str, Any]:
    """Chunks, documents, sources, embedding model and last ingest of one collection (read-only)."""
    from xmrt.kb.chroma import chroma_client
    from xmrt.kb.index import MODEL_KEY

    col = (client or chroma_client(config)).get_collection(name, embedding_function=None)
    firsts = col.get(where={"$and": [{"chunk_index": 0}, {"kind": {"$in": ["text", "code"]}}]},
                     include=["metadatas"])
    metas = [m or {} for m in firsts["metadatas"] or []]
    kinds: dict[str, int] = {}
    for m in metas:
        ft = str(m.get("file_type") or "")
        kinds[ft] = kinds.get(ft, 0) + 1
    record = _read_log(config).get(name) or {}
    shared = (col.metadata or {}).get("last_ingest")  # written by whichever machine ingested last
    if isinstance(shared, str):
        try:
            other = json.loads(shared)
        except ValueError:
            other = {}
        if isinstance(other, dict) and str(other.get("ingested_at", "")) > str(record.get("ingested_at") or ""):
            record = other
    return {
        "name": name,
        "chunks": col.count(),
        "documents": len({m.get("source") for m in metas}),
        "sources": sorted({str(m.get("source_root")) for m in metas if m.get("source_root")}),
        "file_types": dict(sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))),
        "embedding_model": (col.metadata or {}).get(MODEL_KEY),
        "last_ingest": record.get("ingested_at"),
        "last_source": record.get("source_root"),
    }


def kb_stats(config: Config) -> dict[str, Any]:
    """Knowledge-base figures for ``/status``.

    Returns:
        ``{"available", "collections", "chunks", "documents", "sources", "embedding_model", "last_ingest",
        "per_collection": [...]}``; with ``available`` False and an ``error`` when Chroma cannot be opened.
    """
    from xmrt.kb.chroma import ChromaReadOnly, snapshot_client
    from xmrt.kb.coordination import RESERVED_PREFIX
    from xmrt.kb.index import KnowledgeIndex
    from xmrt.llm.embeddings import embedding_model_id

    out: dict[str, Any] = {"embedding_model": embedding_model_id(config), "last_ingest": last_ingest(config)}
    try:
        try:
            names = KnowledgeIndex.list_collections(config)
            per = [collection_stats(config, n) for n in names]
        except ChromaReadOnly as exc:  # the figures of a read-only store, from a copy of its SQLite file
            with snapshot_client(config) as client:
                names = sorted(n for n in (c if isinstance(c, str) else c.name for c in client.list_collections())
                               if not n.startswith(RESERVED_PREFIX))
                per = [collection_stats(config, n, client) for n in names]
            out["read_only"] = str(exc)
    except Exception as exc:  # /status must answer even when the store is down
        log.warning("knowledge-base stats unavailable: %s", exc)
        return {**out, "available": False, "error": str(exc), "collections": 0, "chunks": 0, "documents": 0,
                "sources": 0, "per_collection": []}
    return {
        **out,
        "available": True,
        "collections": len(names),
        "chunks": sum(p["chunks"] for p in per),
        "documents": sum(p["documents"] for p in per),
        "sources": sum(len(p["sources"]) for p in per),
        "per_collection": per,
    }
