"""The ingest graph's nodes (graphs/ingest.py): resolve, scan, plan, index changed files, remove stale ones, report.

Each node is a thin step over :mod:`xmrt.kb.ingest` and returns only the keys it changes. Tunables come from
``runtime.context`` (see ``graphs.context.IngestContext``; its defaults when the caller passes none): collection,
chunk size and overlap, include and exclude globs, batch size and progress bar. The configuration is the
process's (:func:`xmrt.services.config`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from langgraph.runtime import Runtime

from graphs.context import IngestContext, context_of
from xmrt import services
from xmrt.kb.ingest import IngestSettings, finish_ingest, index_files, now_iso, plan_ingest, remove_files, scan_source
from xmrt.kb.sources import ResolvedSource
from xmrt.kb.sources import resolve_source as resolve

log = logging.getLogger(__name__)


def _settings(runtime: Runtime) -> IngestSettings:
    ctx = context_of(runtime, IngestContext)
    return IngestSettings(
        collection=ctx.collection,
        chunk_size=ctx.chunk_size,
        chunk_overlap=ctx.chunk_overlap,
        include=tuple(ctx.include or ()),
        exclude=tuple(ctx.exclude or ()),
        batch_chunks=ctx.batch_chunks,
        progress=ctx.progress,
    )


def _resolved(state: dict[str, Any]) -> ResolvedSource:
    data = dict(state["resolved"])
    data["root"] = Path(data["root"])
    return ResolvedSource(**data)


def _index(runtime: Runtime):
    """The collection's index, shared by the run's steps (and the process): nothing reconnects per step."""
    return services.knowledge_index(_settings(runtime).collection, create=True)


def resolve_source(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Check the settings, then make the source local (a folder, a file, or a shallow git clone)."""
    from xmrt.kb.index import validate_collection_name

    settings = _settings(runtime)
    settings.validate()
    validate_collection_name(settings.collection)
    resolved = resolve(services.config(), state["source"], state.get("branch"), bool(state.get("working_tree")))
    data = asdict(resolved)
    data["root"] = str(resolved.root)
    return {"resolved": data, "started_at": now_iso()}


def scan_files(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """List and hash the source's files; files that fail the cheap checks are skipped."""
    files, skipped = scan_source(_resolved(state), _settings(runtime))
    return {"files": files, "skipped": skipped}


def plan_changes(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Compare file hashes with what the collection holds (one metadata read) and sort files by what to do."""
    plan = plan_ingest(_index(runtime), state["resolved"]["source_root"], state["files"], _settings(runtime).chunker)
    return {"plan": plan}


def route_after_plan(state: dict[str, Any]) -> Literal["index_files", "remove_files", "finish"]:
    """Skip the work nobody needs: nothing changed goes straight to the report."""
    plan = state["plan"]
    if plan["add"] or plan["update"]:
        return "index_files"
    if plan["remove"]:
        return "remove_files"
    return "finish"


def index_files_node(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Load, split, embed (in large batches) and write the added and updated files."""
    plan = state["plan"]
    result = index_files(_index(runtime), _resolved(state), plan["add"] + plan["update"], plan["old_ids"],
                         _settings(runtime), ingested_at=state.get("started_at"))
    return {
        "indexed": result["indexed"],
        "skipped": result["skipped"],
        "chunks_embedded": result["chunks_embedded"],
        "chunks_removed": result["chunks_removed"],
    }


def remove_files_node(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Delete the chunks of files that disappeared from the source."""
    plan = state["plan"]
    if not plan["remove"]:
        return {}
    removed = remove_files(_index(runtime), plan["remove"], plan["old_ids"])
    return {"chunks_removed": removed}


def finish(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Build the summary (files added/updated/unchanged/removed/skipped, chunks) and record the ingest time."""
    total = _index(runtime).count()
    summary = finish_ingest(
        services.config(), _settings(runtime).collection, _resolved(state), state["plan"], state.get("indexed") or (),
        state.get("skipped") or (), state.get("chunks_embedded", 0), state.get("chunks_removed", 0), total,
        state.get("started_at") or now_iso(),
    )
    return {"summary": summary}
