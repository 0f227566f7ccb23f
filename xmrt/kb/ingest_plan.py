"""Ingest steps 1 and 2, which write nothing: scan a source's files, and plan what changed against the index.

1. :func:`scan_source` lists a source's files and hashes their bytes (cheap checks skip binary, empty,
   unreadable and oversized files here).
2. :func:`plan_ingest` reads the metadata of every chunk under the source's ``source_root`` with **one**
   ``get`` and compares ``file_hash`` (and the chunker settings) per file: new files are *added*, changed ones
   *updated*, identical ones *unchanged* (no work at all), and files gone from the source *removed*. A file
   counts as unchanged only when the index holds all its ``file_chunks`` chunks with the file's hash.

The steps that write (embed, upsert, remove, summarise) are in :mod:`xmrt.kb.ingest`, which re-exports these.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from xmrt.errors import UserError
from xmrt.kb.loaders import SkipFile, check_bytes, precheck
from xmrt.kb.sources import Globs, ResolvedSource, walk_files
from xmrt.kb.splitting import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, chunker_id, validate_sizes

log = logging.getLogger("xmrt.kb.ingest")

#: Chunks collected (across files) before they are embedded and written together.
DEFAULT_BATCH_CHUNKS = 2048


@dataclass(frozen=True)
class IngestSettings:
    """Tunables of one ingest run."""

    collection: str = "default"
    chunk_size: int = DEFAULT_CHUNK_SIZE
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    batch_chunks: int = DEFAULT_BATCH_CHUNKS
    progress: bool = True

    def validate(self) -> None:
        """Raise UserError for bad sizes."""
        validate_sizes(self.chunk_size, self.chunk_overlap)
        if self.batch_chunks < 1:
            raise UserError(f"batch size must be positive, got {self.batch_chunks}")

    @property
    def chunker(self) -> str:
        """The chunker id recorded in metadata."""
        return chunker_id(self.chunk_size, self.chunk_overlap)


def now_iso() -> str:
    """Current UTC time, ISO 8601 with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of bytes (a file's ``file_hash``)."""
    return hashlib.sha256(data).hexdigest()


def skip_entry(source: str, reason: str) -> dict[str, str]:
    """Log a skipped file and return its ``{source, reason}`` entry for the summary."""
    log.warning("skipped %s: %s", source, reason)
    return {"source": source, "reason": reason}


def progress_bar(total: int | None, desc: str, unit: str, enabled: bool):
    """A tqdm bar on stderr (disabled unless ``enabled``)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr, leave=False,
                dynamic_ncols=True)


def scan_source(resolved: ResolvedSource, settings: IngestSettings) -> tuple[list[dict], list[dict]]:
    """List and hash the files of a resolved source.

    Returns:
        ``(files, skipped)``: files as dicts ``{path, rel, source, file_hash, size}`` (sorted by path), and
        skipped files as ``{source, reason}``.
    """
    globs = Globs(tuple(settings.include), tuple(settings.exclude))
    files: list[dict] = []
    skipped: list[dict] = []
    entries = list(walk_files(resolved.root, globs))
    with progress_bar(len(entries), "scanning", "file", settings.progress and len(entries) > 500) as bar:
        for entry in entries:
            label = resolved.label(entry.rel)
            bar.update(1)
            try:
                if entry.skip:
                    raise SkipFile(entry.skip)
                if entry.size < 0:
                    raise SkipFile("unreadable (cannot stat; broken link?)")
                precheck(entry.path, entry.size)
                try:
                    data = entry.path.read_bytes()
                except OSError as exc:
                    raise SkipFile(f"unreadable ({exc.strerror or exc})") from None
                check_bytes(entry.path, data)
            except SkipFile as exc:
                skipped.append(skip_entry(label, str(exc)))
                continue
            files.append({"path": str(entry.path), "rel": entry.rel, "source": label,
                          "file_hash": sha256_bytes(data), "size": len(data)})
    return files, skipped


def plan_ingest(index: Any, source_root: str, files: Sequence[dict], chunker: str) -> dict[str, Any]:
    """Compare scanned files with what the index holds for ``source_root`` (one metadata ``get``).

    Args:
        index: The :class:`~xmrt.kb.index.KnowledgeIndex`.
        source_root: The source's label.
        files: Output of :func:`scan_source`.
        chunker: Current chunker id; chunks made with other settings count as changed.

    Returns:
        ``{"add": [file...], "update": [file...], "unchanged": [source...], "remove": [source...],
        "old_ids": {source: [chunk ids]}}`` where ``old_ids`` covers updated and removed files only.
    """
    held = index.get(where={"source_root": source_root})
    by_source: dict[str, dict[str, Any]] = {}
    for chunk_id, meta in zip(held["ids"], held["metadatas"], strict=True):
        entry = by_source.setdefault(str(meta.get("source", "")), {"ids": [], "hashes": set(), "complete": True})
        entry["ids"].append(chunk_id)
        entry["hashes"].add((meta.get("file_hash"), meta.get("chunker")))
        entry["expected"] = meta.get("file_chunks")
    for entry in by_source.values():  # chunks written before file_chunks existed count as complete
        if isinstance(entry.get("expected"), int) and len(entry["ids"]) != entry["expected"]:
            entry["complete"] = False
    add: list[dict] = []
    update: list[dict] = []
    unchanged: list[str] = []
    old_ids: dict[str, list[str]] = {}
    for f in files:
        entry = by_source.pop(f["source"], None)
        if entry is None:
            add.append(f)
        elif entry["hashes"] == {(f["file_hash"], chunker)} and entry["complete"]:
            unchanged.append(f["source"])
        else:
            update.append(f)
            old_ids[f["source"]] = entry["ids"]
    remove = sorted(by_source)
    for source in remove:
        old_ids[source] = by_source[source]["ids"]
    return {"add": add, "update": update, "unchanged": unchanged, "remove": remove, "old_ids": old_ids}
