"""Build the answer-evaluation set ``pydoc``: public text of the Python Language Reference, with questions.

The documents are the Python reference topics that every CPython installation ships in ``pydoc_data.topics``
(the text ``help("assert")`` prints), written one topic per Markdown file, so the set is rebuilt offline and
identically from the interpreter. The questions (``pydoc/questions.jsonl``) were written by hand against those
texts; every accepted answer is checked to occur in the documents.

Usage: ``python benchmarks/answers/build.py OUT_DIR [pydoc|pydoc2|foldoc]`` then ``xmrt eval answers OUT_DIR``.
The second set, ``pydoc2``, covers other topics. The third, ``foldoc``, is encyclopedic prose of another kind: 15
entries of the Free On-line Dictionary of Computing (Debian ``dict-foldoc``) that answer its questions among 285
other entries (a seeded sample), one file each; its questions were written before any answer was seen. The
fourth, ``manpages``, is reference text of a third kind: 12 manual pages of GNU coreutils and grep as installed
under /usr/share/man (option lists, troff stripped).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

SETS = {
    "pydoc": ("assert", "break", "pass", "del", "lambda", "debugger", "nonlocal", "global", "return", "raise", "while",
              "yield", "imaginary", "floating", "truth", "with", "continue", "if", "for", "try", "import", "class"),
    # Written later, by one who had not seen how the system answers them: a check on tuning to the first set.
    "pydoc2": ("booleans", "exceptions", "conversions", "power", "shifting", "unary", "bltin-null-object",
               "bltin-ellipsis-object", "dynamic-features", "typesmodules", "integers", "in", "else", "lists", "dict",
               "context-managers", "bitwise", "await"),
}
HERE = Path(__file__).resolve().parent


FOLDOC_ENTRIES = ("Altair 8800", "Ada", "Lisp", "Ethernet", "Turing Machine", "Fortran", "Smalltalk", "Prolog", "Emacs",
                  "Perl", "Haskell", "Multics", "Mosaic", "Unix", "BASIC")


def _pydoc_documents(name: str) -> dict[str, str]:
    from pydoc_data.topics import topics

    return {f"{topic}.md": topics[topic].strip() for topic in SETS[name]}


def _foldoc_documents(distractors: int = 285, seed: int = 15) -> dict[str, str]:
    """The answering entries and ``distractors`` other entries of FOLDOC (seeded sample), one file each."""
    import random
    import re

    from benchmarks.evalsets import FOLDOC_DIR, _clean_foldoc, _foldoc_entries

    entries: dict[str, tuple[str, str]] = {}
    for head, text in _foldoc_entries(FOLDOC_DIR):
        clean = _clean_foldoc(text)
        if len(clean.split()) >= 30 and not clean.lower().startswith("see "):
            entries.setdefault(head.lower(), (head, clean))
    wanted = [entries[h.lower()] for h in FOLDOC_ENTRIES]
    others = sorted(k for k in entries if k not in {h.lower() for h in FOLDOC_ENTRIES})
    chosen = wanted + [entries[k] for k in random.Random(seed).sample(others, distractors)]
    return {re.sub(r"[^A-Za-z0-9]+", "_", head).strip("_") + ".md": f"# {head}\n\n{text}" for head, text in chosen}


MAN_PAGES = ("ls", "cp", "mv", "rm", "grep", "sort", "head", "tail", "wc", "du", "df", "date")


def _man_documents(directory: Path = Path("/usr/share/man/man1")) -> dict[str, str]:
    """GNU coreutils' and grep's manual pages as this machine has them, troff stripped (benchmarks.evalsets)."""
    from benchmarks.evalsets import _man_page

    out = {}
    for name in MAN_PAGES:
        page = _man_page(directory / f"{name}.1.gz")
        if page is None:
            raise SystemExit(f"no manual page {name}(1) under {directory}")
        out[f"{name}.md"] = f"# {name}: {page[0]}\n\n{page[1]}"
    return out


def build(out: Path, name: str = "pydoc") -> Path:
    """Write the documents of set ``name`` and copy its questions into ``out``; returns it."""
    from xmrt.cli.commands.eval_answers import normalize

    out.mkdir(parents=True, exist_ok=True)
    corpus = []
    documents = (_foldoc_documents() if name == "foldoc" else _man_documents() if name == "manpages"
                 else _pydoc_documents(name))
    for file_name, text in documents.items():
        (out / file_name).write_text(text + "\n", encoding="utf-8")
        corpus.append(normalize(text))
    shutil.copy(HERE / name / "questions.jsonl", out / "questions.jsonl")
    whole = " " + " ".join(corpus) + " "
    for line in (out / "questions.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if not any(f" {normalize(a)} " in whole for a in record["answers"]):
            raise SystemExit(f"no accepted answer of {record['question']!r} occurs in the documents")
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "pydoc-answers"), *sys.argv[2:3]))
