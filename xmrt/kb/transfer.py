"""Export and import of a collection as JSONL: texts, metadata, content hashes and embeddings.

File format (UTF-8, one JSON object per line):

* line 1, the header: ``{"format": "xmrt-kb-export", "version": 1, "collection", "embedding_model", "dims",
  "count", "checksum": "sha256:<hex>", "exported_at"}``. ``checksum`` is the SHA-256 of every record line
  that follows, bytes as written, newline included.
* then ``count`` records: ``{"id", "text", "metadata", "content_hash", "embedding"}``, where ``content_hash``
  is the SHA-256 of ``text`` and ``embedding`` a list of ``dims`` numbers.

Embeddings are float32 in Chroma; they are written as the shortest decimal that reads back to the same
float, and imported as exactly those floats. Ids, texts and metadata round-trip exactly. A vector can come
back one float32 ulp away (about 1e-8): a cosine collection re-normalises every vector it stores, and
normalising an already normalised float32 vector is not always the identity. Searches over an imported
collection give the same hits in the same order with the same scores (to about 1e-7).

Import validates the **whole** file before it writes anything: header, embedding model, every line's JSON,
fields, content hash and vector size, unique ids, the record count and the checksum. A truncated, corrupt or
foreign-model file is refused with one clear line and the target collection is not touched.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from xmrt.config import Config
from xmrt.errors import UserError

FORMAT = "xmrt-kb-export"
VERSION = 1
#: Chunks fetched (with embeddings) and written per page.
PAGE = 1000


def _line(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def export_collection(config: Config, path: str | Path, collection: str = "default") -> dict[str, Any]:
    """Write ``collection`` to ``path`` (atomically: a temporary file renamed at the end).

    Returns:
        The header that was written.

    Raises:
        UserError: No such collection, or the file cannot be written.
    """
    from xmrt.kb.index import KnowledgeIndex, validate_collection_name

    validate_collection_name(collection)
    if collection not in KnowledgeIndex.list_collections(config):
        raise UserError(f"no collection named {collection!r} (see: xmrt kb list)")
    index = KnowledgeIndex(config, collection)
    target = Path(path).expanduser()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        ids = index.get()["ids"]
        digest = hashlib.sha256()
        dims = None
        count = 0
        fd, body_name = tempfile.mkstemp(prefix=".export-body.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as body:
                for start in range(0, len(ids), PAGE):
                    page = index.get(ids=ids[start : start + PAGE], include_embeddings=True)
                    for cid, text, meta, vec in zip(page["ids"], page["documents"], page["metadatas"],
                                                    page["embeddings"], strict=True):
                        text = text or ""
                        dims = dims or len(vec)
                        line = _line({"id": cid, "text": text, "metadata": meta or {},
                                      "content_hash": _sha256_text(text), "embedding": [float(x) for x in vec]})
                        digest.update(line)
                        body.write(line)
                        count += 1
            header = {
                "format": FORMAT, "version": VERSION, "collection": collection,
                "embedding_model": index.embedding_model_id, "dims": dims or 0, "count": count,
                "checksum": f"sha256:{digest.hexdigest()}", "exported_at": datetime.now(UTC).isoformat(),
            }
            fd, out_name = tempfile.mkstemp(prefix=".export.", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as out, open(body_name, "rb") as body:
                    out.write(_line(header))
                    for block in iter(lambda: body.read(1 << 20), b""):
                        out.write(block)
                os.replace(out_name, target)
            except BaseException:
                Path(out_name).unlink(missing_ok=True)
                raise
        finally:
            Path(body_name).unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        index.close()
    return header


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        yield from enumerate(handle, 1)


def _bad(path: Path, number: int, why: str) -> UserError:
    return UserError(f"{path}: line {number}: {why}; the file is truncated or corrupt, nothing was imported")


def _check_header(path: Path, raw: bytes, config: Config) -> dict[str, Any]:
    from xmrt.llm.embeddings import embedding_dims, embedding_model_id

    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{path}: not an xmrt knowledge-base export (no JSON header line)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise UserError(f"{path}: not an xmrt knowledge-base export (header format is not {FORMAT!r})")
    if header.get("version") != VERSION:
        raise UserError(f"{path}: export format version {header.get('version')!r} is not supported "
                        f"(this xmrt reads version {VERSION})")
    for key, kind in (("count", int), ("dims", int), ("checksum", str), ("embedding_model", str),
                      ("collection", str)):
        if not isinstance(header.get(key), kind) or isinstance(header.get(key), bool):
            raise UserError(f"{path}: export header has no valid {key!r}; the file is corrupt, nothing was imported")
    model = embedding_model_id(config)
    if header["embedding_model"] != model:
        raise UserError(
            f"{path} was exported with embedding model {header['embedding_model']!r}, but the configured model is "
            f"{model!r}: its vectors cannot be mixed with this model's; nothing was imported "
            f"(set RAGLIGHT_EMBEDDING_MODEL to match, or re-ingest the sources)"
        )
    if header["count"] and header["dims"] != embedding_dims(config):
        raise UserError(f"{path}: vectors have {header['dims']} dimensions, the configured model makes "
                        f"{embedding_dims(config)}; nothing was imported")
    return header


def _check_record(path: Path, number: int, raw: bytes, dims: int) -> tuple[str, str, dict, np.ndarray]:
    try:
        rec = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _bad(path, number, "not valid JSON") from None
    if not isinstance(rec, dict):
        raise _bad(path, number, "not a JSON object")
    cid, text, meta, chash, vec = (rec.get(k) for k in ("id", "text", "metadata", "content_hash", "embedding"))
    if not isinstance(cid, str) or not cid:
        raise _bad(path, number, "missing \"id\"")
    if not isinstance(text, str):
        raise _bad(path, number, "missing \"text\"")
    if not isinstance(meta, dict) or any(
        not isinstance(v, str | int | float | bool) for v in meta.values()
    ):
        raise _bad(path, number, "\"metadata\" must be an object of scalar values")
    if chash != _sha256_text(text):
        raise _bad(path, number, "content_hash does not match the text")
    if not isinstance(vec, list) or len(vec) != dims or not all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in vec
    ):
        raise _bad(path, number, f"\"embedding\" must be {dims} finite numbers")
    return cid, text, meta, np.asarray(vec, dtype=np.float32)


def read_export(config: Config, path: str | Path) -> tuple[dict[str, Any], list[tuple[str, str, dict]], np.ndarray]:
    """Read and fully validate an export file without touching any store.

    Returns:
        ``(header, records, embeddings)``: records as ``(id, text, metadata)`` and a float32 matrix.

    Raises:
        UserError: The file is missing, foreign, truncated or corrupt (one line naming the problem).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    lines = _lines(path)
    first = next(lines, None)
    if first is None:
        raise UserError(f"{path}: empty file, not an xmrt knowledge-base export")
    header = _check_header(path, first[1], config)
    dims = header["dims"]
    digest = hashlib.sha256()
    records: list[tuple[str, str, dict]] = []
    vectors: list[np.ndarray] = []
    seen: set[str] = set()
    for number, raw in lines:
        if not raw.endswith(b"\n"):
            raise _bad(path, number, "the last line is cut off")
        digest.update(raw)
        cid, text, meta, vec = _check_record(path, number, raw, dims)
        if cid in seen:
            raise _bad(path, number, f"duplicate id {cid!r}")
        seen.add(cid)
        records.append((cid, text, meta))
        vectors.append(vec)
        if len(records) > header["count"]:
            raise _bad(path, number, f"more records than the {header['count']} the header announces")
    if len(records) != header["count"]:
        raise UserError(f"{path}: the header announces {header['count']} records but the file holds "
                        f"{len(records)}; the file is truncated, nothing was imported")
    if f"sha256:{digest.hexdigest()}" != header["checksum"]:
        raise UserError(f"{path}: checksum mismatch, the records were altered; nothing was imported")
    matrix = np.stack(vectors) if vectors else np.zeros((0, dims), dtype=np.float32)
    return header, records, matrix


def import_collection(config: Config, path: str | Path, collection: str | None = None) -> dict[str, Any]:
    """Validate the whole file, then upsert its chunks (with their embeddings) into ``collection``.

    Args:
        config: Runtime configuration.
        path: The export file.
        collection: Target collection; the one named in the file's header when None.

    Returns:
        ``{"collection", "imported", "embedding_model", "chunks"}`` (``chunks``: the collection's size after).

    Raises:
        UserError: Bad file (see :func:`read_export`), bad collection name, or a target collection built with
            another embedding model. In every case nothing was written.
    """
    from xmrt.kb.index import KnowledgeIndex, validate_collection_name

    header, records, matrix = read_export(config, path)
    target = validate_collection_name(collection or header["collection"])
    index = KnowledgeIndex(config, target)
    try:
        for start in range(0, len(records), PAGE):
            part = records[start : start + PAGE]
            index.upsert([r[0] for r in part], [r[1] for r in part], [r[2] for r in part],
                         embeddings=matrix[start : start + PAGE])
        total = index.count()
    finally:
        index.close()
    return {"collection": target, "imported": len(records), "embedding_model": header["embedding_model"],
            "chunks": total}
