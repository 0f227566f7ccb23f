"""``xmrt bench eliza``: the proof that the Eliza agent learns from feedback.

A stream of synthetic proposals (benchmarks/proposals.py) has true outcomes that follow a hidden rule
plus noise. In batches, each agent decides (the real Eliza graph), gets the outcomes as feedback and
self-improves (the real self-improvement graph), all on Redis. Three agents see the same stream:

* ``learning``: learns from every batch of feedback;
* ``static``: the same agent with learning switched off (its weights stay the prior);
* ``restarted``: learns in this process up to ``--restart-at``, then a NEW process continues from the
  weights stored in Redis.

Accuracy is measured per batch against the true outcomes (a deferral counts as wrong) and against the oracle,
which knows the rule. The agents never see the rule; ``--rule`` picks one of several (on criteria, amount,
category, their interactions, and one that drifts halfway) so that no single rule can be tuned for; two more
(``amount_band``, ``category_criteria``) are held out: added after the model was built, to check it generalises.
The learning
agent's calibration (Brier score, reliability table) and learning curve are printed from its ledger. The LLM is
off by default (``--llm`` turns it on). ``--model-only`` runs the decision model alone, in process, over several
streams (``--seeds``), to average out the noise of one stream. ``--via-cli`` is issue 17's check: each stream decided
and fed back batch by batch through ``xmrt eliza decide`` / ``xmrt eliza feedback`` as new processes, a fresh agent
per stream (benchmarks/eliza_cli.py). ``--noise`` and ``--sharpness`` set how noisy the outcomes are (the defaults
give an oracle of about 0.8; ``--sharpness 4 --noise 0.02`` about 0.91), ``--defer-margin`` the deferral band.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from xmrt.cli import CommandTree


def _accuracy(decisions: list[dict], truth: dict[str, bool]) -> float:
    from xmrt.eliza import is_correct

    return sum(is_correct(d["decision"], truth[d["id"]]) for d in decisions) / max(1, len(decisions))


def run_batches(agent: str, batches: list[list[tuple[dict, bool]]], *, learn: bool, use_llm: bool,
                learning_rate: float | None = None, reflect: bool = True,
                defer_margin: float | None = None) -> list[float]:
    """Decide, feed back and self-improve, batch by batch; returns the accuracy of each batch's decisions."""
    from graphs.eliza import builder as eliza_builder
    from graphs.self_improve import builder as improve_builder
    from xmrt.redis.persistence import redis_graph

    eliza, improve = redis_graph(eliza_builder), redis_graph(improve_builder)
    improve_ctx: dict = {"agent_id": agent, "learn": learn, "prompt_optimizer": "off"}
    if learning_rate is not None:
        improve_ctx["learning_rate"] = learning_rate
    accuracies = []
    for i, batch in enumerate(batches):
        truth = {p["id"]: ok for p, ok in batch}
        out = eliza.invoke(
            {"proposals": [p for p, _ in batch]},
            {"configurable": {"thread_id": f"bench-{agent}-decide-{i}"}},
            context={"agent_id": agent, "learn": learn, "use_llm": use_llm, "knowledge_k": 0, "lessons_k": 0,
                     **({} if reflect else {"max_reflections": 0}),
                     **({} if defer_margin is None else {"defer_margin": defer_margin})},
        )
        accuracies.append(_accuracy(out["decisions"], truth))
        improve.invoke(
            {"outcomes": [{"id": pid, "success": ok} for pid, ok in truth.items()]},
            {"configurable": {"thread_id": f"bench-{agent}-improve-{i}"}},
            context=improve_ctx,
        )
    return accuracies


def _stream(args: argparse.Namespace, rule: str) -> list[tuple[dict, bool, bool]]:
    from benchmarks.proposals import generate_with_oracle

    return generate_with_oracle(args.proposals, rule=rule, noise=args.noise, seed=args.seed,
                                sharpness=args.sharpness)


def _batches(args: argparse.Namespace, rule: str) -> list[list[tuple[dict, bool]]]:
    stream = [(p, ok) for p, ok, _ in _stream(args, rule)]
    return [stream[i : i + args.batch] for i in range(0, len(stream), args.batch)]


def _continue(args: argparse.Namespace) -> int:
    """The restarted process: continue an agent from its weights in Redis (internal)."""
    batches = _batches(args, args.rule)[args.start_batch :]
    accuracies = run_batches(args.agent, batches, learn=True, use_llm=args.llm, learning_rate=args.learning_rate,
                             reflect=not args.no_reflect, defer_margin=args.defer_margin)
    print(json.dumps({"accuracies": accuracies}))
    return 0


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _bench_rule(args: argparse.Namespace, rule: str, run_id: str) -> dict:
    from xmrt.config import get_config
    from xmrt.eliza import DecisionLedger

    stream = _stream(args, rule)
    batches = _batches(args, rule)
    oracle = [sum(o == ok for _, ok, o in stream[i : i + args.batch]) / len(stream[i : i + args.batch])
              for i in range(0, len(stream), args.batch)]
    restart_batch = max(1, min(len(batches) - 1, args.restart_at // args.batch))
    tail_batches = max(1, args.tail // args.batch)
    started = time.perf_counter()
    learning_agent = f"{run_id}-{rule}-learning"
    learning = run_batches(learning_agent, batches, learn=True, use_llm=args.llm, learning_rate=args.learning_rate,
                           reflect=not args.no_reflect, defer_margin=args.defer_margin)
    seconds_learning = time.perf_counter() - started
    metrics = DecisionLedger(get_config(), learning_agent).metrics(window=args.batch)
    result = {
        "rule": rule,
        "batches": len(batches),
        "batch_size": args.batch,
        "learning": learning,
        "oracle": oracle,
        "last_n": tail_batches * args.batch,
        "learning_first": _mean(learning[:tail_batches]),
        "learning_last": _mean(learning[-tail_batches:]),
        "oracle_last": _mean(oracle[-tail_batches:]),
        "brier_score": metrics["brier_score"],
        "recent_brier_score": metrics["recent_brier_score"],
        "calibration_error": metrics["calibration_error"],
        "reliability": metrics["reliability"],
        "learning_curve": metrics["learning_curve"],
        "defer_rate_last": metrics["learning_curve"][-1]["defer_rate"] if metrics["learning_curve"] else None,
        "seconds_learning": round(seconds_learning, 1),
    }
    result["gap_to_oracle"] = result["oracle_last"] - result["learning_last"]
    result["rise"] = result["learning_last"] - result["learning_first"]
    result["targets_met"] = round(result["gap_to_oracle"], 6) <= 0.05 and round(result["rise"], 6) >= 0.10
    if args.agents == "all":
        static = run_batches(f"{run_id}-{rule}-static", batches, learn=False, use_llm=args.llm,
                             defer_margin=args.defer_margin)
        restarted_agent = f"{run_id}-{rule}-restarted"
        before = run_batches(restarted_agent, batches[:restart_batch], learn=True, use_llm=args.llm,
                             learning_rate=args.learning_rate, reflect=not args.no_reflect,
                             defer_margin=args.defer_margin)
        cmd = [sys.executable, "-m", "xmrt.cli", "bench", "eliza", "--continue-agent", restarted_agent,
               "--start-batch", str(restart_batch), "--rule", rule, "--proposals", str(args.proposals),
               "--batch", str(args.batch), "--noise", str(args.noise), "--seed", str(args.seed),
               "--sharpness", str(args.sharpness)]
        if args.learning_rate is not None:
            cmd += ["--learning-rate", str(args.learning_rate)]
        if args.defer_margin is not None:
            cmd += ["--defer-margin", str(args.defer_margin)]
        if args.llm:
            cmd.append("--llm")
        if args.no_reflect:
            cmd.append("--no-reflect")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode != 0:
            raise RuntimeError(f"the restarted process failed: {proc.stderr.strip()[-2000:]}")
        after = json.loads(proc.stdout.strip().splitlines()[-1])["accuracies"]
        restarted = before + after
        result.update(static=static, restarted=restarted, restart_at_batch=restart_batch,
                      static_last=_mean(static[-tail_batches:]), restarted_last=_mean(restarted[-tail_batches:]),
                      restarted_first_after_restart=after[0] if after else None)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _print_rule(result: dict) -> None:
    has_all = "static" in result
    print(f"\nrule={result['rule']}  ({result['batches']} batches of {result['batch_size']}"
          + (f", restart after batch {result['restart_at_batch']}" if has_all else "")
          + f", {result['seconds']}s; learning agent {result['seconds_learning']}s)")
    print(f"{'batch':>5}  {'oracle':>6}  {'learning':>8}  {'brier':>6}  {'defer':>5}"
          + (f"  {'static':>8}  {'restarted':>9}" if has_all else ""))
    curve = result["learning_curve"]
    for i, (o, a) in enumerate(zip(result["oracle"], result["learning"], strict=True)):
        point = curve[i] if i < len(curve) else {}
        line = f"{i + 1:>5}  {o:>6.3f}  {a:>8.3f}  {point.get('brier') or float('nan'):>6.3f}  " \
               f"{point.get('defer_rate') or 0.0:>5.2f}"
        if has_all:
            mark = "  <- new process" if i == result["restart_at_batch"] else ""
            line += f"  {result['static'][i]:>8.3f}  {result['restarted'][i]:>9.3f}{mark}"
        print(line)
    n = result["last_n"]
    print(f"last {n}: oracle {result['oracle_last']:.3f}  learning {result['learning_last']:.3f} "
          f"(gap {result['gap_to_oracle']:+.3f}, target <= 0.05)  first {n}: {result['learning_first']:.3f} "
          f"(rise {result['rise']:+.3f}, target >= 0.10)  -> {'met' if result['targets_met'] else 'NOT met'}")
    if has_all:
        gain = (result["learning_last"] - result["static_last"]) * 100
        print(f"static {result['static_last']:.3f}  restarted {result['restarted_last']:.3f}  "
              f"-> learning beats static by {gain:+.1f} points")
    print(f"calibration: Brier {result['brier_score']:.3f} overall, {result['recent_brier_score']:.3f} on the last "
          f"100; expected calibration error {result['calibration_error']:.3f}")
    cells = [f"{row['bin']}: n={row['n']}" + (f" score {row['mean_score']:.2f} seen {row['observed']:.2f}"
                                              if row["n"] else "") for row in result["reliability"]]
    print("reliability: " + "  ".join(cells))


@contextlib.contextmanager
def _bench_redis(run_id: str):
    """An embedded Redis on a free port for this run (unless an external one is configured), and a key prefix.

    The temporary directory (Redis data, the stream files of ``--via-cli``) is removed at the end.
    """
    from xmrt.config import create_config, get_config
    from xmrt.redis.server import EmbeddedRedis

    base = get_config()
    server, tmp = None, None
    try:
        if not base.redis_external:
            tmp = tempfile.mkdtemp(prefix="xmrt-bench-eliza-")
            server = EmbeddedRedis(Path(tmp) / "redis", _free_port())
            server.start()
            os.environ["XMRT_REDIS_PORT"] = str(server.port)
            os.environ["XMRT_DATA_DIR"] = tmp
        os.environ["XMRT_KEY_PREFIX"] = f"bench{run_id}"
        get_config.cache_clear()
        yield create_config()  # validate early
    finally:
        if server is not None:
            server.stop()
        if tmp is not None:  # the run's Redis data and stream files (tens of MB); the figures are printed
            shutil.rmtree(tmp, ignore_errors=True)


def _rule_list(args: argparse.Namespace) -> list[str]:
    if args.rule == "all":
        return list(_rules())
    rules = [r.strip() for r in args.rule.split(",") if r.strip()]
    unknown = [r for r in rules if r not in RULE_NAMES]
    if unknown or not rules:
        from xmrt.errors import UserError

        raise UserError(f"unknown rule(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(RULE_NAMES)} "
                        "or all")
    return rules


def _seed_list(args: argparse.Namespace, default: str) -> list[int]:
    low, _, high = (args.seeds or default).partition("-")
    return list(range(int(low), int(high or low) + 1))


def _bench_via_cli(args: argparse.Namespace) -> int:
    """Issue 17's check, replicated: each stream decided and fed back through ``xmrt eliza decide``/``feedback``."""
    from benchmarks.eliza_cli import run_stream, summarise
    from benchmarks.eliza_model_only import model_only
    from benchmarks.proposals import HELD_OUT, generate_with_oracle

    run_id = uuid.uuid4().hex[:6]
    seeds = _seed_list(args, str(args.seed))
    decide_args = () if args.defer_margin is None else ("--defer-margin", str(args.defer_margin))
    rows = []
    with _bench_redis(run_id) as config:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                         os.environ.get("PYTHONPATH")]))}
        work = Path(config.data_dir) / "cli-streams"
        if not args.json:
            print(f"through the CLI: {args.proposals} proposals in batches of {args.batch}, noise {args.noise}, "
                  f"sharpness {args.sharpness}, "
                  f"{'local model on' if args.llm else '--no-llm'}, seeds {seeds[0]}-{seeds[-1]}; a fresh agent and "
                  f"two new processes (decide, feedback) per batch")
        for rule in _rule_list(args):
            for seed in seeds:
                stream = generate_with_oracle(args.proposals, rule, args.noise, seed, args.sharpness)
                agent = f"cli-{run_id}-{rule.replace('_', '-')}-{seed}"
                started = time.perf_counter()
                run = run_stream(stream, agent=agent, batch=args.batch, workdir=work / agent, env=env,
                                 use_llm=args.llm, decide_args=decide_args)
                row = {"rule": rule, "seed": seed, **summarise(run, args.tail),
                       "seconds": round(time.perf_counter() - started, 1), "batches": run["batches"]}
                inline = model_only(stream, args.batch, defer_margin=args.defer_margin,
                                    learning_rate=args.learning_rate or 0.01, tail=args.tail)
                row["model_only_last"], row["model_only_first"] = inline["last"], inline["first"]
                rows.append(row)
                if not args.json:
                    name = rule + (" (held out)" if rule in HELD_OUT else "")
                    print(f"  {name:<29} seed {seed}: first {row['first']:.3f}  last {row['last']:.3f}  oracle "
                          f"{row['oracle']:.3f}  gap {row['gap']:+.3f}  rise {row['rise']:+.3f}  "
                          f"{'met' if round(row['gap'], 6) <= 0.05 and round(row['rise'], 6) >= 0.10 else 'NOT met'}"
                          f"  (model only on the same stream: first {inline['first']:.3f}, last "
                          f"{inline['last']:.3f}; deferred {row['deferred']}, undecided {row['undecided']}; decide "
                          f"{row['decide_seconds']}s, feedback {row['feedback_seconds']}s in all)")
    if args.json:
        print(json.dumps({"via_cli": rows}))
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.defer_margin is not None and not 0.0 <= args.defer_margin <= 0.5:
        from xmrt.errors import UserError

        raise UserError(f"--defer-margin must be between 0 and 0.5, got {args.defer_margin}")
    if args.model_only:
        from benchmarks.eliza_model_only import bench_model_only

        return bench_model_only(args, _rule_list(args), _seed_list(args, "11-16"))
    if args.via_cli:
        return _bench_via_cli(args)
    if args.continue_agent:
        args.agent = args.continue_agent
        return _continue(args)
    run_id = uuid.uuid4().hex[:6]
    results = []
    with _bench_redis(run_id):
        for rule in _rule_list(args):
            result = _bench_rule(args, rule, run_id)
            results.append(result)
            if not args.json:
                _print_rule(result)
    if args.json:
        print(json.dumps({"results": results}))
    elif len(results) > 1:
        print("\nsummary (last 100 vs the oracle, and vs the first 100):")
        for r in results:
            print(f"  {r['rule']:<16} oracle {r['oracle_last']:.3f}  learning {r['learning_last']:.3f}  "
                  f"gap {r['gap_to_oracle']:+.3f}  rise {r['rise']:+.3f}  Brier {r['recent_brier_score']:.3f}  "
                  f"{'met' if r['targets_met'] else 'NOT met'}")
    return 0


RULE_NAMES = ("linear", "contrarian", "interaction", "amount", "category", "category_amount", "drift", "amount_band",
              "category_criteria")


def _rules():
    from benchmarks.proposals import RULES

    return RULES


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def register(cli: CommandTree) -> None:
    """Add ``xmrt bench eliza``."""
    p = cli.command("bench", "eliza", help="prove that the Eliza agent learns: accuracy per batch, 3 agents",
                    handler=_bench, description=__doc__)
    p.add_argument("--proposals", type=int, default=500, help="length of the proposal stream (default 500)")
    p.add_argument("--batch", type=int, default=50, help="proposals per decide/feedback/learn batch (default 50)")
    p.add_argument("--rule", default="linear", metavar="RULE[,RULE...]|all",
                   help=f"the hidden rule behind the true outcomes (default linear): {', '.join(RULE_NAMES)}")
    p.add_argument("--agents", default="all", choices=["all", "learning"],
                   help="all: the learning, static and restarted agents; learning: only the first (faster)")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="the self-improvement learning rate (default: the context's, 0.01)")
    p.add_argument("--defer-margin", type=float, default=None,
                   help="probabilities within this margin of 0.5 are deferred, and a deferral counts as wrong "
                   "(default: the eliza context's)")
    p.add_argument("--noise", type=float, default=0.1, help="share of outcomes flipped at random (default 0.1)")
    p.add_argument("--sharpness", type=float, default=2.0, help="slope of the outcome's probability in the rule's "
                   "score, sigmoid(sharpness * z) (default 2.0; with --noise 0.1 the oracle is about 0.8; "
                   "--sharpness 4 --noise 0.02 gives about 0.91, the oracle of issue 17's own check)")
    p.add_argument("--seed", type=int, default=7, help="random seed of the stream")
    p.add_argument("--restart-at", type=int, default=400, help="proposals before the restarted agent's new process")
    p.add_argument("--tail", type=int, default=100, help="accuracy is compared over the last N proposals")
    p.add_argument("--llm", action="store_true", help="let the LLM's verdict take part (slow offline)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--no-reflect", action="store_true", help="switch reflection off (to measure what it adds)")
    p.add_argument("--model-only", action="store_true", help="the decision model alone, in process, averaged over "
                   "--seeds (fast; no graphs, Redis, reflection or LLM)")
    p.add_argument("--seeds", default=None, help="streams for --model-only (default 11-16) or --via-cli (default: "
                   "--seed), e.g. 21-26")
    p.add_argument("--via-cli", action="store_true", help="issue 17's check: each stream decided and fed back "
                   "batch by batch through `xmrt eliza decide --json [--no-llm]` and `xmrt eliza feedback` as new "
                   "processes, a fresh agent per stream, against one embedded Redis (LLM off unless --llm)")
    p.add_argument("--continue-agent", help=argparse.SUPPRESS)
    p.add_argument("--start-batch", type=int, default=0, help=argparse.SUPPRESS)
