"""``xmrt bench search`` and ``xmrt bench fusion``: search latency per mode, and the study that chose the fusion."""

from __future__ import annotations

import argparse
import json
import sys

from benchmarks import eval_dir
from xmrt.cli import CommandTree
from xmrt.cli.commands.retrieval import _config

_BENCH_HELP = """\
Time search (query embedding included, k=10) per mode over a synthetic collection of N chunks made
from MS MARCO ($XMRT_EVAL_DIR/msmarco, or --dataset DIR; copies with dropped words and jittered embeddings),
then evaluate quality on the real dataset. Prints p50/p95 latency per mode and nDCG@10, recall@10, recall@100, MRR@10.
"""


def _bench(args: argparse.Namespace) -> int:
    from benchmarks.search import bench_search
    from xmrt.kb.evaluate import evaluate_retrieval, format_results

    def status(msg: str) -> None:
        print(msg, file=sys.stderr)

    config = _config()
    dataset = args.dataset or str(eval_dir("msmarco"))
    latency = bench_search(config, args.chunks, dataset_dir=dataset, rounds=args.rounds, on_status=status)
    print(f"search latency over {latency['chunks']} chunks, {latency['queries']} queries x {latency['rounds']} "
          f"rounds, k=10, query embedding included (build {latency['build_seconds']} s):")
    print(f"{'mode':<10}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}{'1st-round p50':>15}")
    for mode, row in latency["modes"].items():
        print(f"{mode:<10}{row['p50_ms']:>10.1f}{row['p95_ms']:>10.1f}{row['mean_ms']:>10.1f}"
              f"{row['first_round_p50_ms']:>15.1f}")
    print(f"query embedding alone: p50 {latency['embed_query_p50_ms']:.1f} ms")
    result: dict = {"latency": latency}
    if not args.no_quality:
        quality = evaluate_retrieval(config, dataset, "all", on_status=status)
        print(format_results(quality))
        result["quality"] = quality
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0


def _fusion(args: argparse.Namespace) -> int:
    from benchmarks.fusion_study import WEIGHTS, study

    report = study(_config(), args.dataset or eval_dir("msmarco"))
    print(f"chosen on the tuning half: {report['chosen']}")
    for part, row in report["msmarco"].items():
        print(f"msmarco {part:<9} ({row['queries']} q): dense {row['dense']:.3f}  bm25 {row['bm25']:.3f}  "
              f"rrf(unweighted) {row['rrf_unweighted']:.3f}  chosen {row['chosen']:.3f}")
    rs = report["random_splits"]
    print(f"500 random splits: mean held-out gain over dense {rs['mean_heldout_gain_over_dense']:+.3f}, "
          f"not worse than dense in {100 * rs['share_not_worse_than_dense']:.0f}%, picked {rs['methods_picked']}")
    for name in ("p2p", "code"):
        row = report[name]
        print(f"{name:<5} ({row['passages']} passages, {row['queries']} q): dense {row['dense']:.3f}  "
              f"bm25 {row['bm25']:.3f}  rrf(unweighted) {row['rrf_unweighted']:.3f}  chosen {row['chosen']:.3f}  "
              f"(its own best {row['own_best']} {row['own_best_ndcg']:.3f}, not used)")
    for method, parts in report["curves"].items():
        for part, values in parts.items():
            print(f"  {method:<11} {part:<8} " + " ".join(f"{w}:{v:.3f}" for w, v in zip(WEIGHTS, values, strict=True)))
    if args.json:
        print(json.dumps(report, sort_keys=True))
    return 0


def register(cli: CommandTree) -> None:
    """Add ``bench search`` and ``bench fusion``."""
    cli.group("bench", help="benchmarks measured in one process")
    p = cli.command("bench", "search", help="search latency p50/p95 per mode at N chunks, plus quality figures",
                    handler=_bench, description=_BENCH_HELP)
    p.add_argument("--chunks", type=int, default=50_000, help="collection size (default 50000)")
    p.add_argument("--rounds", type=int, default=3, help="timed passes over the queries (default 3)")
    p.add_argument("--dataset", metavar="DIR", help="BEIR directory to synthesise from and evaluate "
                   "(default: $XMRT_EVAL_DIR/msmarco)")
    p.add_argument("--no-quality", action="store_true", help="skip the quality evaluation")
    p.add_argument("--json", action="store_true", help="end the output with one JSON line")

    p = cli.command("bench", "fusion", help="the measurement that chose the hybrid fusion method and weight",
                    handler=_fusion, description="Choose the fusion (method, dense weight) on a tuning half of\n"
                    "MS MARCO, report it on the held-out half, on 500 random splits, and untuned on\n"
                    "two datasets built on the fly (passage-to-passage on MS MARCO; code search over the Python\n"
                    "standard library). See benchmarks/fusion_study.py.")
    p.add_argument("--dataset", metavar="DIR", help="MS MARCO BEIR directory (default: $XMRT_EVAL_DIR/msmarco)")
    p.add_argument("--json", action="store_true", help="end the output with one JSON line")
