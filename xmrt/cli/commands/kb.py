"""``xmrt ingest`` and ``xmrt kb export|import|list|stats|drop``: the knowledge base's CLI."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from xmrt.cli import CommandTree


def _config():
    from xmrt.config import create_config

    return create_config()


# -- ingest -------------------------------------------------------------------------------------------------


def run_ingest(config, source: str, *, branch: str | None = None, working_tree: bool = False, **context: Any
               ) -> dict[str, Any]:
    """Run the ingestion graph once; returns its summary."""
    from graphs.ingest import IngestContext, graph
    from xmrt.services import use_config

    ctx = IngestContext(**context)
    payload: dict[str, Any] = {"source": source}
    if branch:
        payload["branch"] = branch
    if working_tree:
        payload["working_tree"] = True
    with use_config(config):
        return graph.invoke(payload, context=ctx)["summary"]


def _ingest(args: argparse.Namespace) -> int:
    config = _config()
    start = time.perf_counter()
    summary = run_ingest(
        config, args.source, branch=args.branch, working_tree=args.working_tree, collection=args.collection,
        chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap, include=args.include or [],
        exclude=args.exclude or [], batch_chunks=args.batch, progress=not args.no_progress and not args.json,
    )
    summary["seconds"] = round(time.perf_counter() - start, 3)
    if args.json:
        print(json.dumps(summary))
        return 0
    files = summary["files"]
    where = summary["source"] + (f" (branch {summary['branch']}, {summary['commit'][:10]})"
                                 if summary["source_kind"] == "git" else "")
    print(f"ingested {where} into collection {summary['collection']!r} in {summary['seconds']:.1f}s")
    print(f"  files:  {files['added']} added, {files['updated']} updated, {files['unchanged']} unchanged, "
          f"{files['removed']} removed, {files['skipped']} skipped")
    print(f"  chunks: {summary['chunks_embedded']} embedded, {summary['chunks_removed']} removed, "
          f"{summary['chunks_in_collection']} in the collection")
    if summary["skipped"]:
        print("  skipped files:")
        for item in summary["skipped"]:
            print(f"    {item['source']}: {item['reason']}")
    return 0


# -- kb -----------------------------------------------------------------------------------------------------


def _export(args: argparse.Namespace) -> int:
    from xmrt.kb.transfer import export_collection

    header = export_collection(_config(), args.file, args.collection)
    print(f"exported {header['count']} chunks of collection {header['collection']!r} "
          f"({header['embedding_model']}, {header['dims']} dims) to {args.file}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from xmrt.kb.transfer import import_collection

    result = import_collection(_config(), args.file, args.collection)
    print(f"imported {result['imported']} chunks into collection {result['collection']!r} "
          f"(now {result['chunks']} chunks)")
    return 0


def _list(args: argparse.Namespace) -> int:
    from xmrt.kb.stats import kb_stats

    stats = kb_stats(_config())
    if not stats["available"]:
        from xmrt.errors import XmrtError

        raise XmrtError(f"knowledge base unavailable: {stats['error']}")
    if stats.get("read_only"):
        print("xmrt: the knowledge base is read-only; these figures come from a snapshot of it", file=sys.stderr)
    rows = [{"name": c["name"], "chunks": c["chunks"], "documents": c["documents"],
             "embedding_model": c["embedding_model"], "last_ingest": c["last_ingest"]} for c in stats["per_collection"]]
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no collections (ingest something: xmrt ingest PATH)")
    for r in rows:
        print(f"{r['name']:24} {r['chunks']:>8} chunks {r['documents']:>6} documents  {r['embedding_model'] or '?'}"
              f"  last ingest {r['last_ingest'] or '-'}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from xmrt.kb.stats import kb_stats

    stats = kb_stats(_config())
    if args.json:
        print(json.dumps(stats))
        return 0 if stats["available"] else 1
    if not stats["available"]:
        print(f"knowledge base unavailable: {stats['error']}")
        return 1
    if stats.get("read_only"):
        print("(read-only knowledge base: the figures come from a snapshot of it)")
    print(f"collections: {stats['collections']}   chunks: {stats['chunks']}   documents: {stats['documents']}   "
          f"sources: {stats['sources']}")
    print(f"embedding model: {stats['embedding_model']}   last ingest: {stats['last_ingest'] or '-'}")
    for c in stats["per_collection"]:
        types = ", ".join(f"{k or '(none)'}: {v}" for k, v in list(c["file_types"].items())[:8])
        print(f"  {c['name']}: {c['chunks']} chunks, {c['documents']} documents from {len(c['sources'])} source(s)"
              f"{'; ' + types if types else ''}")
    return 0


def _drop(args: argparse.Namespace) -> int:
    from xmrt.errors import UserError
    from xmrt.kb.index import KnowledgeIndex, validate_collection_name
    from xmrt.kb.stats import forget_collection

    config = _config()
    name = validate_collection_name(args.name)
    if name not in KnowledgeIndex.list_collections(config):
        raise UserError(f"no collection named {name!r} (see: xmrt kb list)")
    try:
        index = KnowledgeIndex(config, name)
    except UserError:  # built with another embedding model: delete it without opening it as ours
        import shutil

        from xmrt.kb.chroma import chroma_client

        client = chroma_client(config)
        collection_id = str(client.get_collection(name, embedding_function=None).id)
        client.delete_collection(name)
        shutil.rmtree(KnowledgeIndex.bm25_dir(config, name, collection_id), ignore_errors=True)
    else:
        index.drop()
    forget_collection(config, name)
    print(f"dropped collection {name!r}")
    return 0


def register(cli: CommandTree) -> None:
    """Add ``ingest`` and the ``kb`` group."""
    from xmrt.kb.splitting import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE

    p = cli.command(
        "ingest", help="ingest a folder, file or git repository into the knowledge base (incremental)",
        handler=_ingest,
        description=(
            "Ingest a folder, a file, or a git repository (clone URL or local repository path) into a\n"
            "knowledge-base collection. Re-ingesting embeds only new and changed files and removes the\n"
            "chunks of deleted files. Skipped files (binary, empty, not UTF-8, corrupt PDF...) are listed.\n\n"
            "examples:\n"
            "  xmrt ingest docs/ --collection docs --include '*.md'\n"
            "  xmrt ingest https://github.com/owner/repo --branch dev --exclude 'tests/*'"
        ),
    )
    p.add_argument("source", metavar="PATH_OR_GIT_URL", help="a file, a folder, a local git repository or a clone URL")
    p.add_argument("--collection", default="default", help="target collection (default: default)")
    p.add_argument("--include", action="append", metavar="GLOB", help="only paths matching GLOB (repeatable)")
    p.add_argument("--exclude", action="append", metavar="GLOB", help="leave out paths matching GLOB (repeatable)")
    p.add_argument("--branch", help="git branch to ingest (default: the repository's default branch)")
    p.add_argument("--working-tree", action="store_true",
                   help="read a local git repository's files as they are on disk instead of cloning its commits")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, metavar="N",
                   help=f"maximum chunk length in characters (default {DEFAULT_CHUNK_SIZE})")
    p.add_argument("--chunk-overlap", type=int, default=DEFAULT_CHUNK_OVERLAP, metavar="N",
                   help=f"characters shared by neighbouring chunks (default {DEFAULT_CHUNK_OVERLAP})")
    p.add_argument("--batch", type=int, default=2048, metavar="N", help="chunks embedded and written together")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")

    cli.group("kb", help="manage the knowledge base: export, import, list, stats, drop")
    p = cli.command("kb", "export", help="export a collection (texts, metadata, hashes, embeddings) to JSONL",
                    handler=_export)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--collection", default="default", help="collection to export (default: default)")
    p = cli.command("kb", "import", help="import a JSONL export (validated completely before anything is written)",
                    handler=_import)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--collection", help="target collection (default: the one named in the file)")
    p = cli.command("kb", "list", help="list collections with chunk counts", handler=_list)
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p = cli.command("kb", "stats", help="documents, chunks, sources, collections, model, last ingest", handler=_stats)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = cli.command("kb", "drop", help="delete a collection and its BM25 index", handler=_drop)
    p.add_argument("name", metavar="NAME")
