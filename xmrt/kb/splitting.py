"""Splitting loaded documents into chunks with deterministic ids and the knowledge base's metadata.

Code is split with LangChain's language-aware separators
(``RecursiveCharacterTextSplitter.from_language``: class and function boundaries first), Markdown, RST and
LaTeX by their headings, everything else by paragraphs, lines and words. Sizes are in characters.

Every chunk carries (Chroma accepts scalar metadata only):

``source``, ``source_root``, ``file_type``, ``kind`` ("text" | "code" | "signature"), ``language``,
``chunk_index``, ``start_line``, ``end_line``, ``content_hash`` (sha256 of the chunk text), ``file_hash``
(sha256 of the file's bytes), ``signatures`` (newline-joined declarations inside the chunk, "" if none),
``ingested_at``, ``chunker`` (the split settings, so a change of settings re-splits), plus ``page`` for PDFs
and ``symbol``/``symbol_kind`` for signature chunks. Extra scalar fields (``git_commit``...) are passed in.

Each declaration found by :mod:`xmrt.kb.signatures` is also its own chunk of kind "signature", so a search
restricted to ``kind="signature"`` works like RAGLight's class retriever.

Chunk ids hash ``source_root``, ``source``, ``kind``, ``chunk_index`` and ``content_hash``: the same file
ingested twice yields the same ids, so re-ingest is idempotent.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from xmrt.errors import UserError
from xmrt.kb.loaders import LoadedDocument
from xmrt.kb.signatures import extract_signatures

#: Version of the splitting rules; part of ``chunker`` so a change re-splits existing files.
SPLITTER_VERSION = 1
DEFAULT_CHUNK_SIZE = 1000
DEFAULT_CHUNK_OVERLAP = 150

_NEWLINE = re.compile("\n")


@dataclass
class Chunk:
    """One record for the index: ``id``, ``text`` and scalar ``metadata``."""

    id: str
    text: str
    metadata: dict[str, Any]


def sha256_text(text: str) -> str:
    """Hex SHA-256 of a text's UTF-8 bytes (the ``content_hash`` of a chunk)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def chunk_id(source_root: str, source: str, kind: str, index: int, content_hash: str) -> str:
    """Deterministic chunk id from where the chunk comes from and what it holds."""
    key = "\x1f".join((source_root, source, kind, str(index), content_hash))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]


def chunker_id(chunk_size: int, chunk_overlap: int) -> str:
    """The split settings as recorded in chunk metadata."""
    return f"v{SPLITTER_VERSION}:{chunk_size}:{chunk_overlap}"


def validate_sizes(chunk_size: int, chunk_overlap: int) -> None:
    """Check chunk size and overlap.

    Raises:
        UserError: The size is below 50 characters, or the overlap is negative or not below the size.
    """
    if not isinstance(chunk_size, int) or chunk_size < 50:
        raise UserError(f"chunk size must be an integer >= 50 characters, got {chunk_size!r}")
    if not isinstance(chunk_overlap, int) or chunk_overlap < 0 or chunk_overlap >= chunk_size:
        raise UserError(f"chunk overlap must be >= 0 and smaller than the chunk size ({chunk_size}), "
                        f"got {chunk_overlap!r}")


def _splitter_language(language: str):
    from langchain_text_splitters import Language

    table = {
        "python": Language.PYTHON, "js": Language.JS, "ts": Language.TS, "go": Language.GO,
        "rust": Language.RUST, "java": Language.JAVA, "kotlin": Language.KOTLIN, "c": Language.C,
        "cpp": Language.CPP, "csharp": Language.CSHARP, "ruby": Language.RUBY, "php": Language.PHP,
        "scala": Language.SCALA, "swift": Language.SWIFT, "lua": Language.LUA, "sol": Language.SOL,
        "proto": Language.PROTO, "r": Language.R, "perl": Language.PERL, "haskell": Language.HASKELL,
        "elixir": Language.ELIXIR, "powershell": Language.POWERSHELL, "markdown": Language.MARKDOWN,
        "rst": Language.RST, "latex": Language.LATEX,
    }
    return table.get(language)


@functools.lru_cache(maxsize=64)
def get_splitter(language: str, chunk_size: int, chunk_overlap: int):
    """The text splitter for a loader language (cached): language-aware separators where LangChain has them."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    lang = _splitter_language(language)
    if lang is not None:
        return RecursiveCharacterTextSplitter.from_language(lang, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    return RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)


def split_text(text: str, language: str, chunk_size: int, chunk_overlap: int) -> list[tuple[str, int]]:
    """Split ``text``; returns ``(chunk, start offset)`` pairs in order."""
    pieces = get_splitter(language, chunk_size, chunk_overlap).split_text(text)
    out: list[tuple[str, int]] = []
    index = 0
    previous = 0
    for piece in pieces:
        offset = max(0, index + previous - chunk_overlap)
        found = text.find(piece, offset)
        if found < 0:
            found = text.find(piece)
        if found < 0:  # the splitter never rewrites text, but stay total
            found = index
        out.append((piece, found))
        index, previous = found, len(piece)
    return out


def build_chunks(
    doc: LoadedDocument,
    *,
    source: str,
    source_root: str,
    file_hash: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    ingested_at: str = "",
    extra: dict[str, Any] | None = None,
) -> list[Chunk]:
    """Split one document into content chunks and signature chunks with full metadata.

    Args:
        doc: The loaded document.
        source: The file's label (path relative to the ingested root, or ``<repo-url>/<path>``).
        source_root: The ingested root's label.
        file_hash: SHA-256 of the file's bytes.
        chunk_size: Maximum chunk length in characters.
        chunk_overlap: Characters shared by neighbouring chunks.
        ingested_at: ISO timestamp of the ingest run.
        extra: More scalar metadata for every chunk (``git_commit``...).

    Returns:
        Content chunks (``chunk_index`` 0..n-1) followed by signature chunks.
    """
    ftype = doc.type
    newlines = [m.start() for m in _NEWLINE.finditer(doc.text)]
    signatures = extract_signatures(doc.text, ftype.language) if ftype.kind == "code" else []
    sig_lines = [s.line for s in signatures]
    base = {
        "source": source,
        "source_root": source_root,
        "file_type": ftype.file_type,
        "language": ftype.language,
        "file_hash": file_hash,
        "ingested_at": ingested_at,
        "chunker": chunker_id(chunk_size, chunk_overlap),
        **(extra or {}),
    }
    chunks: list[Chunk] = []
    index = 0
    for piece, start in split_text(doc.text, ftype.language, chunk_size, chunk_overlap):
        if not piece.strip():
            continue
        start_line = bisect.bisect_left(newlines, start) + 1
        end_line = start_line + piece.count("\n")
        lo, hi = bisect.bisect_left(sig_lines, start_line), bisect.bisect_right(sig_lines, end_line)
        digest = sha256_text(piece)
        meta = {
            **base,
            "kind": ftype.kind,
            "chunk_index": index,
            "start_line": start_line,
            "end_line": end_line,
            "content_hash": digest,
            "signatures": "\n".join(s.signature for s in signatures[lo:hi]),
        }
        if doc.page_starts:
            meta["page"] = bisect.bisect_right(doc.page_starts, start)
        chunks.append(Chunk(chunk_id(source_root, source, ftype.kind, index, digest), piece, meta))
        index += 1
    for i, sig in enumerate(signatures):
        text = sig.text
        digest = sha256_text(text)
        meta = {
            **base,
            "kind": "signature",
            "chunk_index": i,
            "start_line": sig.line,
            "end_line": sig.line,
            "content_hash": digest,
            "signatures": sig.signature,
            "symbol": sig.name,
            "symbol_kind": sig.kind,
        }
        chunks.append(Chunk(chunk_id(source_root, source, "signature", i, digest), text, meta))
    return chunks
