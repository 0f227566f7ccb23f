"""The checkpoint benchmark's verdicts and report: ratios to SqliteSaver, issue 13's checks, plain-text tables.

:func:`_add_ratios` and :func:`_checks` derive figures from the measured rows;
:func:`format_report` prints the JSON-ready report of :func:`benchmarks.checkpoint.run_checkpoint_bench`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.checkpoint_measure import Row
from benchmarks.checkpoint_workload import OURS


def _checks(rows: list[Row], durability: str, conversation: dict[str, Any] | None) -> dict[str, Any]:
    """Issue 13's speed checks on this run's figures (None where the run lacks a row to compare)."""
    groups = sorted({(r.graph, r.pattern) for r in rows})

    def find(graph: str, pattern: str, saver: str, durability_: str | None) -> Row | None:
        return next((r for r in rows if (r.graph, r.pattern, r.saver) == (graph, pattern, saver)
                     and r.durability == durability_ and not r.one_cpu), None)

    vs_library, vs_sqlite = [], []
    for graph, pattern in groups:
        ours = find(graph, pattern, "redis-fast", durability)
        if ours is None or ours.overhead_p50_ms is None:
            continue
        lib = find(graph, pattern, "redis-lib", durability)
        sqlite = find(graph, pattern, "sqlite", "sync")
        if lib is not None and lib.overhead_p50_ms:
            vs_library.append({"graph": graph, "pattern": pattern,
                               "x_cheaper": round(lib.overhead_p50_ms / ours.overhead_p50_ms, 2)
                               if ours.overhead_p50_ms > 0 else None})
        if sqlite is not None and sqlite.overhead_p50_ms:
            vs_sqlite.append({"graph": graph, "pattern": pattern,
                              "ratio": round(ours.overhead_p50_ms / sqlite.overhead_p50_ms, 2)})

    def all_of(items: list[dict], test: Callable[[dict], bool]) -> bool | None:
        return all(test(i) for i in items) if items else None

    reads = None
    if conversation:
        by_mode = {r["mode"]: r["p50_ms"] for r in conversation["rows"]}
        if by_mode.get(OURS):
            reads = round(by_mode["RedisSaver (library)"] / by_mode[OURS], 2)
    return {
        "durability": durability,
        "vs_library": vs_library,
        "vs_library_met": all_of(vs_library, lambda i: i["x_cheaper"] is None or i["x_cheaper"] >= 2.0),
        "vs_sqlite": vs_sqlite,
        "vs_sqlite_met": all_of(vs_sqlite, lambda i: i["ratio"] <= 1.0),
        "conversation_x_faster": reads,
        "conversation_met": None if reads is None else reads >= 3.0,
    }


def _add_ratios(rows: list[Row]) -> None:
    """Overhead ratios to the SqliteSaver rows of the same graph, thread pattern and CPU pinning."""
    for kind, attr in (("sqlite", "ratio_to_sqlite"), ("sqlite-mem", "ratio_to_sqlite_memory")):
        for row in rows:
            ref = next((r for r in rows if r.saver == kind
                        and (r.graph, r.pattern, r.one_cpu) == (row.graph, row.pattern, row.one_cpu)), None)
            if ref is None or not ref.overhead_p50_ms or ref.overhead_p50_ms <= 0 or row.overhead_p50_ms is None:
                continue
            setattr(row, attr, round(row.overhead_p50_ms / ref.overhead_p50_ms, 2))


def format_report(report: dict[str, Any], command: str = "xmrt bench checkpoint") -> str:
    """The report as plain-text tables, one per graph and thread pattern."""
    lines = []
    m = report["machine"]
    v = m["versions"]
    lines.append(f"$ {command}")
    lines.append(
        f"machine: {m['cpu']}, {m['cpus']} CPUs ({m.get('cpus_allowed', m['cpus'])} allowed to this process), "
        f"load {m['load_average']}, {m['platform']}; "
        f"Python {v.get('python')}, langgraph {v.get('langgraph')}, "
        f"langgraph-checkpoint-redis {v.get('langgraph-checkpoint-redis')}, redis-py {v.get('redis')}"
    )
    where = "temporary embedded" if report["redis"]["embedded"] else "configured external"
    lines.append(f"redis: {report['redis']['version']} ({where}); {report['iterations']} interleaved invokes per mode "
                 f"after {report['warmup']} warm-up; super-steps per invoke: "
                 + ", ".join(f"{g} {n}" for g, n in report["super_steps"].items()))
    lines.append("overhead = (invoke with the saver - invoke without, same round) / super-steps; "
                 "x sqlite = overhead p50 / that of SqliteSaver on a file (x mem: on :memory:)")
    if report.get("one_cpu"):
        lines.append("one CPU = the invoke runs with this process's threads pinned to one CPU (Redis keeps all), "
                     "against 'none, one CPU' and the SqliteSaver row pinned alike: no thread hand-off between CPUs")
    header = (f"{'mode':44} {'invoke p50':>10} {'p95':>7} {'overhead/step p50':>18} {'p95':>7} "
              f"{'x sqlite':>8} {'x mem':>6} {'RT/invoke':>9}")
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in report["rows"]:
        groups.setdefault((row["graph"], row["pattern"]), []).append(row)

    def fmt(value: float | None, width: int, suffix: str = "") -> str:
        return f"{'-' if value is None else f'{value:.2f}{suffix}':>{width}}"

    for (graph, pattern), rows in groups.items():
        lines.append("")
        lines.append(f"{graph}, {pattern} threads (ms)")
        lines.append(header)
        for r in rows:
            lines.append(
                f"{r['mode']:44} {fmt(r['invoke_p50_ms'], 10)} {fmt(r['invoke_p95_ms'], 7)} "
                f"{fmt(r['overhead_p50_ms'], 18)} {fmt(r['overhead_p95_ms'], 7)} "
                f"{fmt(r['ratio_to_sqlite'], 8)} {fmt(r['ratio_to_sqlite_memory'], 6)} "
                f"{fmt(r['round_trips_per_invoke'], 9)}"
            )
    conversation = report.get("conversation_reads")
    if conversation:
        lines.append("")
        lines.append(f"get_state of a {conversation['messages']}-message conversation thread, "
                     f"{conversation['reads']} interleaved reads (ms)")
        lines.append(f"{'mode':44} {'p50':>10} {'p95':>7} {'x ours':>7}")
        for r in conversation["rows"]:
            lines.append(f"{r['mode']:44} {fmt(r['p50_ms'], 10)} {fmt(r['p95_ms'], 7)} {fmt(r['x_ours'], 7)}")
    checks = report.get("checks")
    if checks:
        def met(value: bool | None) -> str:
            return "not measured" if value is None else "met" if value else "NOT met"

        lines.append("")
        lib = ", ".join(f"{i['graph']} {i['pattern']} {i['x_cheaper']}x" for i in checks["vs_library"])
        lines.append(f"check: ours ({checks['durability']}) >= 2x cheaper per super-step than RedisSaver (library): "
                     f"{met(checks['vs_library_met'])} ({lib or '-'})")
        sql = ", ".join(f"{i['graph']} {i['pattern']} {i['ratio']}x" for i in checks["vs_sqlite"])
        lines.append(f"check: ours ({checks['durability']}) <= SqliteSaver on a file per super-step: "
                     f"{met(checks['vs_sqlite_met'])} ({sql or '-'})")
        if checks["conversation_x_faster"] is not None:
            lines.append(f"check: conversation get_state >= 3x faster than RedisSaver (library): "
                         f"{met(checks['conversation_met'])} ({checks['conversation_x_faster']}x)")
    t = report["target"]
    if t["overhead_p50_ms_max"] is not None:
        verdict = "met" if t["met"] else "NOT met"
        lines.append("")
        lines.append(f"target: {t['mode']} overhead p50 <= {t['limit_ms']:.2f} ms per super-step: {verdict} "
                     f"(worst graph/pattern: {t['overhead_p50_ms_max']:.3f} ms)")
        pinned = report.get("one_cpu")
        if pinned and pinned["overhead_p50_ms_max"] is not None:
            lines.append(f"        the same pinned to one CPU (not the target, which is the default): worst "
                         f"{pinned['overhead_p50_ms_max']:.3f} ms")
    return "\n".join(lines)
