"""The system cycle behind ``xmrt run``: assess → decide → execute, and self-improve every K cycles.

This service module never imports a graph: the command module passes in two callables,

* ``decide(proposals, cycle) -> dict`` runs one Eliza decision cycle on a batch of proposal dicts and returns
  its output (``decisions``, ``actions``, ``metrics``, ...);
* ``improve(cycle) -> dict`` runs the self-improvement graph on the outcomes recorded so far.

Each cycle takes the agent's lock (:class:`xmrt.redis.coordination.AgentLock`), so two processes never run the same
agent's cycle at once; the second waits up to ``lock_wait`` seconds, then fails with
:class:`~xmrt.redis.coordination.AgentBusy`.

**Where proposals come from.** Each cycle takes up to ``batch`` proposals from the sources in turn:

* :class:`JsonlSource`: a JSONL file, read incrementally (lines appended later are picked up);
* :class:`DirectorySource`: a directory whose new ``*.jsonl`` files are consumed in name order;
* :class:`RedisInbox`: the Redis list ``<prefix>:eliza:<agent>:inbox``; producers ``LPUSH`` JSON proposals and
  each cycle pops the oldest ones. If a cycle is abandoned, its popped proposals are pushed back.

Invalid lines or messages are logged with their position and skipped; an empty cycle logs "nothing to decide".

**Stopping.** Nothing polls forever: the loop ends after ``cycles`` cycles. :meth:`SystemRunner.request_stop`
(called from a SIGINT/SIGTERM handler by the CLI) ends the loop after the current cycle, and wakes up an
interval sleep or a wait for the lock at once. A second interrupt abandons the current cycle
(``KeyboardInterrupt``); the lock is released either way. Any other failure of a cycle ends the run with that
error (its inbox proposals are pushed back first).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from xmrt.config import Config
from xmrt.eliza import DecisionLedger, parse_jsonl, proposal_from_dict, validate_agent_id
from xmrt.errors import UserError
from xmrt.redis.clients import redis_client
from xmrt.redis.coordination import DEFAULT_TTL, DEFAULT_WAIT, AgentLock, LockWaitCancelled

log = logging.getLogger(__name__)


def inbox_key(config: Config, agent_id: str) -> str:
    """The Redis list that feeds an agent's cycles."""
    return f"{config.key_prefix}:eliza:{agent_id}:inbox"


def push_inbox(client: redis.Redis, config: Config, agent_id: str, proposals: Iterable[dict[str, Any]]) -> int:
    """Queue proposals for an agent's next cycles (``LPUSH`` JSON); returns the queue length."""
    payload = [json.dumps(p) for p in proposals]
    return client.lpush(inbox_key(config, agent_id), *payload) if payload else client.llen(inbox_key(config, agent_id))


# ------------------------------------------------------------------------------------------ sources
class JsonlSource:
    """A JSONL file consumed ``n`` lines at a time; appended lines are read by later cycles."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"input file {path} does not exist")
        self.offset = 0
        self.line_no = 0
        self.name = str(self.path)

    def take(self, n: int) -> list[tuple[str, str]]:
        """Up to ``n`` non-empty lines as (position, text)."""
        out: list[tuple[str, str]] = []
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            while len(out) < n:
                raw = fh.readline()
                if not raw:
                    break
                self.offset += len(raw)
                self.line_no += 1
                text = raw.decode("utf-8", errors="replace")
                if text.strip():
                    out.append((f"{self.path.name}:{self.line_no}", text))
        return out

    def giveback(self, items: list[tuple[str, str]]) -> None:
        """Nothing to do: an abandoned batch of a file is not re-read (its lines are logged as skipped)."""
        if items:
            log.warning("abandoned %d line(s) of %s (%s..%s)", len(items), self.name, items[0][0], items[-1][0])


class DirectorySource:
    """A directory whose ``*.jsonl`` files are consumed in name order, each once per process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise UserError(f"input directory {path} does not exist")
        self.name = str(self.path)
        self.done: set[str] = set()
        self.current: JsonlSource | None = None

    def take(self, n: int) -> list[tuple[str, str]]:
        """Up to ``n`` lines, from the current file and then from new files."""
        out: list[tuple[str, str]] = []
        while len(out) < n:
            if self.current is None:
                fresh = sorted(p for p in self.path.glob("*.jsonl") if p.is_file() and p.name not in self.done)
                if not fresh:
                    break
                self.current = JsonlSource(fresh[0])
                self.done.add(fresh[0].name)
            got = self.current.take(n - len(out))
            out.extend(got)
            if len(got) == 0:
                self.current = None
        return out

    def giveback(self, items: list[tuple[str, str]]) -> None:
        """See :meth:`JsonlSource.giveback`."""
        if items:
            log.warning("abandoned %d line(s) from %s", len(items), self.name)


class RedisInbox:
    """The agent's Redis inbox: producers ``LPUSH``, each cycle pops the oldest (``RPOP key count``)."""

    def __init__(self, client: redis.Redis, config: Config, agent_id: str) -> None:
        self.r = client
        self.key = inbox_key(config, agent_id)
        self.name = self.key

    def take(self, n: int) -> list[tuple[str, str]]:
        """Pop up to ``n`` messages."""
        if n <= 0:
            return []
        raw = self.r.rpop(self.key, n) or []
        return [(f"inbox#{i + 1}", v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v)
                for i, v in enumerate(raw)]

    def giveback(self, items: list[tuple[str, str]]) -> None:
        """Push popped messages back to the consumer end, oldest last, so the next cycle sees them first."""
        if items:
            self.r.rpush(self.key, *[text for _, text in reversed(items)])


# ------------------------------------------------------------------------------------------ the loop
@dataclass
class CycleReport:
    """What one cycle did."""

    cycle: int
    duration_s: float
    taken: int
    invalid: int
    decided: int
    counts: dict[str, int]
    accuracy: float | None
    recent_accuracy: float | None
    improved: dict[str, Any] | None = None
    note: str = ""

    def line(self) -> str:
        """The log line of the cycle."""
        acc = "n/a" if self.accuracy is None else f"{self.accuracy:.3f}"
        counts = " ".join(f"{k} {v}" for k, v in self.counts.items())
        parts = [f"cycle {self.cycle}: {self.duration_s * 1000:.0f} ms",
                 f"decided {self.decided}" + (f" ({counts})" if self.decided else "")]
        if self.invalid:
            parts.append(f"invalid {self.invalid}")
        parts.append(f"accuracy {acc}")
        if self.note:
            parts.append(self.note)
        if self.improved is not None:
            training = self.improved.get("training") or {}
            parts.append("self-improved: " + (f"weights v{training['version']}" if "version" in training
                                              else str(training.get("skipped", "done"))))
        return ", ".join(parts)


@dataclass
class RunSummary:
    """What a run did, and why it stopped."""

    cycles: list[CycleReport] = field(default_factory=list)
    stopped: str = "completed"  # completed | interrupted | terminated


class SystemRunner:
    """Runs ``cycles`` system cycles of one agent (see the module docstring).

    Args:
        config: Redis and key prefix.
        agent_id: Whose cycle this is (also the lock name).
        decide: ``decide(proposals, cycle) -> dict``; the Eliza cycle.
        improve: ``improve(cycle) -> dict``; the self-improvement run (None disables it).
        sources: Where proposals come from, taken in order.
        batch: Most proposals per cycle.
        improve_every: Self-improve after every K-th cycle (0 = never).
        lock_ttl: Lock expiry in seconds (renewed while a cycle runs).
        lock_wait: Seconds to wait for the lock before :class:`~xmrt.redis.coordination.AgentBusy`.
        on_cycle: Called with each :class:`CycleReport` (the CLI prints it).
    """

    def __init__(
        self,
        config: Config,
        agent_id: str,
        decide: Callable[[list[dict[str, Any]], int], dict[str, Any]],
        improve: Callable[[int], dict[str, Any]] | None = None,
        *,
        sources: list[Any] | None = None,
        batch: int = 20,
        improve_every: int = 0,
        lock_ttl: float = DEFAULT_TTL,
        lock_wait: float = DEFAULT_WAIT,
        on_cycle: Callable[[CycleReport], None] | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        if batch < 1:
            raise UserError("--batch must be at least 1")
        if improve_every < 0:
            raise UserError("--improve-every must be >= 0")
        self.config = config
        self.agent_id = validate_agent_id(agent_id)
        self.r = client = client or redis_client(config)  # a loop rides out blips: the retrying shared client
        self.decide = decide
        self.improve = improve
        self.sources = list(sources or [])
        self.batch = batch
        self.improve_every = improve_every
        self.lock = AgentLock(config, agent_id, ttl=lock_ttl, client=client)
        self.lock_wait = lock_wait
        self.on_cycle = on_cycle
        self.ledger = DecisionLedger(config, agent_id, client=client)
        self._stop = threading.Event()
        self.stop_reason = ""

    # -- stopping -------------------------------------------------------------------------
    def request_stop(self, reason: str = "interrupted") -> None:
        """End the loop after the current cycle (and wake an interval sleep now)."""
        self.stop_reason = self.stop_reason or reason
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stop.is_set()

    @contextlib.contextmanager
    def stop_on_signals(self, announce: Callable[[str], None] | None = None) -> Iterator[None]:
        """While the block runs, SIGINT or SIGTERM requests a stop; a second SIGINT abandons the current cycle.

        The first signal lets the current cycle finish (``announce`` is called with a message for the user);
        a second SIGINT raises ``KeyboardInterrupt`` where the cycle is, and the lock is released on the way out.
        The previous handlers are restored afterwards. Call it from the main thread.
        """

        def on_signal(signum, frame) -> None:
            if self.stopping and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.request_stop("interrupted" if signum == signal.SIGINT else "terminated")
            if announce is not None:
                announce("stopping after the current cycle (press Ctrl-C again to abandon it)")

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # -- one cycle ------------------------------------------------------------------------
    def _take(self) -> list[tuple[Any, list[tuple[str, str]]]]:
        taken, room = [], self.batch
        for source in self.sources:
            if room <= 0:
                break
            items = source.take(room)
            if items:
                taken.append((source, items))
                room -= len(items)
        return taken

    def run_cycle(self, number: int) -> CycleReport:
        """One cycle under the agent's lock: take proposals, decide, and self-improve when it is due."""
        started = time.perf_counter()
        with self.lock.hold(wait=self.lock_wait, purpose=f"xmrt run cycle {number}", cancel=self._stop):
            taken = self._take()
            try:
                lines = [(pos, text) for _, items in taken for pos, text in items]
                proposals, errors = parse_jsonl([text for _, text in lines], proposal_from_dict)
                for err in errors:
                    log.warning("skipped %s: %s", lines[err.line - 1][0] if err.line <= len(lines) else err.line,
                                err.error)
                out: dict[str, Any] = {}
                note = ""
                if proposals:
                    out = self.decide([p.__dict__ for p in proposals], number) or {}
                else:
                    note = "nothing to decide"
                    log.info("cycle %d: nothing to decide", number)
            except BaseException:
                for source, items in taken:
                    try:
                        source.giveback(items)
                    except redis.RedisError as exc:
                        log.error("could not return %d proposal(s) to %s: %s", len(items), source.name, exc)
                raise
            improved = None
            if self.improve is not None and self.improve_every and number % self.improve_every == 0:
                improved = self.improve(number) or {}
        decided = [d.get("decision") for d in out.get("decisions", [])]
        metrics = out.get("metrics") or self.ledger.metrics()
        invalid = len(errors) + len(out.get("invalid", []))
        report = CycleReport(
            cycle=number,
            duration_s=time.perf_counter() - started,
            taken=sum(len(items) for _, items in taken),
            invalid=invalid,
            decided=len(decided),
            counts={k: decided.count(k) for k in ("approve", "reject", "defer")},
            accuracy=metrics.get("decision_accuracy"),
            recent_accuracy=metrics.get("recent_accuracy"),
            improved=improved,
            note=note,
        )
        if not proposals:
            # The Eliza graph logs a metrics point per cycle it runs; an empty cycle logs its own.
            try:
                self.ledger.append_metrics({"kind": "cycle", "decided": 0, "source": "xmrt run", **metrics})
            except redis.RedisError as exc:
                log.warning("could not record the cycle's metrics: %s", exc)
        return report

    # -- the loop -------------------------------------------------------------------------
    def run(self, cycles: int, interval: float = 0.0) -> RunSummary:
        """Run up to ``cycles`` cycles, ``interval`` seconds apart; stops early when asked to."""
        if cycles < 1:
            raise UserError("--cycles must be at least 1")
        if interval < 0:
            raise UserError("--interval must be >= 0")
        summary = RunSummary()
        for number in range(1, cycles + 1):
            if self.stopping:
                break
            try:
                report = self.run_cycle(number)
            except LockWaitCancelled:
                log.info("stopped while waiting for the lock of agent %r", self.agent_id)
                break
            summary.cycles.append(report)
            log.info("%s", report.line())
            if self.on_cycle is not None:
                self.on_cycle(report)
            if number < cycles and interval > 0 and self._stop.wait(interval):
                break
        if self.stopping:
            summary.stopped = self.stop_reason or "interrupted"
        return summary
