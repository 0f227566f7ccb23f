"""``xmrt ingest``, ``xmrt kb export|import|list|stats|drop`` and ``xmrt bench ingest``: the knowledge base's CLI."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from xmrt.cli import CommandTree

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_BENCH_CORPUS = ROOT.parent / "shared" / "eval" / "msmarco" / "corpus.jsonl"
DEFAULT_BENCH_CODE = ("langchain_text_splitters",)


def _config():
    from xmrt.config import create_config

    return create_config()


# -- ingest -------------------------------------------------------------------------------------------------


def run_ingest(config, source: str, *, branch: str | None = None, working_tree: bool = False, **context: Any
               ) -> dict[str, Any]:
    """Run the ingestion graph once; returns its summary."""
    from graphs.ingest import IngestContext, graph

    ctx = IngestContext(config=config, **context)
    payload: dict[str, Any] = {"source": source}
    if branch:
        payload["branch"] = branch
    if working_tree:
        payload["working_tree"] = True
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


# -- bench --------------------------------------------------------------------------------------------------


def _write_corpus(target: Path, corpus_jsonl: Path, passages: int, code_packages: tuple[str, ...]) -> dict[str, int]:
    """Write MS MARCO passages as text files and copy the sources of a few installed packages."""
    import importlib.util
    import shutil

    from xmrt.errors import UserError

    counts = {"passages": 0, "code_files": 0}
    if passages:
        if not corpus_jsonl.is_file():
            raise UserError(f"{corpus_jsonl}: no such file (pass --corpus-jsonl)")
        out = target / "msmarco"
        out.mkdir(parents=True)
        with corpus_jsonl.open(encoding="utf-8") as handle:
            for line in handle:
                if counts["passages"] >= passages:
                    break
                rec = json.loads(line)
                text = f"{rec.get('title') or ''}\n\n{rec['text']}".strip() + "\n"
                (out / f"{rec['_id']}.txt").write_text(text, encoding="utf-8")
                counts["passages"] += 1
    for name in code_packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"package {name!r} is not installed (pass other --code packages)")
        src = Path(list(spec.submodule_search_locations)[0])
        shutil.copytree(src, target / "code" / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        counts["code_files"] += sum(1 for _ in (target / "code" / name).rglob("*.py"))
    return counts


def _prepare_texts(config, corpus: Path, chunk_size: int, chunk_overlap: int) -> list[str]:
    """The chunk texts the pipeline will embed (same loader and splitter), for the raw-model measurement."""
    from xmrt.kb.ingest import IngestSettings, scan_source
    from xmrt.kb.loaders import SkipFile, load_file
    from xmrt.kb.sources import resolve_source
    from xmrt.kb.splitting import build_chunks

    resolved = resolve_source(config, str(corpus))
    files, _ = scan_source(resolved, IngestSettings(chunk_size=chunk_size, chunk_overlap=chunk_overlap,
                                                    progress=False))
    texts: list[str] = []
    for f in files:
        try:
            doc = load_file(f["path"])
        except SkipFile:
            continue
        chunks = build_chunks(doc, source=f["source"], source_root=resolved.source_root, file_hash=f["file_hash"],
                              chunk_size=chunk_size, chunk_overlap=chunk_overlap)
        texts.extend({c.id: c.text for c in chunks}.values())
    return texts


def _bench_ingest(args: argparse.Namespace) -> int:
    import logging
    import os
    import shutil
    import statistics
    import tempfile

    import graphs.ingest  # noqa: F401 - imported before any timed region
    from xmrt.errors import UserError, XmrtError
    from xmrt.kb.index import KnowledgeIndex
    from xmrt.llm.embeddings import embedding_engine, embedding_model_id, get_embeddings

    if args.rounds < 1 or args.passages < 0 or args.engine_rounds < 1:
        raise UserError("--rounds and --engine-rounds must be >= 1 and --passages >= 0")
    from xmrt.config import EMBEDDING_ENGINES

    if args.compare_engine not in (*EMBEDDING_ENGINES, "none"):
        raise UserError(f"--compare-engine {args.compare_engine!r} must be one of "
                        f"{', '.join(EMBEDDING_ENGINES)} or none")
    logging.getLogger("xmrt.kb").setLevel(logging.ERROR)
    base = _config()
    work = Path(tempfile.mkdtemp(prefix="xmrt-bench-ingest-"))
    try:
        config = base.with_overrides(data_dir=work / "data", vector_store_dir=work / "data" / "chroma",
                                     chroma_host=None)
        corpus = work / "corpus"
        counts = _write_corpus(corpus, Path(args.corpus_jsonl), args.passages, tuple(args.code or DEFAULT_BENCH_CODE))
        texts = _prepare_texts(config, corpus, args.chunk_size, args.chunk_overlap)
        n = len(texts)
        model = get_embeddings(config)
        model.embed_documents(texts[:64])  # load and warm the model outside every timed region
        KnowledgeIndex.list_collections(config)  # open the Chroma client, as a running service has it open

        def log(message: str) -> None:
            if not args.json:
                print(message, file=sys.stderr, flush=True)

        def raw() -> tuple[float, float]:
            wall, cpu = time.perf_counter(), time.process_time()
            model.embed_documents(texts)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            log(f"  raw model: {n / wall:.1f} chunks/s ({wall:.1f}s wall, {cpu:.1f}s CPU)")
            return wall, cpu

        def ingest(collection: str) -> tuple[float, float, dict]:
            wall, cpu = time.perf_counter(), time.process_time()
            summary = run_ingest(config, str(corpus), collection=collection, chunk_size=args.chunk_size,
                                 chunk_overlap=args.chunk_overlap, progress=False)
            return time.perf_counter() - wall, time.process_time() - cpu, summary

        # raw, pipeline, raw, pipeline, raw...: every pipeline run is compared with the raw runs on either side,
        # so a change of load on the machine during the benchmark does not masquerade as pipeline overhead.
        # CPU time (all threads of this process) is reported too: it does not depend on what else runs.
        load_before = os.getloadavg()[0]
        raws = [raw()]
        rounds = []
        for r in range(args.rounds):
            wall, cpu, summary = ingest(f"bench{r}")
            if summary["chunks_embedded"] != n:
                raise XmrtError(f"the pipeline embedded {summary['chunks_embedded']} chunks, expected {n}")
            log(f"  pipeline:  {n / wall:.1f} chunks/s ({wall:.1f}s wall, {cpu:.1f}s CPU)")
            raws.append(raw())
            raw_wall = (n / raws[-2][0] + n / raws[-1][0]) / 2
            raw_cpu = (n / raws[-2][1] + n / raws[-1][1]) / 2
            rounds.append({"wall": wall, "cpu": cpu, "ratio": (n / wall) / raw_wall, "cpu_ratio": (n / cpu) / raw_cpu})
        re_times = []
        for _ in range(3):
            seconds, _, again = ingest("bench0")
            re_times.append(seconds)
            if again["chunks_embedded"] != 0:
                raise XmrtError(f"re-ingest of an unchanged corpus embedded {again['chunks_embedded']} chunks")
        inc_s = None
        if counts["passages"]:  # one changed file: the incremental path
            changed = sorted((corpus / "msmarco").glob("*.txt"))[0]
            changed.write_text(changed.read_text(encoding="utf-8") + "Edited for the benchmark.\n", encoding="utf-8")
            inc_s, _, _ = ingest("bench0")
        load_after = os.getloadavg()[0]
        raw_cps = statistics.median(n / w for w, _ in raws)
        pipe_cps = statistics.median(n / r["wall"] for r in rounds)
        ratio = statistics.median(r["ratio"] for r in rounds)
        cpu_ratio = statistics.median(r["cpu_ratio"] for r in rounds)
        first_s = statistics.median(r["wall"] for r in rounds)
        re_s = statistics.median(re_times)
        result = {
            "embedding_model": embedding_model_id(config),
            "files": counts, "chunks": n, "unique_chunk_texts": len(set(texts)),
            "chunk_size": args.chunk_size, "chunk_overlap": args.chunk_overlap,
            "raw_model_chunks_per_s": round(raw_cps, 2),
            "raw_runs_s": [round(w, 2) for w, _ in raws],
            "raw_runs_cpu_s": [round(c, 2) for _, c in raws],
            "pipeline_chunks_per_s": round(pipe_cps, 2),
            "pipeline_runs_s": [round(r["wall"], 2) for r in rounds],
            "pipeline_runs_cpu_s": [round(r["cpu"], 2) for r in rounds],
            "round_ratios": [round(r["ratio"], 3) for r in rounds],
            "throughput_ratio": round(ratio, 3),
            "cpu_round_ratios": [round(r["cpu_ratio"], 3) for r in rounds],
            "cpu_throughput_ratio": round(cpu_ratio, 3),
            "load_average": [round(load_before, 2), round(load_after, 2)],
            "first_ingest_s": round(first_s, 2),
            "reingest_unchanged_s": round(re_s, 3),
            "reingest_runs_s": [round(x, 3) for x in re_times],
            "reingest_speedup": round(first_s / re_s, 1),
            "one_file_changed_s": round(inc_s, 3) if inc_s is not None else None,
            "targets_met": {"throughput_ratio>=0.85": ratio >= 0.85, "reingest_speedup>=20": first_s / re_s >= 20},
        }
        if args.compare_engine not in ("none", embedding_engine(config)):
            result["engines"] = _compare_engines(config, args.compare_engine, texts, args.engine_rounds, log)
            result["targets_met"]["cpu_speedup_vs_torch>=2"] = result["engines"]["cpu_speedup"] >= 2.0
        if args.json:
            print(json.dumps(result))
            return 0
        print(f"corpus: {counts['passages']} MS MARCO passages + {counts['code_files']} Python files -> {n} chunks "
              f"({len(set(texts))} distinct texts) "
              f"(chunk size {args.chunk_size}, overlap {args.chunk_overlap}), model {result['embedding_model']}")
        print(f"raw model:        {raw_cps:8.1f} chunks/s  (median; runs {', '.join(f'{w:.1f}s' for w, _ in raws)})")
        runs = ", ".join(f"{r['wall']:.1f}s" for r in rounds)
        print(f"ingest pipeline:  {pipe_cps:8.1f} chunks/s  (median; runs {runs})")
        ratios = ", ".join(f"{r['ratio']:.3f}" for r in rounds)
        print(f"throughput ratio: {ratio:8.3f}   (median of per-round ratios {ratios}; target >= 0.85)")
        ratios = ", ".join(f"{r['cpu_ratio']:.3f}" for r in rounds)
        print(f"CPU-time ratio:   {cpu_ratio:8.3f}   (per round {ratios}; load average {load_before:.1f} -> "
              f"{load_after:.1f} on {os.cpu_count()} CPUs)")
        print(f"first ingest {first_s:.2f}s, unchanged re-ingest {re_s:.3f}s -> {first_s / re_s:.0f}x faster "
              "(target >= 20x)")
        if inc_s is not None:
            print(f"re-ingest with one changed file: {inc_s:.3f}s")
        if "engines" in result:
            eng = result["engines"]
            print(f"engines, same chunks, alternating runs: {eng['engine']} {eng['chunks_per_cpu_s']:.1f} chunks per "
                  f"CPU-second vs {eng['other']} {eng['other_chunks_per_cpu_s']:.1f} -> {eng['cpu_speedup']:.2f}x "
                  f"(wall {eng['wall_speedup']:.2f}x; target >= 2x by CPU time)")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            from xmrt.kb.chroma import clear_client_cache

            clear_client_cache()
            shutil.rmtree(work, ignore_errors=True)


def _compare_engines(config, other: str, texts: list[str], rounds: int, log) -> dict:
    """Passages per CPU-second of the configured engine and of ``other`` on the same texts, runs alternating."""
    import statistics

    from xmrt.llm.embeddings import embedding_engine, get_embeddings

    mine = get_embeddings(config)
    theirs = get_embeddings(config.with_overrides(embedding_engine=other))
    theirs.embed_documents(texts[:64])  # load and warm outside the timed runs
    runs: dict[str, list[tuple[float, float]]] = {"mine": [], "theirs": []}
    for _ in range(rounds):
        for key, model in (("theirs", theirs), ("mine", mine)):
            wall, cpu = time.perf_counter(), time.process_time()
            model.embed_documents(texts)
            runs[key].append((time.perf_counter() - wall, time.process_time() - cpu))
            log(f"  {key}: {len(texts) / runs[key][-1][1]:.1f} chunks per CPU-second ({runs[key][-1][0]:.1f}s wall)")
    n = len(texts)
    cpu_mine = statistics.median(n / c for _, c in runs["mine"])
    cpu_theirs = statistics.median(n / c for _, c in runs["theirs"])
    wall_mine = statistics.median(n / w for w, _ in runs["mine"])
    wall_theirs = statistics.median(n / w for w, _ in runs["theirs"])
    return {"engine": embedding_engine(config), "other": other, "chunks_per_cpu_s": round(cpu_mine, 2),
            "other_chunks_per_cpu_s": round(cpu_theirs, 2), "cpu_speedup": round(cpu_mine / cpu_theirs, 3),
            "chunks_per_s": round(wall_mine, 2), "other_chunks_per_s": round(wall_theirs, 2),
            "wall_speedup": round(wall_mine / wall_theirs, 3),
            "runs_cpu_s": {k: [round(c, 2) for _, c in v] for k, v in runs.items()}}


# -- registration -------------------------------------------------------------------------------------------


def register(cli: CommandTree) -> None:
    """Add ``ingest``, the ``kb`` group and ``bench ingest``."""
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

    cli.group("bench", help="benchmarks that print figures")
    p = cli.command(
        "bench", "ingest", handler=_bench_ingest,
        help="ingest throughput vs the raw embedding model, and unchanged re-ingest speed-up",
        description=(
            "Writes a corpus (MS MARCO passages as .txt files plus the Python sources of installed\n"
            "packages) to a temporary directory, then measures in one process, with the model loaded:\n"
            "the raw embedding model on exactly the chunk texts the pipeline produces, the whole ingest\n"
            "graph into a fresh collection (chunks/s), and re-ingesting the unchanged corpus."
        ),
    )
    p.add_argument("--passages", type=int, default=500, help="MS MARCO passages to write as files (default 500)")
    p.add_argument("--corpus-jsonl", default=str(DEFAULT_BENCH_CORPUS), help="BEIR corpus.jsonl to take passages from")
    p.add_argument("--code", action="append", default=None, metavar="PACKAGE",
                   help=f"installed package whose sources are added (default: {', '.join(DEFAULT_BENCH_CODE)})")
    p.add_argument("--rounds", type=int, default=3, help="pipeline runs, each between two raw-model runs (default 3)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    p.add_argument("--chunk-overlap", type=int, default=DEFAULT_CHUNK_OVERLAP)
    p.add_argument("--keep", action="store_true", help="keep the temporary corpus and store")
    p.add_argument("--compare-engine", default="torch", metavar="ENGINE",
                   help="also time this embedding engine on the same chunks, alternating with the configured one, "
                        "and report chunks per CPU-second of both (default torch; 'none' to skip)")
    p.add_argument("--engine-rounds", type=int, default=3, help="alternating runs per engine (default 3)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object (last line)")
