"""Two fixes to ``langgraph dev``'s in-memory runtime (``langgraph_runtime_inmem``), installed by the served app.

**Runs start at once.** The runtime's scheduler asks ``ops.Runs.next`` for pending runs in a loop; after a pass
that found nothing, ``next`` sleeps a fixed 0.5 s *after* taking its "now", and only takes runs created before
that "now". A run created during the sleep therefore waits for the pass after, so on an idle server every run
waits 0.5-1.0 s before it starts (measured: ``runs.wait`` of a 5 ms graph takes about 1 s). Here ``Runs.put``
(create a run) sets an :class:`asyncio.Event` once it has stored the run, and ``Runs.next`` waits for that event,
at most the same 0.5 s, then runs the original ``next`` without its sleep, so "now" is taken after the wait and a
run created meanwhile is taken at once. The 0.5 s poll stays as the fallback (delayed runs, runs waiting for
their thread to be free); locking, ordering and retries are the runtime's own.

**Concurrent thread deletes are safe.** ``Threads.delete`` finds the thread's index, awaits (the auth handler,
the checkpoint deletion), then pops that index. A delete finishing in between shifts the list, so the pop
removes *another* thread or fails with ``IndexError`` (HTTP 500). Deletes (and ``prune``, which calls
``delete``) are serialised with one lock, so no index moves under a delete in progress; creating threads only
appends, which never moves an earlier index.

:func:`install` applies both from the custom app's lifespan (:mod:`xmrt.http`), only when this runtime is the
one serving, only when its functions have the expected shape, and not at all with ``XMRT_DEV_RUNTIME_FIXES=0``.
A shape mismatch (a runtime upgrade) leaves the runtime untouched and logs why. Figures: ``xmrt bench api``
(BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # the runtime's own fallback poll, kept
_MARK = "_xmrt_fixes"


class _Wakeup:
    """An event owned by the loop that waits on it; setting it from another thread or loop is safe."""

    def __init__(self) -> None:
        self.event: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def set(self) -> None:
        event, loop = self.event, self.loop
        if event is None or loop is None:
            return  # nobody waits yet: the next pass polls anyway
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    async def wait(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            self.loop, self.event = loop, asyncio.Event()
        assert self.event is not None
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except TimeoutError:
            pass
        self.event.clear()


class _LoopLock:
    """An :class:`asyncio.Lock` per event loop (the runtime may run work on more than one loop).

    Keyed by the loop itself, weakly: a key by ``id()`` could hand a new loop, allocated where a closed one
    was, that loop's lock, which asyncio refuses to use from another loop.
    """

    def __init__(self) -> None:
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    def get(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock


def _ops() -> Any | None:
    try:
        from langgraph_runtime_inmem import ops
    except ImportError:
        return None
    return ops


def _static(cls: Any, name: str) -> Any:
    attr = inspect.getattr_static(cls, name, None)
    return attr.__func__ if isinstance(attr, staticmethod) else None


def shape_problem(runs: Any, threads: Any) -> str | None:
    """Why the runtime's ``Runs``/``Threads`` differ from what these fixes were written for, or None."""
    nxt, put, delete = _static(runs, "next"), _static(runs, "put"), _static(threads, "delete")
    if nxt is None or not inspect.isasyncgenfunction(nxt):
        return "Runs.next is not an async-generator staticmethod"
    if list(inspect.signature(nxt).parameters)[:2] != ["wait", "limit"]:
        return f"Runs.next takes {list(inspect.signature(nxt).parameters)}, expected (wait, limit, ...)"
    if put is None or not inspect.iscoroutinefunction(put):
        return "Runs.put is not a coroutine staticmethod"
    if delete is None or not inspect.iscoroutinefunction(delete):
        return "Threads.delete is not a coroutine staticmethod"
    return None


def wrap(runs: Any, threads: Any) -> None:
    """Replace ``runs.next``/``runs.put`` and ``threads.delete`` (staticmethods) with the fixed versions."""
    original_next, original_put = _static(runs, "next"), _static(runs, "put")
    original_delete = _static(threads, "delete")
    wakeup, delete_lock = _Wakeup(), _LoopLock()

    async def next_run(wait: bool, limit: int = 1) -> AsyncIterator[Any]:
        if wait:
            await wakeup.wait(POLL_SECONDS)
        async for item in original_next(False, limit):
            yield item

    async def put_run(*args: Any, **kwargs: Any) -> Any:
        try:
            return await original_put(*args, **kwargs)  # the run is stored when this returns
        finally:
            wakeup.set()

    async def delete_thread(*args: Any, **kwargs: Any) -> Any:
        async with delete_lock.get():
            return await original_delete(*args, **kwargs)  # the thread is gone when this returns

    for fixed, original in ((next_run, original_next), (put_run, original_put), (delete_thread, original_delete)):
        fixed.__doc__, fixed.__wrapped__ = original.__doc__, original
    runs.next, runs.put = staticmethod(next_run), staticmethod(put_run)
    threads.delete = staticmethod(delete_thread)
    setattr(runs, _MARK, (threads, original_next, original_put, original_delete))


def unwrap(runs: Any) -> None:
    """Undo :func:`wrap`; nothing to do when ``runs`` is not wrapped."""
    saved = getattr(runs, _MARK, None)
    if saved is None:
        return
    threads, original_next, original_put, original_delete = saved
    runs.next, runs.put = staticmethod(original_next), staticmethod(original_put)
    threads.delete = staticmethod(original_delete)
    delattr(runs, _MARK)


def install() -> bool:
    """Apply the fixes to ``langgraph_runtime_inmem``; True when they are (or already were) in place."""
    from xmrt.config import create_config

    if not create_config().dev_runtime_fixes:
        log.info("in-memory runtime fixes disabled by XMRT_DEV_RUNTIME_FIXES")
        return False
    ops = _ops()
    if ops is None or not hasattr(ops, "Runs") or not hasattr(ops, "Threads"):
        return False  # another runtime (not langgraph dev): nothing to do
    if getattr(ops.Runs, _MARK, None) is not None:
        return True
    problem = shape_problem(ops.Runs, ops.Threads)
    if problem:
        log.warning("in-memory runtime fixes not installed: %s (langgraph_runtime_inmem changed)", problem)
        return False
    wrap(ops.Runs, ops.Threads)
    log.info("in-memory runtime fixes installed: runs start without the 0.5 s poll; thread deletes serialised")
    return True


def uninstall() -> None:
    """Restore the runtime's own functions (the lifespan's shutdown, and tests)."""
    ops = _ops()
    if ops is not None and hasattr(ops, "Runs"):
        unwrap(ops.Runs)
