"""``xmrt bench eliza``: the proof that the Eliza agent learns from feedback.

A stream of synthetic proposals (xmrt/bench/proposals.py) has true outcomes that follow a hidden rule
plus noise. In batches, each agent decides (the real Eliza graph), gets the outcomes as feedback and
self-improves (the real self-improvement graph), all on Redis. Three agents see the same stream:

* ``learning``: learns from every batch of feedback;
* ``static``: the same agent with learning switched off (its weights stay the prior);
* ``restarted``: learns in this process up to ``--restart-at``, then a NEW process continues from the
  weights stored in Redis.

Accuracy is measured per batch against the true outcomes (a deferral counts as wrong). The agents never
see the rule; ``--rule`` picks one of several so that no single rule can be tuned for. The LLM is off by
default (``--llm`` turns it on): the benchmark measures learning, and the offline model is slow.
"""

from __future__ import annotations

import argparse
import json
import os
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


def run_batches(agent: str, batches: list[list[tuple[dict, bool]]], *, learn: bool, use_llm: bool) -> list[float]:
    """Decide, feed back and self-improve, batch by batch; returns the accuracy of each batch's decisions."""
    from graphs.eliza import builder as eliza_builder
    from graphs.self_improve import builder as improve_builder
    from xmrt.persistence import redis_graph

    eliza, improve = redis_graph(eliza_builder), redis_graph(improve_builder)
    accuracies = []
    for i, batch in enumerate(batches):
        truth = {p["id"]: ok for p, ok in batch}
        out = eliza.invoke(
            {"proposals": [p for p, _ in batch]},
            {"configurable": {"thread_id": f"bench-{agent}-decide-{i}"}},
            context={"agent_id": agent, "learn": learn, "use_llm": use_llm, "knowledge_k": 0, "lessons_k": 0},
        )
        accuracies.append(_accuracy(out["decisions"], truth))
        improve.invoke(
            {"outcomes": [{"id": pid, "success": ok} for pid, ok in truth.items()]},
            {"configurable": {"thread_id": f"bench-{agent}-improve-{i}"}},
            context={"agent_id": agent, "learn": learn, "prompt_optimizer": "off"},
        )
    return accuracies


def _batches(args: argparse.Namespace, rule: str) -> list[list[tuple[dict, bool]]]:
    from xmrt.bench.proposals import generate

    stream = generate(args.proposals, rule=rule, noise=args.noise, seed=args.seed)
    return [stream[i : i + args.batch] for i in range(0, len(stream), args.batch)]


def _continue(args: argparse.Namespace) -> int:
    """The restarted process: continue an agent from its weights in Redis (internal)."""
    batches = _batches(args, args.rule)[args.start_batch :]
    accuracies = run_batches(args.agent, batches, learn=True, use_llm=args.llm)
    print(json.dumps({"accuracies": accuracies}))
    return 0


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _bench_rule(args: argparse.Namespace, rule: str, run_id: str) -> dict:
    batches = _batches(args, rule)
    restart_batch = max(1, min(len(batches) - 1, args.restart_at // args.batch))
    tail_batches = max(1, args.tail // args.batch)
    started = time.perf_counter()
    learning = run_batches(f"{run_id}-{rule}-learning", batches, learn=True, use_llm=args.llm)
    static = run_batches(f"{run_id}-{rule}-static", batches, learn=False, use_llm=args.llm)
    restarted_agent = f"{run_id}-{rule}-restarted"
    before = run_batches(restarted_agent, batches[:restart_batch], learn=True, use_llm=args.llm)
    cmd = [sys.executable, "-m", "xmrt.cli", "bench", "eliza", "--continue-agent", restarted_agent,
           "--start-batch", str(restart_batch), "--rule", rule, "--proposals", str(args.proposals),
           "--batch", str(args.batch), "--noise", str(args.noise), "--seed", str(args.seed)]
    if args.llm:
        cmd.append("--llm")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise RuntimeError(f"the restarted process failed: {proc.stderr.strip()[-2000:]}")
    after = json.loads(proc.stdout.strip().splitlines()[-1])["accuracies"]
    restarted = before + after
    return {
        "rule": rule,
        "batches": len(batches),
        "batch_size": args.batch,
        "restart_at_batch": restart_batch,
        "learning": learning,
        "static": static,
        "restarted": restarted,
        "last_n": tail_batches * args.batch,
        "learning_last": _mean(learning[-tail_batches:]),
        "static_last": _mean(static[-tail_batches:]),
        "restarted_last": _mean(restarted[-tail_batches:]),
        "restarted_first_after_restart": after[0] if after else None,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _print_rule(result: dict) -> None:
    print(f"\nrule={result['rule']}  ({result['batches']} batches of {result['batch_size']}, "
          f"restart after batch {result['restart_at_batch']}, {result['seconds']}s)")
    print(f"{'batch':>5}  {'learning':>8}  {'static':>8}  {'restarted':>9}")
    for i, (a, b, c) in enumerate(zip(result["learning"], result["static"], result["restarted"], strict=True)):
        mark = "  <- new process" if i == result["restart_at_batch"] else ""
        print(f"{i + 1:>5}  {a:>8.3f}  {b:>8.3f}  {c:>9.3f}{mark}")
    gain = (result["learning_last"] - result["static_last"]) * 100
    print(f"last {result['last_n']}: learning {result['learning_last']:.3f}  static {result['static_last']:.3f}  "
          f"restarted {result['restarted_last']:.3f}  -> learning beats static by {gain:+.1f} points")


def _bench(args: argparse.Namespace) -> int:
    if args.continue_agent:
        args.agent = args.continue_agent
        return _continue(args)
    from xmrt.config import create_config, get_config
    from xmrt.redis_server import EmbeddedRedis

    base = get_config()
    server = None
    run_id = uuid.uuid4().hex[:6]
    try:
        if not base.redis_external:
            tmp = tempfile.mkdtemp(prefix="xmrt-bench-eliza-")
            server = EmbeddedRedis(Path(tmp) / "redis", _free_port())
            server.start()
            os.environ["XMRT_REDIS_PORT"] = str(server.port)
            os.environ["XMRT_DATA_DIR"] = tmp
        os.environ["XMRT_KEY_PREFIX"] = f"bench{run_id}"
        get_config.cache_clear()
        create_config()  # validate early
        rules = list(_rules()) if args.rule == "all" else [args.rule]
        results = []
        for rule in rules:
            result = _bench_rule(args, rule, run_id)
            results.append(result)
            if not args.json:
                _print_rule(result)
    finally:
        if server is not None:
            server.stop()
    if args.json:
        print(json.dumps({"results": results}))
    return 0


def _rules():
    from xmrt.bench.proposals import RULES

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
    p.add_argument("--rule", default="linear", choices=["linear", "contrarian", "interaction", "all"],
                   help="the hidden rule behind the true outcomes (default linear)")
    p.add_argument("--noise", type=float, default=0.1, help="share of outcomes flipped at random (default 0.1)")
    p.add_argument("--seed", type=int, default=7, help="random seed of the stream")
    p.add_argument("--restart-at", type=int, default=400, help="proposals before the restarted agent's new process")
    p.add_argument("--tail", type=int, default=100, help="accuracy is compared over the last N proposals")
    p.add_argument("--llm", action="store_true", help="let the LLM's verdict take part (slow offline)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--continue-agent", help=argparse.SUPPRESS)
    p.add_argument("--start-batch", type=int, default=0, help=argparse.SUPPRESS)
