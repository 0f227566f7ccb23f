"""``xmrt bench ingest``: ingest throughput against the raw embedding model, and the unchanged re-ingest speed-up."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks import eval_dir
from xmrt.cli import CommandTree
from xmrt.cli.commands.kb import _config, run_ingest

DEFAULT_BENCH_CODE = ("langchain_text_splitters",)


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
        corpus_jsonl = Path(args.corpus_jsonl) if args.corpus_jsonl else (
            eval_dir("msmarco") / "corpus.jsonl" if args.passages else Path("/dev/null"))
        counts = _write_corpus(corpus, corpus_jsonl, args.passages, tuple(args.code or DEFAULT_BENCH_CODE))
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
    """Add ``bench ingest``."""
    from xmrt.kb.splitting import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE

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
    p.add_argument("--corpus-jsonl", metavar="FILE",
                   help="BEIR corpus.jsonl to take passages from (default: $XMRT_EVAL_DIR/msmarco/corpus.jsonl)")
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
