"""Builders of BEIR-format retrieval sets from public text that is on this machine, none of it like MS MARCO.

Each builder is deterministic for the same inputs (sorted inputs, seeded sampling) and writes ``corpus.jsonl``,
``queries.jsonl``, ``qrels/test.tsv`` and ``SOURCE.json`` (what it was built from: package versions, counts,
seed). Run ``xmrt eval build-set KIND DIR`` (or ``python -m benchmarks.evalsets KIND DIR``), then
``xmrt eval retrieval DIR``.

* ``entities``: the Free On-line Dictionary of Computing (Debian package ``dict-foldoc``, installed with
  ``apt-get install dict-foldoc``; read from ``/usr/share/dictd/foldoc.*``). Every entry is an entity (a
  language, machine, company, person, protocol...). Passages are entries: title = headword, text = the
  definition with cross-reference braces removed. Queries are of two kinds, alternating: *name* queries (the
  headword alone, e.g. "Altair 8800", as in DBpedia-entity's named-entity queries) and *description* queries (the
  definition's first sentence with the headword masked; that sentence is then removed from the passage). One
  relevant passage per query (score 1).
* ``manpages``: long technical reports: the manual pages installed under ``/usr/share/man`` (sections 1, 5, 7, 8).
  Query = the one-line description of the NAME section ("list directory contents"); passage = the rest of the
  page (synopsis, description, options...) as plain text, up to 6,000 characters, title = the page name. Pages
  that only redirect (``.so``) or whose description is not unique are skipped. One relevant passage per query.
* ``code``: code search over this interpreter's standard library (as in ``xmrt bench fusion``): query = the
  first sentence of a public function's docstring, passage = the function's source without the docstring.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import platform
import random
import re
import sys
from pathlib import Path

KINDS = ("entities", "manpages", "code")
FOLDOC_DIR = Path("/usr/share/dictd")
MAN_DIR = Path("/usr/share/man")
MAN_SECTIONS = ("man1", "man5", "man7", "man8")


class BuildError(RuntimeError):
    """A set cannot be built on this machine (its source text is missing)."""


def _write(root: Path, corpus: list[dict], queries: list[tuple[str, str]], qrels: dict[str, dict[str, int]],
           source: dict) -> Path:
    root = Path(root)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for doc in corpus:
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    with (root / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for qid, text in queries:
            fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with (root / "qrels" / "test.tsv").open("w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, rels in qrels.items():
            for doc_id, score in rels.items():
                fh.write(f"{qid}\t{doc_id}\t{score}\n")
    digest = hashlib.sha256((root / "corpus.jsonl").read_bytes()).hexdigest()
    source = {**source, "passages": len(corpus), "queries": len(queries), "corpus_sha256": digest,
              "python": platform.python_version()}
    (root / "SOURCE.json").write_text(json.dumps(source, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return root


def _first_sentence(text: str) -> tuple[str, str]:
    parts = re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)
    return parts[0], (parts[1] if len(parts) > 1 else "")


# -- entities: FOLDOC --------------------------------------------------------------------------------------------

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _dictd_number(text: str) -> int:
    value = 0
    for ch in text:
        value = value * 64 + _B64.index(ch)
    return value


def _foldoc_entries(directory: Path) -> list[tuple[str, str]]:
    index, data = directory / "foldoc.index", directory / "foldoc.dict.dz"
    if not index.is_file() or not data.is_file():
        raise BuildError(f"FOLDOC is not installed ({index} missing): apt-get install dict-foldoc")
    raw = gzip.open(data).read()  # dictzip is gzip-compatible
    entries: dict[tuple[int, int], str] = {}
    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or parts[0].startswith("00-database"):
            continue
        entries.setdefault((_dictd_number(parts[1]), _dictd_number(parts[2])), parts[0])
    out = []
    for (offset, length), _ in sorted(entries.items()):
        body = raw[offset : offset + length].decode("utf-8", errors="replace")
        lines = body.splitlines()
        if not lines:
            continue
        head = lines[0].strip()
        text = " ".join(" ".join(lines[1:]).split())
        out.append((head, text))
    return out


def _clean_foldoc(text: str) -> str:
    text = re.sub(r"\(\d{4}-\d{2}-\d{2}\)", " ", text)  # revision dates
    text = re.sub(r"<[a-z ,-]+>", " ", text, count=1)  # the category tag, e.g. <language>
    text = text.replace("{", "").replace("}", "")
    return " ".join(text.split())


def build_entities(root: Path, n_corpus: int = 5000, n_queries: int = 300, seed: int = 16,
                   directory: Path = FOLDOC_DIR) -> Path:
    """The ``entities`` set described in the module docstring."""
    rng = random.Random(seed)
    entries = []
    seen = set()
    for head, text in _foldoc_entries(directory):
        clean = _clean_foldoc(text)
        if head.lower() in seen or len(clean.split()) < 30 or clean.lower().startswith("see "):
            continue
        seen.add(head.lower())
        entries.append((head, clean))
    rng.shuffle(entries)
    entries = entries[:n_corpus]
    picked = set(rng.sample(range(len(entries)), min(n_queries, len(entries))))
    corpus, queries, qrels = [], [], {}
    for i, (head, text) in enumerate(entries):
        doc_id = f"e{i}"
        if i in picked:
            qid = f"q{len(queries)}"
            if len(queries) % 2 == 0:
                queries.append((qid, head))
            else:
                first, rest = _first_sentence(text)
                masked = re.sub(re.escape(head), " ", first, flags=re.IGNORECASE)
                masked = " ".join(masked.split())
                if len(masked.split()) >= 5 and len(rest.split()) >= 15:
                    queries.append((qid, masked))
                    text = rest
                else:
                    queries.append((qid, head))
            qrels[qid] = {doc_id: 1}
        corpus.append({"_id": doc_id, "title": head, "text": text})
    return _write(root, corpus, queries, qrels, {"kind": "entities", "from": "Debian dict-foldoc",
                                                  "file": str(directory / "foldoc.dict.dz"), "seed": seed})


# -- long reports: manual pages ----------------------------------------------------------------------------------

_ESCAPES = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\s[+-]?\d"), ""),  # size changes
    (re.compile(r"\\\*(\[[^\]]*\]|\(..|.)"), ""),  # strings
    (re.compile(r"\\\((em|en|hy)"), "-"),
    (re.compile(r"\\\([a-zA-Z]{2}"), ""),
    (re.compile(r"\\\[[^\]]*\]"), ""),
    (re.compile(r"\\[-e]"), lambda m: "-" if m.group(0) == "\\-" else "\\"),
    (re.compile(r"\\[&|^:%c0 ]"), " "),
    (re.compile(r"\\\""), ""),
]
_TEXT_MACROS = {"B", "I", "BI", "BR", "IB", "IR", "RB", "RI", "SM", "SB", "SH", "SS", "TP", "IP", "Nm", "Nd",
                "Ar", "Fl", "Op", "Xr", "Pa", "Dv", "Em", "Sy", "Li", "Cm", "It", "Sh", "Ss", "Va", "Fn", "Fa"}


def _troff_text(line: str) -> str:
    if line.startswith(("'", ".")):
        parts = line[1:].strip().split(None, 1)
        if not parts or parts[0] not in _TEXT_MACROS:
            return ""
        line = parts[1] if len(parts) > 1 else ""
        line = line.replace('"', "")
    if line.startswith('.\\"') or line.startswith('\\"'):
        return ""
    for pattern, repl in _ESCAPES:
        line = pattern.sub(repl, line)
    return line.replace("\\", "")


def _man_page(path: Path) -> tuple[str, str] | None:
    try:
        raw = gzip.open(path).read().decode("utf-8", errors="replace") if path.suffix == ".gz" else path.read_text(
            encoding="utf-8", errors="replace")
    except (OSError, EOFError):
        return None
    if raw.lstrip().startswith(".so "):
        return None
    lines = raw.splitlines()
    name_at = next((i for i, line in enumerate(lines)
                    if re.match(r'^\.(SH|Sh)\s+"?(NAME|Name)"?\s*$', line.strip())), None)
    if name_at is None:
        return None
    name_text, body_start = [], None
    for j in range(name_at + 1, len(lines)):
        if re.match(r"^\.(SH|Sh)\b", lines[j]):
            body_start = j
            break
        text = _troff_text(lines[j]).strip()
        if text:
            name_text.append(text)
    if body_start is None:
        return None
    name_line = " ".join(name_text)
    if " - " not in name_line and " -- " not in name_line:
        return None
    description = re.split(r"\s+--?\s+", name_line, maxsplit=1)[1].strip()
    body = " ".join(t for t in (_troff_text(line).strip() for line in lines[body_start:]) if t)
    return description, " ".join(body.split())


def build_manpages(root: Path, n_corpus: int = 5000, n_queries: int = 300, seed: int = 16,
                   directory: Path = MAN_DIR, max_chars: int = 6000) -> Path:
    """The ``manpages`` set described in the module docstring."""
    rng = random.Random(seed)
    pages = []
    for section in MAN_SECTIONS:
        pages.extend(sorted((directory / section).glob("*")))
    if not pages:
        raise BuildError(f"no manual pages under {directory} ({', '.join(MAN_SECTIONS)})")
    rng.shuffle(pages)
    by_description: dict[str, list] = {}
    docs = []
    for path in pages:
        if len(docs) >= 3 * n_corpus:
            break
        parsed = _man_page(path)
        if parsed is None:
            continue
        description, body = parsed
        if len(description.split()) < 3 or len(body.split()) < 60:
            continue
        title = path.name.split(".gz")[0]
        docs.append((title, description, body[:max_chars]))
        by_description.setdefault(description.lower(), []).append(title)
    docs = [d for d in docs if len(by_description[d[1].lower()]) == 1][:n_corpus]
    picked = sorted(rng.sample(range(len(docs)), min(n_queries, len(docs))))
    corpus = [{"_id": f"m{i}", "title": title, "text": body} for i, (title, _, body) in enumerate(docs)]
    queries = [(f"q{n}", docs[i][1]) for n, i in enumerate(picked)]
    qrels = {f"q{n}": {f"m{i}": 1} for n, i in enumerate(picked)}
    return _write(root, corpus, queries, qrels, {"kind": "manpages", "from": str(directory),
                                                  "sections": list(MAN_SECTIONS), "seed": seed,
                                                  "pages_seen": len(pages)})


# -- code ----------------------------------------------------------------------------------------------------------


def build_code(root: Path, n_corpus: int = 2500, n_queries: int = 300, seed: int = 13) -> Path:
    """The ``code`` set: xmrt bench fusion's code-search set over this interpreter's standard library."""
    from benchmarks import fusion_study

    fusion_study.build_code(Path(root), n_corpus=n_corpus, n_queries=n_queries, seed=seed)
    corpus_path = Path(root) / "corpus.jsonl"
    corpus = [json.loads(line) for line in corpus_path.read_text(encoding="utf-8").splitlines()]
    queries = [(q["_id"], q["text"]) for q in map(json.loads, (Path(root) / "queries.jsonl").read_text(
        encoding="utf-8").splitlines())]
    qrels: dict[str, dict[str, int]] = {}
    for line in (Path(root) / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        qid, doc_id, score = line.split("\t")
        qrels.setdefault(qid, {})[doc_id] = int(score)
    return _write(root, corpus, queries, qrels, {"kind": "code", "from": "Python standard library",
                                                  "stdlib_python": platform.python_version(), "seed": seed})


BUILDERS = {"entities": build_entities, "manpages": build_manpages, "code": build_code}


def build(kind: str, root: str | Path, **kwargs) -> Path:
    """Build the set ``kind`` (one of KINDS) into ``root``."""
    if kind not in BUILDERS:
        raise BuildError(f"unknown set {kind!r}: choose one of {', '.join(KINDS)}")
    return BUILDERS[kind](Path(root), **kwargs)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m benchmarks.evalsets KIND DIR``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("directory")
    args = parser.parse_args(argv)
    try:
        out = build(args.kind, args.directory)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.loads((out / "SOURCE.json").read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
