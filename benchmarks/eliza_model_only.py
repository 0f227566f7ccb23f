"""``xmrt bench eliza --model-only``: the decision model alone, in process, over many streams.

The same decide-a-batch / learn loop as the real graphs, without the graphs, Redis, reflection or the LLM: fast
enough to average the gap to the oracle and the rise over several streams per rule (one stream is a noisy measure).
"""

from __future__ import annotations

import argparse
import json
from statistics import fmean


def model_only(stream: list[tuple[dict, bool, bool]], batch: int, defer_margin: float | None = None,
               learning_rate: float = 0.01, tail: int = 100) -> dict:
    """The decision model alone, in process (no graphs, Redis, reflection or LLM): decide a batch, learn, repeat.

    Fast enough to average over many streams; the figures of the full runs come from the real graphs.
    """
    from graphs.context import ElizaContext
    from xmrt.eliza import DecisionModel, Example, decide_from_probability, is_correct

    if defer_margin is None:
        defer_margin = ElizaContext().defer_margin
    model, seen, right, oracle = DecisionModel(), [], [], []
    for start in range(0, len(stream), batch):
        for proposal, ok, knows in stream[start : start + batch]:
            example = Example.of(proposal)
            experts = model.expert_probabilities(example)
            decision = decide_from_probability(model.probability(example), defer_margin)
            right.append(is_correct(decision, ok))
            oracle.append(knows == ok)
            seen.append((example, ok, experts))
        model.train([(x, ok) for x, ok, _ in seen], learning_rate=learning_rate, epochs=200,
                    expert_scores=[e for _, _, e in seen])
    return {"first": sum(right[:tail]) / tail, "last": sum(right[-tail:]) / tail,
            "oracle": sum(oracle[-tail:]) / tail,
            "mixture": {k: round(v, 2) for k, v in model.mixture.items() if v >= 0.01}}


def bench_model_only(args: argparse.Namespace, rules: list[str], seeds: list[int]) -> int:
    """``xmrt bench eliza --model-only``: :func:`model_only` over ``seeds`` for each rule, gaps and rises averaged."""
    from benchmarks.proposals import HELD_OUT, generate_with_oracle
    from graphs.context import ElizaContext

    summary = []
    margin = ElizaContext().defer_margin if args.defer_margin is None else args.defer_margin
    print(f"model only, in process: {args.proposals} proposals in batches of {args.batch}, "
          f"seeds {seeds[0]}-{seeds[-1]}, noise {args.noise}, sharpness {args.sharpness}, defer margin {margin}")
    for rule in rules:
        runs = [model_only(generate_with_oracle(args.proposals, rule, args.noise, seed, args.sharpness), args.batch,
                           defer_margin=args.defer_margin, learning_rate=args.learning_rate or 0.01)
                for seed in seeds]
        gaps = [r["oracle"] - r["last"] for r in runs]
        rises = [r["last"] - r["first"] for r in runs]
        met = sum(round(g, 6) <= 0.05 and round(r, 6) >= 0.10 for g, r in zip(gaps, rises, strict=True))
        row = {"rule": rule, "mean_gap": fmean(gaps), "max_gap": max(gaps), "mean_rise": fmean(rises),
               "mean_first": fmean([r["first"] for r in runs]), "mean_last": fmean([r["last"] for r in runs]),
               "mean_oracle": fmean([r["oracle"] for r in runs]), "met": met, "streams": len(runs), "runs": runs}
        summary.append(row)
        if not args.json:
            name = rule + (" (held out)" if rule in HELD_OUT else "")
            print(f"  {name:<29} gap to oracle mean {row['mean_gap']:+.3f} (max {row['max_gap']:+.3f})  rise mean "
                  f"{row['mean_rise']:+.3f}  both targets met on {met}/{len(runs)} streams  (first "
                  f"{row['mean_first']:.3f}, last {row['mean_last']:.3f}, oracle {row['mean_oracle']:.3f})")
    if args.json:
        print(json.dumps({"model_only": summary}))
    return 0
