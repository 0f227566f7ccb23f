"""The measurement loop of the checkpoint benchmark: interleaved invokes, their figures, the conversation reads.

:func:`_measure` runs one block of modes (one graph and thread pattern) in rotated rounds and gives a :class:`Row`
per mode, its overhead paired with the ``none`` invoke of the same round; :func:`conversation_reads` times
``get_state`` of one conversation thread with the library's ``RedisSaver`` and with ours; :func:`machine_info`
says where the figures were measured. Driven by :func:`benchmarks.checkpoint.run_checkpoint_bench`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.checkpoint_savers import _Savers
from benchmarks.checkpoint_workload import OURS, Mode, chat_builder, one_cpu


def _quantile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


@dataclass
class Row:
    """The figures of one mode on one graph and thread pattern (times in milliseconds)."""

    graph: str
    pattern: str
    mode: str
    saver: str
    durability: str | None
    invoke_p50_ms: float
    invoke_p95_ms: float
    overhead_p50_ms: float | None = None
    overhead_p95_ms: float | None = None
    ratio_to_sqlite: float | None = None
    ratio_to_sqlite_memory: float | None = None
    round_trips_per_invoke: float | None = None
    one_cpu: bool = False


class _Runner:
    """Invokes of one mode on one graph and thread pattern."""

    def __init__(self, mode: Mode, graph: Any, pattern: str, tag: str) -> None:
        self.mode = mode
        self.graph = graph
        self.pattern = pattern
        self.tag = tag
        self.kwargs = {"durability": mode.durability} if mode.durability else {}
        place = "iso" if mode.isolated else "cpu1" if mode.one_cpu else "shared"
        self.thread = f"{tag}-{mode.saver}-{mode.durability}-{place}-growing"

    def config(self) -> dict:
        thread = self.thread if self.pattern == "growing" else f"{self.tag}-{uuid.uuid4().hex}"
        return {"configurable": {"thread_id": thread}}

    def invoke(self) -> float:
        config = self.config()
        with one_cpu() if self.mode.one_cpu else contextlib.nullcontext():
            start = time.perf_counter()
            self.graph.invoke({"log": []}, config, **self.kwargs)
            return time.perf_counter() - start


def machine_info() -> dict[str, Any]:
    """Where the figures were measured."""
    import langgraph.version as lgv

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    versions = {"python": platform.python_version(), "langgraph": getattr(lgv, "__version__", "?")}
    for dist in ("langgraph-checkpoint", "langgraph-checkpoint-redis", "langgraph-checkpoint-sqlite", "redis"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[dist] = version(dist)
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "cpus_allowed": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": [round(x, 2) for x in load] if load else None,
        "versions": versions,
    }


def conversation_reads(savers: _Savers, messages: int, reads: int) -> dict[str, Any]:
    """Time ``get_state`` of a thread holding ``messages`` LangChain messages, per saver, interleaved.

    Rows: the library's ``RedisSaver`` and ours, each reading the thread it wrote.
    """
    from langchain_core.messages import HumanMessage

    builder = chat_builder()
    graphs = {
        "RedisSaver (library)": builder.compile(checkpointer=savers.get("redis-lib")),
        OURS: builder.compile(checkpointer=savers.get("redis-fast")),
    }
    config = {"configurable": {"thread_id": f"conversation-{uuid.uuid4().hex[:8]}"}}
    for graph in graphs.values():
        for turn in range((messages + 1) // 2):
            graph.invoke({"messages": [HumanMessage(content=f"question {turn}")]}, config)
    held = {name: len(graph.get_state(config).values["messages"]) for name, graph in graphs.items()}
    samples: dict[str, list[float]] = {name: [] for name in graphs}
    order = list(graphs)
    for i in range(reads):
        for name in order[i % len(order):] + order[: i % len(order)]:
            start = time.perf_counter()
            graphs[name].get_state(config)
            samples[name].append((time.perf_counter() - start) * 1000)
    rows = [{"mode": name, "messages": held[name], "p50_ms": round(statistics.median(v), 3),
             "p95_ms": round(_quantile(v, 0.95), 3)} for name, v in samples.items()]
    ours = rows[-1]["p50_ms"]
    for row in rows:
        row["x_ours"] = round(row["p50_ms"] / ours, 2) if ours else None
    return {"messages": messages, "reads": reads, "rows": rows}


def _measure(
    runners: list[_Runner], graph: str, pattern: str, steps: int, iterations: int, warmup: int, savers: _Savers
) -> list[Row]:
    # Round trips: a short sequential pass per Redis mode, before the timed rounds.
    round_trips: dict[str, float] = {}
    for runner in runners:
        for _ in range(warmup):
            runner.invoke()
        if runner.mode.saver.startswith("redis"):
            sample = max(5, min(20, iterations // 5))
            before = savers.counter.value
            for _ in range(sample):
                runner.invoke()
            round_trips[runner.mode.label] = (savers.counter.value - before) / sample
    times: dict[str, list[float]] = {r.mode.label: [] for r in runners}
    for i in range(iterations):
        shift = i % len(runners)
        for runner in runners[shift:] + runners[:shift]:
            times[runner.mode.label].append(runner.invoke())
    bases = {r.mode.one_cpu: r.mode.label for r in runners if r.mode.saver == "none"}
    rows = []
    for runner in runners:
        label = runner.mode.label
        ms = [t * 1000 for t in times[label]]
        row = Row(
            graph=graph,
            pattern=pattern,
            mode=label,
            saver=runner.mode.saver,
            durability=runner.mode.durability,
            invoke_p50_ms=round(statistics.median(ms), 3),
            invoke_p95_ms=round(_quantile(ms, 0.95), 3),
            round_trips_per_invoke=round_trips.get(label),
            one_cpu=runner.mode.one_cpu,
        )
        base = bases[runner.mode.one_cpu]
        if label != base:
            diffs = [(t - b) * 1000 / steps for t, b in zip(times[label], times[base], strict=True)]
            row.overhead_p50_ms = round(statistics.median(diffs), 3)
            row.overhead_p95_ms = round(_quantile(diffs, 0.95), 3)
        rows.append(row)
    return rows
