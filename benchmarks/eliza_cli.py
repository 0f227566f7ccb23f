"""A replica of issue 17's check: a proposal stream decided and fed back through the real CLI, batch by batch.

For each batch of a stream (benchmarks/proposals.py) it writes the proposals to a JSONL file and runs
``xmrt eliza decide --input batch.jsonl --json [--no-llm]`` as a new process, then writes the true outcomes and
runs ``xmrt eliza feedback --input outcomes.jsonl --json``, all for one fresh agent id against one Redis. Each
decision printed by ``decide`` is scored against the true outcome (a deferral, or a proposal left undecided, counts
as wrong). Nothing is shared with the bench process but Redis: every step is what a user of the CLI runs.

Used by ``xmrt bench eliza --via-cli`` (benchmarks/commands/eliza.py), which starts the embedded Redis.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

XMRT = [sys.executable, "-m", "xmrt.cli"]


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=3600)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:  # the stream's lines are all valid: a rejected line (exit 2) is a broken run too
        raise RuntimeError(f"{' '.join(cmd[2:])} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc, seconds


def run_stream(stream: list[tuple[dict[str, Any], bool, bool]], *, agent: str, batch: int, workdir: Path,
               env: dict[str, str], use_llm: bool = False, decide_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """Decide and feed back ``stream`` (proposal, true outcome, oracle) through the CLI; per-batch figures.

    Returns each proposal's correctness in stream order (``right``), the oracle's (``oracle_right``), the
    decisions' defer counts, how many proposals ``decide`` left undecided, and the wall time of each command.
    """
    from xmrt.eliza import is_correct

    workdir.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[1]
    right: list[bool] = []
    oracle_right: list[bool] = []
    batches = []
    for b, start in enumerate(range(0, len(stream), batch)):
        part = stream[start : start + batch]
        proposals = workdir / f"batch{b:03d}.jsonl"
        proposals.write_text("".join(json.dumps(p) + "\n" for p, _, _ in part), encoding="utf-8")
        cmd = [*XMRT, "eliza", "decide", "--input", str(proposals), "--json", "--agent", agent, *decide_args]
        if not use_llm:
            cmd.append("--no-llm")
        proc, decide_seconds = _run(cmd, env, root)
        (workdir / f"decisions{b:03d}.jsonl").write_text(proc.stdout, encoding="utf-8")
        decided = {}
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                decided[record["id"]] = record
        marks = [bool(p["id"] in decided and is_correct(decided[p["id"]]["decision"], ok)) for p, ok, _ in part]
        right += marks
        oracle_right += [knows == ok for _, ok, knows in part]
        outcomes = workdir / f"outcomes{b:03d}.jsonl"
        outcomes.write_text("".join(json.dumps({"id": p["id"], "success": ok}) + "\n" for p, ok, _ in part),
                            encoding="utf-8")
        proc, feedback_seconds = _run([*XMRT, "eliza", "feedback", "--input", str(outcomes), "--json",
                                       "--agent", agent], env, root)
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        llm_asked = sum("LLM verdict" in d.get("rationale", "") for d in decided.values())
        batches.append({
            "batch": b + 1, "accuracy": sum(marks) / len(marks),
            "oracle": sum(oracle_right[-len(part):]) / len(part),
            "deferred": sum(d["decision"] == "defer" for d in decided.values()),
            "undecided": len(part) - sum(p["id"] in decided for p, _, _ in part),
            "llm_asked": llm_asked, "recorded": summary.get("recorded"),
            "decide_seconds": round(decide_seconds, 1), "feedback_seconds": round(feedback_seconds, 1),
        })
    return {"right": right, "oracle_right": oracle_right, "batches": batches}


def summarise(run: dict[str, Any], tail: int = 100) -> dict[str, float]:
    """First-``tail`` and last-``tail`` accuracy, the oracle's on the last ``tail``, the gap and the rise."""
    right, oracle = run["right"], run["oracle_right"]
    first, last = sum(right[:tail]) / tail, sum(right[-tail:]) / tail
    best = sum(oracle[-tail:]) / tail
    return {"first": first, "last": last, "oracle": best, "gap": best - last, "rise": last - first,
            "deferred": sum(b["deferred"] for b in run["batches"]),
            "undecided": sum(b["undecided"] for b in run["batches"]),
            "decide_seconds": round(sum(b["decide_seconds"] for b in run["batches"]), 1),
            "feedback_seconds": round(sum(b["feedback_seconds"] for b in run["batches"]), 1)}
