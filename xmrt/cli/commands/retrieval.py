"""``xmrt eval retrieval DIR`` and ``xmrt eval build-set``: retrieval quality on BEIR-format sets."""

from __future__ import annotations

import argparse
import json
import sys

from xmrt.cli import CommandTree

_EVAL_HELP = """\
Evaluate semantic, BM25 and hybrid search on a BEIR-format directory:
  DIR/corpus.jsonl    one JSON object a line: _id, text, optional title
  DIR/queries.jsonl   one JSON object a line: _id, text
  DIR/qrels/test.tsv  query-id<TAB>corpus-id<TAB>score (graded; the header line is optional)

The corpus is ingested into a throw-away collection that is deleted afterwards; the hybrid mode's dense
weight is then calibrated on that collection alone (pseudo-queries cut from its own passages; the judged
queries are never looked at), as every ingest does. Corpus embeddings are
cached under <data dir>/kb/eval-cache, keyed by embedding model and corpus file hash, so a repeated
evaluation embeds nothing. Prints nDCG@10, recall@10, recall@100 and MRR@10 per mode; with --json the
last line of output is one JSON object.
"""

def _config():
    from xmrt.config import create_config

    return create_config()


def _eval(args: argparse.Namespace) -> int:
    from xmrt.kb.evaluate import evaluate_retrieval, format_results, to_json

    def status(msg: str) -> None:
        print(msg, file=sys.stderr)

    result = evaluate_retrieval(
        _config(), args.directory, args.mode, collection=args.collection, limit_queries=args.limit_queries,
        progress=not args.no_progress, on_status=status,
    )
    print(format_results(result))
    if args.json:
        print(to_json(result))
    return 0


def _build_set(args: argparse.Namespace) -> int:
    from benchmarks.evalsets import BuildError, build
    from xmrt.errors import UserError

    try:
        out = build(args.kind, args.directory)
    except BuildError as exc:
        raise UserError(str(exc)) from None
    source = json.loads((out / "SOURCE.json").read_text(encoding="utf-8"))
    print(f"built {args.kind} in {out}: {source['passages']} passages, {source['queries']} queries "
          f"(corpus sha256 {source['corpus_sha256'][:16]}); evaluate it with: xmrt eval retrieval {out}")
    return 0


def register(cli: CommandTree) -> None:
    """Add ``eval retrieval`` and ``eval build-set``."""
    cli.group("eval", help="evaluate retrieval quality")
    p = cli.command("eval", "retrieval", help="nDCG@10, recall@10/100, MRR@10 per search mode on a BEIR directory",
                    handler=_eval, description=_EVAL_HELP)
    p.add_argument("directory", metavar="DIR", help="BEIR-format dataset directory")
    p.add_argument("--mode", choices=("semantic", "bm25", "hybrid", "all"), default="all", help="default: all")
    p.add_argument("--json", action="store_true", help="end the output with one JSON line")
    p.add_argument("--collection", metavar="NAME", help="name of the throw-away collection (must not exist)")
    p.add_argument("--limit-queries", type=int, metavar="N", help="evaluate only the first N judged queries")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while embedding")

    from benchmarks.evalsets import KINDS
    from benchmarks.evalsets import __doc__ as sets_doc

    p = cli.command("eval", "build-set", help="build a BEIR-format set from public text on this machine",
                    handler=_build_set, description=sets_doc)
    p.add_argument("kind", choices=KINDS, help="entities (FOLDOC), manpages (/usr/share/man) or code (stdlib)")
    p.add_argument("directory", metavar="DIR",
                   help="where to write corpus.jsonl, queries.jsonl, qrels/ and SOURCE.json")
