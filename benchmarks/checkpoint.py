"""Checkpoint persistence benchmark: what a checkpointer adds to each super-step of a small graph.

:func:`run_checkpoint_bench` compiles two graphs with trivial nodes (``linear3``: START → a → b → c;
``fanout2``: START → a → {b, c} → d) against each persistence mode and invokes them in one process:

* ``none`` (no checkpointer), ``InMemorySaver``, and ``SqliteSaver`` on a file in a temp dir (WAL,
  the saver's default ``synchronous=FULL``: an fsync per commit) and on ``:memory:`` (persists
  nothing; the fastest SQLite can be); both skipped when ``langgraph-checkpoint-sqlite`` is absent,
* the library's ``RedisSaver`` and ours, :class:`~xmrt.redis.checkpoint.RedisCheckpointSaver`, each in
  langgraph's durability modes ``sync``, ``async`` and ``exit``, and the library's
  ``ShallowRedisSaver`` (``sync``),
* :class:`RoundTripsOnlySaver`: one ``PING`` per ``put`` and per ``put_writes``, nothing stored, the
  least a Redis saver that waits for acknowledgements can cost here.

Every graph
runs on fresh threads (a new ``thread_id`` per invoke) and on one growing thread (state and
history grow with every invoke, like a conversation).

Where the process may run on several CPUs, ``none``, ``InMemorySaver``, ``SqliteSaver`` on a file and
ours in ``sync`` are measured a second time in the same rounds with the invoking thread, and so the
thread pool langgraph starts for each invoke, pinned to one CPU (:func:`one_cpu`). That is not a
setting to run with (it would also pin the node code); it shows how much of each super-step is
threads waking each other across CPUs rather than saving.

The machine is shared and noisy, so the modes are interleaved: each round invokes every mode
once, in a rotated order, and a mode's overhead sample is its invoke time minus the ``none``
invoke of the same round. The library's ``ShallowRedisSaver`` is measured apart, after all the
others and against its own ``none`` baseline: on a long thread one of its invokes takes over
100 ms (its ``get_tuple`` reads every write the thread ever had), which would stretch every round
and loosen the pairing of the other modes with their baseline.

Overhead per super-step is that difference divided by the number of super-steps of an invoke:
the checkpoints one ``sync`` invoke writes, minus one (the input step plus each step that runs
nodes: 4 for both graphs). Compare the ratios, which share the conditions of one run, rather
than absolute times across runs.

Last, :func:`conversation_reads` reads the state of one conversation thread (``conversation_messages``
LangChain messages, default 100) with the library's ``RedisSaver`` and with ours, interleaved.

The report ends with the checks of issue 13: ours in the default durability at least 2x cheaper per
super-step than the library's ``RedisSaver`` and no dearer than ``SqliteSaver`` on a file, in every
graph and thread pattern of the run; at most :data:`TARGET_OVERHEAD_MS` per super-step; and the
conversation read at least 3x faster than the library's.

Redis: the configured external server (REDIS_URL / REDIS_HOST) under a throw-away key prefix
that is deleted afterwards, or else a temporary embedded Redis Stack on a free port, stopped
and removed at the end.

This module runs the comparison (:func:`run_checkpoint_bench`) and offers every name of the benchmark; the parts
live beside it: the modes and graphs in :mod:`benchmarks.checkpoint_workload`, the Redis server and the savers in
:mod:`benchmarks.checkpoint_savers`, the measurement loop in :mod:`benchmarks.checkpoint_measure`, the checks and
the plain-text report in :mod:`benchmarks.checkpoint_report`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.checkpoint_measure import Row, _measure, _Runner, conversation_reads, machine_info
from benchmarks.checkpoint_report import _add_ratios, _checks, format_report
from benchmarks.checkpoint_savers import (
    RoundTripsOnlySaver,
    _redis_target,
    _Savers,
    sqlite_available,
)
from benchmarks.checkpoint_workload import (
    GRAPHS,
    OURS,
    PATTERNS,
    TARGET_OVERHEAD_MS,
    BenchState,
    Mode,
    build_graph,
    chat_builder,
    default_modes,
    one_cpu,
    one_cpu_available,
    super_steps,
)
from xmrt.config import Config, create_config

#: The names this module has always offered (the code now lives in the ``checkpoint_*`` modules);
#: ``_Runner`` for the tests.
__all__ = [
    "GRAPHS",
    "OURS",
    "PATTERNS",
    "TARGET_OVERHEAD_MS",
    "BenchState",
    "Mode",
    "RoundTripsOnlySaver",
    "Row",
    "_Runner",
    "build_graph",
    "chat_builder",
    "conversation_reads",
    "default_modes",
    "format_report",
    "machine_info",
    "one_cpu",
    "one_cpu_available",
    "run_checkpoint_bench",
    "sqlite_available",
    "super_steps",
]


def run_checkpoint_bench(
    config: Config | None = None,
    *,
    iterations: int = 200,
    warmup: int = 20,
    graphs: tuple[str, ...] = GRAPHS,
    patterns: tuple[str, ...] = PATTERNS,
    modes: list[Mode] | None = None,
    conversation_messages: int = 100,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the comparison in this process and return its figures.

    Args:
        config: Settings (which Redis to use); ``create_config()`` when omitted.
        iterations: Measured invokes per mode, graph and thread pattern.
        warmup: Unmeasured invokes per mode before measuring.
        graphs: Which of :data:`GRAPHS` to run.
        patterns: ``fresh`` (a new thread per invoke) and/or ``growing`` (one thread throughout).
        modes: The rows to compare (default: :func:`default_modes`); the ``none`` baseline is
            always added.
        conversation_messages: Messages in the thread of :func:`conversation_reads` (0 skips it).
        progress: Called with a short message as each block starts.

    Returns:
        A JSON-ready dict: ``rows`` (one per graph, pattern and mode), ``super_steps`` per graph,
        ``target`` (our default mode against :data:`TARGET_OVERHEAD_MS`), ``machine`` and ``redis``.
    """
    if iterations < 2:
        raise ValueError("iterations must be at least 2")
    config = config or create_config()
    modes = list(modes or default_modes())
    if not one_cpu_available():
        modes = [m for m in modes if not m.one_cpu]
    if not any(m.saver == "none" and not m.one_cpu for m in modes):
        modes.insert(0, Mode("none", "none"))
    if any(m.one_cpu for m in modes) and not any(m.saver == "none" and m.one_cpu for m in modes):
        modes.insert(1, Mode("none, one CPU", "none", one_cpu=True))
    if not sqlite_available():
        modes = [m for m in modes if not m.saver.startswith("sqlite")]
    steps = {g: super_steps(g) for g in graphs}
    baseline = next(m for m in modes if m.saver == "none" and not m.one_cpu)
    shared = [m for m in modes if not m.isolated]
    # Blocks of modes measured in the same rounds: the shared ones first, each isolated one last.
    blocks = [(g, p, shared) for g in graphs for p in patterns]
    blocks += [(g, p, [baseline, m]) for m in modes if m.isolated for g in graphs for p in patterns]
    rows: list[Row] = []
    conversation: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="xmrt-bench-") as tmp, _redis_target(config, Path(tmp)) as target:
        savers = _Savers(target, Path(tmp))
        try:
            for graph_name, pattern, block in blocks:
                if progress:
                    progress(f"{graph_name} / {pattern} threads: {len(block)} modes x {iterations} invokes")
                builder = build_graph(graph_name)
                tag = f"{target.prefix}-{graph_name}-{pattern}"
                runners = [_Runner(m, builder.compile(checkpointer=savers.get(m.saver)), pattern, tag) for m in block]
                measured = _measure(runners, graph_name, pattern, steps[graph_name], iterations, warmup, savers)
                if block is not shared:
                    measured = [r for r in measured if r.saver != "none"]
                    for r in measured:
                        r.mode += " (isolated)"
                rows += measured
            if conversation_messages > 0:
                if progress:
                    progress(f"state reads of a {conversation_messages}-message conversation")
                conversation = conversation_reads(savers, conversation_messages, iterations)
        finally:
            savers.close()
    _add_ratios(rows)
    order = {(g, p): i for i, (g, p) in enumerate((g, p) for g in graphs for p in patterns)}
    rows.sort(key=lambda r: order[(r.graph, r.pattern)])  # stable: isolated rows end their group

    def verdict(pinned: bool) -> dict[str, Any]:
        ours = [r.overhead_p50_ms for r in rows if r.saver == "redis-fast" and r.durability == config.durability
                and r.one_cpu == pinned and r.overhead_p50_ms is not None]
        worst = max(ours, default=None)
        return {
            "mode": f"{OURS} {config.durability}" + (", one CPU" if pinned else ""),
            "overhead_p50_ms_max": None if worst is None else round(worst, 3),
            "limit_ms": TARGET_OVERHEAD_MS,
            "met": None if worst is None else worst <= TARGET_OVERHEAD_MS,
        }

    return {
        "iterations": iterations,
        "warmup": warmup,
        "super_steps": steps,
        "rows": [asdict(r) for r in rows],
        "checks": _checks(rows, config.durability, conversation),
        # The target is the default: a process free to use every CPU. The pinned figure only says
        # how much of the rest is thread hand-offs between CPUs.
        "target": verdict(False),
        "one_cpu": verdict(True) if any(r.one_cpu for r in rows) else None,
        "conversation_reads": conversation,
        "machine": machine_info(),
        "redis": {"version": target.version, "embedded": target.embedded},
    }
