"""The fixes to ``langgraph dev``'s in-memory runtime (xmrt.dev_runtime).

Each flaw and its fix are shown on small classes with the runtime's shape and the runtime's own logic for the
part that matters (``Runs.next`` takes "now" before its idle sleep and only takes runs created before it;
``Threads.delete`` finds an index, awaits, then pops that index). The installed runtime is checked for the
shape the fixes expect, so an upgrade that changes it fails here instead of silently dropping them; the served
server's log is checked for the fixes in tests/test_served_graphs.py, and the figures are in BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import time

from xmrt import dev_runtime


class ToyRuns:
    """``langgraph_runtime_inmem.ops.Runs`` reduced to its queue timing."""

    runs: list[dict] = []

    @staticmethod
    async def put(name: str):
        ToyRuns.runs.append({"name": name, "created": time.monotonic(), "status": "pending"})

        async def _yield():
            yield ToyRuns.runs[-1]

        return _yield()

    @staticmethod
    async def next(wait: bool, limit: int = 1):
        now = time.monotonic()
        await asyncio.sleep(0.5 if wait else 0)
        for run in [r for r in ToyRuns.runs if r["status"] == "pending" and r["created"] < now][:limit]:
            run["status"] = "running"
            yield run


class ToyThreads:
    """``langgraph_runtime_inmem.ops.Threads.delete``'s index handling."""

    threads: list[str] = []

    @staticmethod
    async def delete(thread_id: str):
        idx = ToyThreads.threads.index(thread_id)
        await asyncio.sleep(0)  # the auth handler and the checkpoint deletion
        await asyncio.sleep(0)
        return ToyThreads.threads.pop(idx)


async def _scheduler_pass_with_a_run_arriving(delay: float) -> tuple[list[str], float]:
    """One idle scheduler pass (wait=True) while a run is created ``delay`` s into it."""
    ToyRuns.runs = []

    async def create_later():
        await asyncio.sleep(delay)
        await ToyRuns.put("r1")

    started = time.monotonic()
    creator = asyncio.create_task(create_later())
    taken = [run["name"] async for run in ToyRuns.next(wait=True)]
    await creator
    return taken, time.monotonic() - started


async def _delete_concurrently(ids: list[str]) -> list:
    return await asyncio.gather(*(ToyThreads.delete(t) for t in ids), return_exceptions=True)


def test_without_the_fixes_runs_wait_a_pass_and_concurrent_deletes_remove_the_wrong_threads():
    taken, _ = asyncio.run(_scheduler_pass_with_a_run_arriving(0.05))
    assert taken == []  # the run is left for a later pass
    ToyThreads.threads = ["a", "b", "c", "d"]
    results = asyncio.run(_delete_concurrently(["a", "b", "c"]))
    assert results != ["a", "b", "c"]  # wrong threads popped, or IndexError
    assert ToyThreads.threads != ["d"]


def test_with_the_fixes_the_waiting_pass_takes_the_new_run_and_deletes_remove_their_own_thread(monkeypatch):
    dev_runtime.wrap(ToyRuns, ToyThreads)
    try:
        # A long fallback poll, so that "woken by the put" and "woken by the poll" are far apart.
        monkeypatch.setattr(dev_runtime, "POLL_SECONDS", 6.0)
        taken, elapsed = asyncio.run(_scheduler_pass_with_a_run_arriving(0.05))
        assert taken == ["r1"]
        assert elapsed < 3.0, elapsed  # woken by the put, not by the 6 s fallback poll
        # With nothing arriving the fallback poll still ends the wait, and finds nothing.
        monkeypatch.setattr(dev_runtime, "POLL_SECONDS", 0.2)
        ToyRuns.runs = []

        async def idle():
            return [r async for r in ToyRuns.next(wait=True)]

        assert asyncio.run(idle()) == []
        ToyThreads.threads = ["a", "b", "c", "d"]
        assert asyncio.run(_delete_concurrently(["a", "b", "c"])) == ["a", "b", "c"]
        assert ToyThreads.threads == ["d"]
    finally:
        dev_runtime.unwrap(ToyRuns)
    assert "_xmrt_fixes" not in vars(ToyRuns)
    taken, _ = asyncio.run(_scheduler_pass_with_a_run_arriving(0.05))
    assert taken == []  # unwrap restored the originals
    ToyThreads.threads = ["a", "b", "c", "d"]
    assert asyncio.run(_delete_concurrently(["a", "b", "c"])) != ["a", "b", "c"]


def test_the_installed_runtime_has_the_shape_the_fixes_expect(monkeypatch):
    from langgraph_runtime_inmem import ops  # installed with langgraph-cli[inmem]: `langgraph dev`

    monkeypatch.delenv("XMRT_DEV_RUNTIME_FIXES", raising=False)
    original_next, original_delete = ops.Runs.next, ops.Threads.delete
    assert dev_runtime.shape_problem(ops.Runs, ops.Threads) is None
    try:
        assert dev_runtime.install() and dev_runtime.install()  # idempotent
        assert ops.Runs.next is not original_next and ops.Threads.delete is not original_delete
    finally:
        dev_runtime.uninstall()
    assert ops.Runs.next is original_next and ops.Threads.delete is original_delete
    monkeypatch.setenv("XMRT_DEV_RUNTIME_FIXES", "0")
    assert dev_runtime.install() is False and ops.Runs.next is original_next


def test_a_runtime_of_another_shape_is_left_alone():
    class Other:
        @staticmethod
        def next(wait, limit=1):  # not an async generator
            return []

        @staticmethod
        async def put():
            return None

    assert "Runs.next" in dev_runtime.shape_problem(Other, ToyThreads)
    assert "Threads.delete" in dev_runtime.shape_problem(ToyRuns, Other)
