"""``xmrt eliza decide|feedback|status``: the proposal, decision and outcome interface.

decide    one JSON line per proposal in: id, title, description, category, amount_xmr, criteria
          (name -> number in [0,1]; unknown names are accepted and learned), optional action.
          One JSON line per decision out: id, decision (approve|reject|defer), score, rationale, sources.
feedback  one JSON line per outcome in: id, success (true|false). Records each outcome against the
          stored decision, then runs the self-improvement graph.
status    the agent's accuracy, calibration (Brier, reliability) and learning curve, computed from outcomes;
          the experts of its model and their weights; prompt versions (--json: everything).

Bad lines get an error naming the line on stderr; the good lines are still processed. The exit code is
0 when every line was accepted, 2 when some were rejected.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from xmrt.cli import CommandTree
from xmrt.errors import UserError


def _lines(path: str) -> list[str]:
    if path == "-":
        return sys.stdin.read().splitlines()
    file = Path(path)
    if not file.is_file():
        raise UserError(f"input file {path} does not exist")
    try:
        return file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"input file {path} is not UTF-8 text: {exc}") from None


def _agent_lock(agent: str, purpose: str, wait: float):
    """The agent's cycle lock: no two processes decide or learn for one agent at once."""
    from xmrt.config import get_config
    from xmrt.redis.coordination import AgentLock

    return AgentLock(get_config(), agent).hold(wait=wait, purpose=purpose)


def _report_errors(errors) -> None:
    for err in errors:
        print(f"xmrt: {err}", file=sys.stderr)


def _decide(args: argparse.Namespace) -> int:
    from graphs.eliza import builder
    from xmrt.eliza import parse_jsonl, proposal_from_dict, validate_agent_id
    from xmrt.redis.persistence import redis_graph

    validate_agent_id(args.agent)
    lines = _lines(args.input)
    proposals, errors = parse_jsonl(lines, proposal_from_dict)
    _report_errors(errors)
    if not proposals:
        raise UserError("no valid proposals in the input" + (f" ({len(errors)} rejected)" if errors else ""))
    graph = redis_graph(builder)
    context = {"agent_id": args.agent, "use_llm": not args.no_llm, "collection": args.collection,
               "llm_scope": "all" if args.llm_all else "close_calls"}
    if args.defer_margin is not None:
        if not 0.0 <= args.defer_margin <= 0.5:
            raise UserError(f"--defer-margin must be between 0 and 0.5, got {args.defer_margin}")
        context["defer_margin"] = args.defer_margin
    with _agent_lock(args.agent, "xmrt eliza decide", args.lock_wait):
        out = graph.invoke({"proposals": [p.__dict__ for p in proposals]},
                           {"configurable": {"thread_id": f"eliza:{args.agent}"}}, context=context)
    for d in out["decisions"]:
        record = {k: d[k] for k in ("id", "decision", "score", "rationale", "sources")}
        if args.json:
            print(json.dumps(record, ensure_ascii=False))
        else:
            print(f"{d['id']}: {d['decision'].upper():7} score {d['score']:.2f}  {d['rationale']}")
    if not args.json:
        for r in out.get("reflections", []):
            if r.get("changed"):
                print(f"  reflection on {r['id']}: {r['why']}")
        for a in out.get("actions", []):
            print(f"  action for {a['id']}: {a['type']} {a['status']}: {a['result']}")
    for bad in out.get("invalid", []):  # e.g. a proposal whose outcome is already recorded: not decided again
        print(f"xmrt: {bad['error']}", file=sys.stderr)
    return 2 if errors or out.get("invalid") else 0


def _feedback(args: argparse.Namespace) -> int:
    from graphs.self_improve import builder
    from xmrt.eliza import outcome_from_dict, parse_jsonl, validate_agent_id
    from xmrt.redis.persistence import redis_graph

    validate_agent_id(args.agent)
    outcomes, errors = parse_jsonl(_lines(args.input), outcome_from_dict)
    _report_errors(errors)
    graph = redis_graph(builder)
    with _agent_lock(args.agent, "xmrt eliza feedback", args.lock_wait):
        out = graph.invoke({"outcomes": [o.__dict__ for o in outcomes]},
                           {"configurable": {"thread_id": f"self_improve:{args.agent}"}},
                           context={"agent_id": args.agent, "learn": not args.no_learn})
    for err in out.get("errors", []):
        print(f"xmrt: outcome {err.get('id')!r}: {err['error']}", file=sys.stderr)
    summary = {
        "recorded": len(out.get("recorded", [])),
        "rejected": len(errors) + len(out.get("errors", [])),
        "decision_accuracy_before": out["metrics_before"].get("decision_accuracy"),
        "decision_accuracy_after": out["metrics_after"].get("decision_accuracy"),
        "training": out.get("training"),
        "lessons": [x["text"] for x in out.get("lessons", [])],
        "prompt_update": out.get("prompt_update"),
    }
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print(f"recorded {summary['recorded']} outcome(s), rejected {summary['rejected']}")
        acc = summary["decision_accuracy_after"]
        print(f"decision accuracy (all outcomes so far): {'n/a' if acc is None else f'{acc:.3f}'}")
        training = summary["training"] or {}
        if "skipped" in training:
            print(f"weights: not updated ({training['skipped']})")
        else:
            print(f"weights v{training.get('version')}: " + ", ".join(
                f"{k} {v:+.3f}" for k, v in sorted(training.get("weights", {}).items())))
        for lesson in summary["lessons"]:
            print(f"lesson: {lesson}")
    return 2 if (errors or out.get("errors")) else 0


def _status(args: argparse.Namespace) -> int:
    from xmrt.config import get_config
    from xmrt.eliza import DecisionLedger

    ledger = DecisionLedger(get_config(), args.agent)
    model = ledger.load_model()
    metrics = ledger.metrics()
    status = {
        "agent": args.agent,
        "metrics": metrics,
        "model": model.to_dict(),
        "prompt_versions": [{k: v for k, v in p.items() if k != "text"} for p in ledger.prompt_versions()],
        "recent_cycles": ledger.metrics_history(10),
    }
    if args.json:
        print(json.dumps(status, ensure_ascii=False))
        return 0
    print(_status_text(args.agent, model, metrics))
    return 0


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _status_text(agent: str, model, metrics: dict) -> str:
    """The human reading of ``xmrt eliza status``: accuracy, calibration, the learning curve and what moved."""
    lines = [f"agent {agent}: {metrics['decisions']} decisions, {metrics['with_outcome']} with an outcome, "
             f"model v{model.version} (learned from {model.examples_seen} outcomes)",
             f"accuracy {_fmt(metrics['decision_accuracy'])} overall, {_fmt(metrics['recent_accuracy'])} on the last "
             f"{metrics['recent_window']}; defer rate {_fmt(metrics['defer_rate'])}",
             f"calibration: Brier {_fmt(metrics['brier_score'])} (last 100: {_fmt(metrics['recent_brier_score'])}), "
             f"log-loss {_fmt(metrics['log_loss'])}, expected calibration error {_fmt(metrics['calibration_error'])}"]
    if metrics["with_outcome"]:
        lines.append("reliability (predicted probability -> observed success rate):")
        for row in metrics["reliability"]:
            if row["n"]:
                lines.append(f"  {row['bin']}: {row['n']:>5} decisions, mean score {row['mean_score']:.2f}, "
                             f"succeeded {row['observed']:.2f}")
        lines.append("learning curve (each window of decisions, in the order they were made):")
        for point in metrics["learning_curve"][-20:]:
            bar = "#" * round(20 * point["accuracy"])
            lines.append(f"  {point['from']:>6}-{point['to']:<6} accuracy {point['accuracy']:.3f} {bar:<20} "
                         f"Brier {_fmt(point['brier'])}  defer {point['defer_rate']:.2f}")
    mixture = ", ".join(f"{k} {v:.2f}" for k, v in sorted(model.mixture.items(), key=lambda kv: -kv[1]) if v >= 0.01)
    lines.append(f"experts (weight in the mixture): {mixture}")
    top = sorted(model.weights.items(), key=lambda kv: -abs(kv[1]))[:10]
    lines.append("main expert's largest weights: " + ", ".join(f"{model.space.describe(k)} {v:+.2f}" for k, v in top))
    return "\n".join(lines)


def _cycle_command(cli: CommandTree, name: str, *, input_help: str, json_help: str,
                   **command: Any) -> argparse.ArgumentParser:
    """Add ``eliza <name>``: one of the agent's graphs over a JSONL file, under the agent's lock (decide, feedback)."""
    p = cli.command("eliza", name, description=__doc__, **command)
    p.add_argument("--input", required=True, help=input_help)
    p.add_argument("--agent", default="eliza", help="agent id (its learning is kept per id; default eliza)")
    p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument("--lock-wait", type=float, default=30.0, help="seconds to wait while another process "
                   "runs this agent's cycle (default 30)")
    return p


def register(cli: CommandTree) -> None:
    """Add the ``eliza`` command group."""
    cli.group("eliza", help="the Eliza decision agent: decide proposals, feed back outcomes, inspect learning")
    d = _cycle_command(cli, "decide", help="decide a JSONL file of proposals", handler=_decide,
                       input_help="proposals JSONL file, or - for standard input",
                       json_help="one JSON line per decision")
    d.add_argument("--collection", default="default", help="knowledge-base collection to consult")
    d.add_argument("--no-llm", action="store_true", help="decide on the learned model alone, without the LLM")
    d.add_argument("--llm-all", action="store_true", help="ask the LLM about every proposal (default: only the "
                   "close calls, where its verdict at its learned weight could change the decision)")
    d.add_argument("--defer-margin", type=float, default=None, help="defer (send to people) the proposals whose "
                   "success probability is within this margin of 0.5 (default 0: decide every proposal)")
    f = _cycle_command(cli, "feedback", help="record outcomes and self-improve", handler=_feedback,
                       input_help="outcomes JSONL file (id, success), or - for standard input",
                       json_help="print one JSON summary line")
    f.add_argument("--no-learn", action="store_true", help="record outcomes without updating the weights")
    s = cli.command("eliza", "status", help="metrics, weights and prompt versions of an agent", handler=_status)
    s.add_argument("--agent", default="eliza", help="agent id (default eliza)")
    s.add_argument("--json", action="store_true", help="everything as one JSON object")
