"""The ingestion engine: scan a source, plan what changed, load/split/embed/write in large batches, remove stale.

The graph in ``graphs/ingest.py`` runs these steps as nodes; each step is usable on its own.

1. :func:`scan_source` lists a source's files and hashes their bytes (cheap checks skip binary, empty,
   unreadable and oversized files here).
2. :func:`plan_ingest` reads the metadata of every chunk under the source's ``source_root`` with **one**
   ``get`` and compares ``file_hash`` (and the chunker settings) per file: new files are *added*, changed ones
   *updated*, identical ones *unchanged* (no work at all), and files gone from the source *removed*.

   Steps 1 and 2 write nothing; they live in :mod:`xmrt.kb.ingest_plan` and are re-exported here.
3. :func:`index_files` takes the collection's write lease (:mod:`xmrt.kb.coordination`; a concurrent ingest of
   the same collection, from this machine or another one sharing the Chroma server, waits for it), plans the
   files again under the lease (so a file that a concurrent ingest has written meanwhile is not embedded a
   second time), loads and splits the added and updated files, collects their chunks across files and
   embeds them in large batches (sorted by length inside a batch, so little padding is wasted), then writes
   each batch with one upsert. Old chunks of an updated file that are not among its new chunks are deleted.
   A file that fails to load is skipped with a warning naming it; the run goes on.

   Every chunk records ``file_chunks``, the number of chunks of its file: a file counts as unchanged only when
   the index holds all of them with the file's hash, so a file half-written by a killed ingest is indexed again.
4. :func:`remove_files` deletes the chunks of removed files.
5. :func:`finish_ingest` builds the summary and records the time of the last ingest (for ``/status``).

Counts are per file (added/updated/unchanged/removed/skipped) plus chunks embedded and removed.
:func:`ingest_path` runs all the steps in plain Python, for services and tools that cannot import graphs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xmrt.config import Config
from xmrt.kb.ingest_plan import (  # noqa: F401 - steps 1 and 2 (and their settings) are imported from here too
    DEFAULT_BATCH_CHUNKS,
    IngestSettings,
    now_iso,
    plan_ingest,
    progress_bar,
    scan_source,
    sha256_bytes,
    skip_entry,
)
from xmrt.kb.loaders import SkipFile, load_bytes
from xmrt.kb.sources import ResolvedSource, resolve_source
from xmrt.kb.splitting import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, Chunk, build_chunks

log = logging.getLogger(__name__)

#: Chunks per embedding call inside a batch (progress is updated after each call).
EMBED_CALL = 256


class _Writer:
    """Collects chunks across files, then embeds and upserts them in large batches."""

    def __init__(self, index: Any, batch_chunks: int, bar) -> None:
        self.index = index
        self.batch_chunks = batch_chunks
        self.bar = bar
        self.pending: dict[str, Chunk] = {}
        self.embedded = 0

    def add(self, chunks: Sequence[Chunk]) -> None:
        for chunk in chunks:
            self.pending[chunk.id] = chunk
        self.bar.total = (self.bar.total or 0) + len(chunks)
        self.bar.refresh()
        if len(self.pending) >= self.batch_chunks:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch = list(self.pending.values())
        self.pending = {}
        # identical texts (license headers, repeated signatures) are embedded once; longest first, so each
        # embedding call holds texts of similar length and little padding is computed
        unique = sorted({c.text for c in batch}, key=len, reverse=True)
        vector_of: dict[str, list[float]] = {}
        for start in range(0, len(unique), EMBED_CALL):
            part = unique[start : start + EMBED_CALL]
            vector_of.update(zip(part, self.index.embed_documents(part), strict=True))
            self.bar.update(len(part))
        self.bar.update(len(batch) - len(unique))
        self.index.upsert([c.id for c in batch], [c.text for c in batch], [c.metadata for c in batch],
                          embeddings=[vector_of[c.text] for c in batch])
        self.embedded += len(batch)


def index_files(
    index: Any,
    resolved: ResolvedSource,
    files: Sequence[dict],
    old_ids: dict[str, list[str]],
    settings: IngestSettings,
    ingested_at: str | None = None,
) -> dict[str, Any]:
    """Load, split, embed and write ``files``; replace the old chunks of files that had some.

    Args:
        index: The :class:`~xmrt.kb.index.KnowledgeIndex`.
        resolved: The source (labels and git metadata).
        files: Files to (re)index, from the plan's ``add`` and ``update``.
        old_ids: Chunk ids the index holds per source (updated files).
        settings: Chunk sizes, batch size, progress.
        ingested_at: Timestamp written into every chunk (now when None).

    Returns:
        ``{"indexed": [source...], "skipped": [{source, reason}...], "chunks_embedded": n,
        "chunks_removed": n}``.
    """
    writing = index.writing(f"ingest {resolved.source_root}") if hasattr(index, "writing") else None
    if writing is None:
        return _index_files(index, resolved, files, old_ids, settings, ingested_at)
    with writing:
        # plan again under the lease: a concurrent ingest may have written some of these files meanwhile
        again = plan_ingest(index, resolved.source_root, files, settings.chunker)
        todo = again["add"] + again["update"]
        if len(todo) < len(files):
            log.info("%d of %d files were indexed meanwhile by another ingest", len(files) - len(todo), len(files))
        result = _index_files(index, resolved, todo, {**old_ids, **again["old_ids"]}, settings, ingested_at)
        if result["chunks_embedded"] and hasattr(index, "calibrate_fusion"):
            index.calibrate_fusion()  # only when the collection changed size by a quarter since the last time
        if hasattr(index, "record_shared"):  # every machine's `kb stats` shows the last ingest, wherever it ran
            index.record_shared("last_ingest", {"source_root": resolved.source_root,
                                                "ingested_at": ingested_at or now_iso()})
        return result


def _index_files(index: Any, resolved: ResolvedSource, files: Sequence[dict], old_ids: dict[str, list[str]],
                 settings: IngestSettings, ingested_at: str | None) -> dict[str, Any]:
    ingested_at = ingested_at or now_iso()
    extra = resolved.extra_metadata()
    indexed: list[str] = []
    skipped: list[dict] = []
    stale: list[str] = []
    with progress_bar(0, "embedding", "chunk", settings.progress) as bar:
        writer = _Writer(index, settings.batch_chunks, bar)
        for f in files:
            source = f["source"]
            try:
                path = Path(f["path"])
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise SkipFile(f"unreadable ({exc.strerror or exc})") from None
                doc = load_bytes(path, data)
                chunks = build_chunks(
                    doc, source=source, source_root=resolved.source_root, file_hash=sha256_bytes(data),
                    chunk_size=settings.chunk_size, chunk_overlap=settings.chunk_overlap,
                    ingested_at=ingested_at, extra=extra,
                )
                if not chunks:
                    raise SkipFile("no text")
                for chunk in chunks:
                    chunk.metadata["file_chunks"] = len(chunks)
            except SkipFile as exc:
                skipped.append(skip_entry(source, str(exc)))
                stale.extend(old_ids.get(source, ()))  # a file that went bad loses its old chunks
                continue
            except Exception as exc:  # a parser bug on one file must not abort the ingest
                log.exception("failed to load %s", source)
                skipped.append(skip_entry(source, f"failed to load ({type(exc).__name__}: {exc})"))
                continue
            new_ids = {c.id for c in chunks}
            stale.extend(i for i in old_ids.get(source, ()) if i not in new_ids)
            writer.add(chunks)
            indexed.append(source)
        writer.flush()
    if stale:
        index.delete(stale)
    return {"indexed": indexed, "skipped": skipped, "chunks_embedded": writer.embedded,
            "chunks_removed": len(set(stale))}


def remove_files(index: Any, sources: Sequence[str], old_ids: dict[str, list[str]]) -> int:
    """Delete every chunk of the given sources; returns how many chunks were removed."""
    ids = [i for s in sources for i in old_ids.get(s, ())]
    if ids:
        index.delete(ids)
    return len(ids)


def finish_ingest(
    config: Config,
    collection: str,
    resolved: ResolvedSource,
    plan: dict[str, Any],
    indexed: Sequence[str],
    skipped: Sequence[dict],
    chunks_embedded: int,
    chunks_removed: int,
    chunks_in_collection: int,
    ingested_at: str,
) -> dict[str, Any]:
    """Build the run's summary and record it as the collection's last ingest.

    Returns:
        ``{"source", "source_root", "source_kind", "branch", "commit", "collection", "files": {"added",
        "updated", "unchanged", "removed", "skipped"}, "added", "updated", "unchanged", "removed",
        "chunks_embedded", "chunks_removed", "chunks_in_collection", "skipped": [{source, reason}],
        "ingested_at"}``. The four top-level file counts repeat those in ``files``.
    """
    from xmrt.kb.stats import record_ingest

    done = set(indexed)
    files = {
        "added": sum(1 for f in plan["add"] if f["source"] in done),
        "updated": sum(1 for f in plan["update"] if f["source"] in done),
        "unchanged": len(plan["unchanged"]),
        "removed": len(plan["remove"]),
        "skipped": len(skipped),
    }
    summary = {
        "source": resolved.url or resolved.source_root,
        "source_root": resolved.source_root,
        "source_kind": resolved.kind,
        "branch": resolved.branch,
        "commit": resolved.commit,
        "collection": collection,
        "files": files,
        **{k: files[k] for k in ("added", "updated", "unchanged", "removed")},
        "chunks_embedded": chunks_embedded,
        "chunks_removed": chunks_removed,
        "chunks_in_collection": chunks_in_collection,
        "skipped": list(skipped),
        "ingested_at": ingested_at,
    }
    record_ingest(config, collection, {k: summary[k] for k in (
        "source", "source_root", "ingested_at", "files", "chunks_embedded", "chunks_removed")})
    return summary


def ingest_path(
    config: Config,
    source: str,
    *,
    collection: str = "default",
    branch: str | None = None,
    working_tree: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    batch_chunks: int = DEFAULT_BATCH_CHUNKS,
    progress: bool = True,
) -> dict[str, Any]:
    """Ingest a folder, file or git repository into ``collection``: the ingest graph's steps, in plain Python.

    Returns:
        The summary (see :func:`finish_ingest`).

    Raises:
        UserError: Bad settings or collection name, a missing path, or an unreachable repository.
    """
    from xmrt.kb.index import KnowledgeIndex, validate_collection_name

    settings = IngestSettings(collection=collection, chunk_size=chunk_size, chunk_overlap=chunk_overlap,
                              include=tuple(include), exclude=tuple(exclude), batch_chunks=batch_chunks,
                              progress=progress)
    settings.validate()
    validate_collection_name(collection)
    resolved = resolve_source(config, source, branch, working_tree)
    started = now_iso()
    files, skipped = scan_source(resolved, settings)
    index = KnowledgeIndex(config, collection)
    try:
        plan = plan_ingest(index, resolved.source_root, files, settings.chunker)
        result = {"indexed": [], "skipped": [], "chunks_embedded": 0, "chunks_removed": 0}
        if plan["add"] or plan["update"]:
            result = index_files(index, resolved, plan["add"] + plan["update"], plan["old_ids"], settings, started)
        removed = remove_files(index, plan["remove"], plan["old_ids"])
        total = index.count()
    finally:
        index.close()
    return finish_ingest(config, collection, resolved, plan, result["indexed"], skipped + result["skipped"],
                         result["chunks_embedded"], result["chunks_removed"] + removed, total, started)
