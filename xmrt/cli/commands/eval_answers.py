"""``xmrt eval answers DIR``: answer quality on any folder of documents with a ``questions.jsonl``, end to end.

DIR holds documents (any files ``xmrt ingest`` reads) and ``questions.jsonl``: one ``{"question": ...,
"answers": ["accepted", "strings"]}`` per line. The documents are ingested into a collection of their own (named
after the folder's content, so a rerun reuses it), then each question goes through the real graph (``--mode
rag|rat|agentic``, the configured model: the offline one without an API key) and the answer is scored:

* **correct** (exact match): an accepted string occurs in the answer, compared case-, accent- and
  punctuation-insensitively (``1,200 XMR`` matches ``1200 xmr``); the sources footer does not count;
* **generated**: the model's own answer passed the grounding check (nodes.grounding); otherwise the answer
  quoted the passages (**extractive**) or said it did not know;
* **repeated**: the answer says a sentence twice;
* seconds per answer (p50, p95, mean) and to the first streamed token.

``--json`` prints one report object; ``--limit N`` asks the first N questions; ``--out FILE`` writes every answer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
import unicodedata
import uuid
from pathlib import Path
from typing import Any

from xmrt.cli import CommandTree
from xmrt.errors import UserError
from xmrt.kb.beir import read_jsonl

QUESTIONS = "questions.jsonl"


def normalize(text: str) -> str:
    """Lower case, accents off, numbers without separators, punctuation to spaces, spaces collapsed."""
    text = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode().lower()
    text = re.sub(r"(?<=\d)[,_](?=\d{3}\b)", "", text)
    return " ".join(re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", text))


def is_correct(answer: str, accepted: list[str]) -> bool:
    """Whether one of the accepted strings occurs in the answer (see the module docstring)."""
    body = f" {normalize(answer)} "
    return any(f" {normalize(a)} " in body for a in accepted if normalize(a))


def read_questions(directory: Path) -> list[dict[str, Any]]:
    """The questions of ``DIR/questions.jsonl``.

    Raises:
        UserError: The file is missing, or a line is not ``{"question": str, "answers": [str, ...]}``.
    """
    path = directory / QUESTIONS
    if not path.is_file():
        raise UserError(f"{path} is missing: put one {{\"question\": ..., \"answers\": [...]}} per line in it")
    out = []
    for n, record in read_jsonl(path):
        answers = record.get("answers")
        if not isinstance(record.get("question"), str) or not record["question"]:
            raise UserError(f"{path}:{n}: needs a non-empty 'question'")
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a for a in answers):
            raise UserError(f"{path}:{n}: 'answers' must be a non-empty list of strings")
        out.append({"question": record["question"], "answers": answers})
    if not out:
        raise UserError(f"{path} holds no questions")
    return out


def _collection(directory: Path) -> str:
    digest = hashlib.sha256(b"documents only")  # collections of older versions also held questions.jsonl
    for file in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != QUESTIONS):
        digest.update(str(file.relative_to(directory)).encode())
        digest.update(file.read_bytes())
    return f"eval-answers-{digest.hexdigest()[:12]}"


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def evaluate(directory: Path, mode: str = "rag", limit: int | None = None, progress: bool = True,
             answer_style: str | None = None) -> dict[str, Any]:
    """Ingest ``directory`` and ask its questions (see the module docstring); returns the report."""
    from tqdm import tqdm

    from nodes.citations import normalized, split_sentences, strip_footer
    from xmrt.cli.commands.ask import _builder, build_context, graph_input
    from xmrt.config import get_config
    from xmrt.kb.ingest import ingest_path
    from xmrt.llm.providers import describe_llm

    questions = read_questions(directory)[: limit or None]
    config = get_config()
    collection = _collection(directory)
    # The questions (and their accepted answers) are never part of the knowledge base.
    ingest_path(config, str(directory), collection=collection, progress=progress, exclude=(QUESTIONS,))
    graph = _builder(mode).compile()
    options = argparse.Namespace(collection=collection, k=None, model=None, max_new_tokens=None,
                                 reflection_steps=None, max_tool_calls=None, agent=None, answer_style=answer_style)
    context = build_context(mode, options, config)
    rows = []
    for item in tqdm(questions, desc="answering", unit="question", file=sys.stderr, disable=not progress):
        started, first = time.perf_counter(), None
        final_state: dict[str, Any] = {}
        for kind, chunk in graph.stream(graph_input(mode, item["question"]),
                                        {"configurable": {"thread_id": str(uuid.uuid4())}}, context=context,
                                        stream_mode=["custom", "values"]):
            if kind == "custom" and first is None:
                first = time.perf_counter() - started
            elif kind == "values":
                final_state = chunk
        seconds = time.perf_counter() - started
        answer = strip_footer(final_state.get("final_response") or "")
        sentences = [normalized(s) for s in split_sentences(answer)]
        grounding = (final_state.get("grounding") or {}).get("mode")
        if grounding is None:  # rat and agentic_rag: tell quotes and refusals by their opening
            grounding = ("extractive" if answer.startswith(("The knowledge base says:", "From what I remember:"))
                         else "none" if answer.startswith(("I don't know", "I found nothing")) else "generated")
        rows.append({"question": item["question"], "answers": item["answers"], "answer": answer,
                     "correct": is_correct(answer, item["answers"]), "mode": grounding,
                     "repeated": len(sentences) != len(set(sentences)), "seconds": round(seconds, 2),
                     "sources": [s.get("path") for s in final_state.get("sources") or [] if isinstance(s, dict)],
                     "first_token_s": round(first, 2) if first is not None else None})
    n = len(rows)
    times = [r["seconds"] for r in rows]
    firsts = [r["first_token_s"] for r in rows if r["first_token_s"] is not None]
    return {
        "directory": str(directory), "collection": collection, "mode": mode, "questions": n,
        "model": describe_llm(config), "answer_style": getattr(context, "answer_style", None),
        "exact_match": sum(r["correct"] for r in rows) / n,
        "generated_share": sum(r["mode"] == "generated" for r in rows) / n,
        "extractive_share": sum(r["mode"] == "extractive" for r in rows) / n,
        "dont_know_share": sum(r["mode"] == "none" for r in rows) / n,
        "repetition_share": sum(r["repeated"] for r in rows) / n,
        "seconds": {"p50": _percentile(times, 0.5), "p95": _percentile(times, 0.95), "mean": sum(times) / n},
        "first_token_s": {"p50": _percentile(firsts, 0.5), "p95": _percentile(firsts, 0.95)},
        "answers": rows,
    }


def _answers(args: argparse.Namespace) -> int:
    directory = Path(args.directory).expanduser()
    if not directory.is_dir():
        raise UserError(f"{directory} is not a directory")
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be at least 1")
    report = evaluate(directory, args.mode, args.limit, progress=not args.json, answer_style=args.answer_style)
    if args.out:
        Path(args.out).write_text(json.dumps(report["answers"], ensure_ascii=False, indent=1), encoding="utf-8")
    summary = {k: v for k, v in report.items() if k != "answers"}
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    print(f"{report['questions']} questions on {directory} ({args.mode}, model {summary['model'].get('model')})")
    print(f"  exact match      {summary['exact_match']:.1%}")
    print(f"  generated        {summary['generated_share']:.1%}   extractive {summary['extractive_share']:.1%}   "
          f"don't know {summary['dont_know_share']:.1%}")
    print(f"  repeated         {summary['repetition_share']:.1%}")
    s, f = summary["seconds"], summary["first_token_s"]
    print(f"  seconds/answer   p50 {s['p50']:.2f}  p95 {s['p95']:.2f}  mean {s['mean']:.2f}"
          + (f"   first token p50 {f['p50']:.2f}" if f["p50"] is not None else ""))
    for row in report["answers"]:
        if not row["correct"]:
            print(f"  wrong: {row['question']!r} -> {row['answer'][:160]!r} (accepted {row['answers']})")
    return 0


def register(cli: CommandTree) -> None:
    """Add ``eval answers``."""
    cli.group("eval", help="evaluate retrieval and answer quality")
    p = cli.command("eval", "answers", help="answer accuracy, grounding, repetition and speed on DIR/questions.jsonl",
                    handler=_answers, description=__doc__)
    p.add_argument("directory", help="a folder of documents with a questions.jsonl")
    p.add_argument("--mode", choices=("rag", "rat", "agentic"), default="rag", help="the graph that answers")
    p.add_argument("--limit", type=int, default=None, help="ask only the first N questions")
    p.add_argument("--answer-style", choices=("auto", "generate", "quote"), default=None,
                   help="rag: who words the answers (default: the graph's, auto)")
    p.add_argument("--out", default=None, help="write every question, answer and verdict to this JSON file")
    p.add_argument("--json", action="store_true", help="print one JSON report (no progress bars)")
