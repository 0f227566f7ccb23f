"""Reading BEIR-format retrieval datasets, with one-line errors for bad input.

A BEIR directory holds:

* ``corpus.jsonl``: one JSON object a line with ``_id``, ``text`` and optionally ``title``;
* ``queries.jsonl``: one JSON object a line with ``_id`` and ``text``;
* ``qrels/test.tsv``: ``query-id<TAB>corpus-id<TAB>score`` lines, graded relevance (0 = not relevant).
  The header line ``query-id corpus-id score`` is optional (MS MARCO's TREC-DL files lack it).

Passages are indexed as ``title + " " + text`` (the BEIR convention), or the text alone without a title.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from xmrt.errors import UserError

QRELS_CANDIDATES = ("qrels/test.tsv",)


@dataclass
class BeirDataset:
    """A loaded BEIR dataset: passages, queries and graded judgments."""

    directory: Path
    corpus_ids: list[str]
    corpus_texts: list[str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    corpus_sha256: str
    corpus_titles: list[str] = field(default_factory=list)

    @property
    def judged_queries(self) -> list[str]:
        """Ids of queries with at least one relevant (score > 0) judged passage, in the qrels' order."""
        return [q for q, rels in self.qrels.items() if q in self.queries and any(s > 0 for s in rels.values())]


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """The JSON objects of a JSON-lines file with their line numbers (blank lines skipped).

    Raises:
        UserError: The file cannot be read, is not UTF-8, or a line is not a JSON object (naming file and line).
    """
    try:
        handle = path.open("r", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        try:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
                if not isinstance(obj, dict):
                    raise UserError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
                yield number, obj
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text") from None


def _require_file(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise UserError(f"{directory} is not a BEIR dataset: missing {name}")
    return path


def _id(obj: dict, path: Path, number: int) -> str:
    value = obj.get("_id")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise UserError(f"{path}:{number}: missing \"_id\"")
    return str(value)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def load_beir(directory: str | Path) -> BeirDataset:
    """Load and validate a BEIR directory.

    Raises:
        UserError: A file is missing or unreadable, a line is not a JSON object, an ``_id``/``text`` is missing,
            a qrels line is malformed (each error names the file and line), or nothing is left to evaluate.
    """
    root = Path(directory).expanduser()
    if not root.exists():
        raise UserError(f"{root}: no such directory")
    if not root.is_dir():
        raise UserError(f"{root}: not a directory")
    corpus_path = _require_file(root, "corpus.jsonl")
    queries_path = _require_file(root, "queries.jsonl")
    qrels_path = _require_file(root, "qrels/test.tsv")

    ids: list[str] = []
    texts: list[str] = []
    titles: list[str] = []
    seen: set[str] = set()
    for number, obj in read_jsonl(corpus_path):
        doc_id = _id(obj, corpus_path, number)
        text = obj.get("text")
        if not isinstance(text, str):
            raise UserError(f"{corpus_path}:{number}: missing \"text\" string")
        if doc_id in seen:
            raise UserError(f"{corpus_path}:{number}: duplicate _id {doc_id!r}")
        seen.add(doc_id)
        title = obj.get("title") or ""
        title = title if isinstance(title, str) else str(title)
        ids.append(doc_id)
        titles.append(title)
        texts.append(f"{title} {text}".strip() if title else text)
    if not ids:
        raise UserError(f"{corpus_path}: no passages")

    queries: dict[str, str] = {}
    for number, obj in read_jsonl(queries_path):
        text = obj.get("text")
        if not isinstance(text, str):
            raise UserError(f"{queries_path}:{number}: missing \"text\" string")
        queries[_id(obj, queries_path, number)] = text

    qrels: dict[str, dict[str, int]] = {}
    try:
        lines = qrels_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {qrels_path}: {exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if number == 1 and [p.strip().lower() for p in parts[:3]] == ["query-id", "corpus-id", "score"]:
            continue
        if len(parts) == 4:  # TREC qrels: query-id, iteration, corpus-id, score
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise UserError(f"{qrels_path}:{number}: expected 'query-id<TAB>corpus-id<TAB>score', got {line!r}")
        try:
            score = int(float(parts[2]))
        except ValueError:
            raise UserError(f"{qrels_path}:{number}: score {parts[2]!r} is not a number") from None
        qrels.setdefault(parts[0].strip(), {})[parts[1].strip()] = score

    dataset = BeirDataset(root, ids, texts, queries, qrels, file_sha256(corpus_path), titles)
    if not dataset.judged_queries:
        raise UserError(f"{root}: no query in queries.jsonl has a relevant judgment in qrels/test.tsv")
    return dataset
