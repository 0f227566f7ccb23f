"""Build the answer-evaluation set ``pydoc``: public text of the Python Language Reference, with questions.

The documents are the Python reference topics that every CPython installation ships in ``pydoc_data.topics``
(the text ``help("assert")`` prints), written one topic per Markdown file, so the set is rebuilt offline and
identically from the interpreter. The questions (``pydoc/questions.jsonl``) were written by hand against those
texts; every accepted answer is checked to occur in the documents.

Usage: ``python benchmarks/answers/build.py OUT_DIR`` then ``xmrt eval answers OUT_DIR``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

TOPICS = ("assert", "break", "pass", "del", "lambda", "debugger", "nonlocal", "global", "return", "raise", "while",
          "yield", "imaginary", "floating", "truth", "with", "continue", "if", "for", "try", "import", "class")
HERE = Path(__file__).resolve().parent


def build(out: Path) -> Path:
    """Write the documents and copy the questions into ``out``; returns it."""
    from pydoc_data.topics import topics

    from xmrt.cli.commands.eval_answers import normalize

    out.mkdir(parents=True, exist_ok=True)
    corpus = []
    for name in TOPICS:
        text = topics[name].strip()
        (out / f"{name}.md").write_text(text + "\n", encoding="utf-8")
        corpus.append(normalize(text))
    shutil.copy(HERE / "pydoc" / "questions.jsonl", out / "questions.jsonl")
    whole = " " + " ".join(corpus) + " "
    for line in (out / "questions.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if not any(f" {normalize(a)} " in whole for a in record["answers"]):
            raise SystemExit(f"no accepted answer of {record['question']!r} occurs in the documents")
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "pydoc-answers")))
