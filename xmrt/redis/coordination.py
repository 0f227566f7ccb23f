"""Coordination between processes: one Redis lock with expiry per agent.

Two processes must never run the same agent's cycle at once. :class:`AgentLock` is the classic single-instance
Redis lock:

* **acquire** is ``SET <prefix>:lock:<name> <value> NX PX <ttl>``, retried with a short back-off until
  ``wait`` seconds have passed. The value is a JSON record with a random token, the holder (host and pid),
  what it is doing and when it took the lock, so a waiting process can say who holds it.
* **release** and **extend** compare the stored value with ours in a Lua script before they delete it or push
  its expiry (``PEXPIRE``): a process whose lock expired and was taken over can never release or extend the new
  holder's lock.
* A holder that dies (even by SIGKILL) leaves the lock behind only until its expiry; after that the next
  process takes it over. While a long cycle runs, :meth:`AgentLock.hold` renews the expiry from a daemon thread
  every ``ttl / 3`` so that a live holder keeps it.

When the wait times out, :class:`AgentBusy` (an :class:`~xmrt.errors.XmrtError`) says which agent is busy, who
holds it, since when and when the lock expires.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from xmrt.config import Config
from xmrt.errors import XmrtError
from xmrt.policy import LOCAL, Principal
from xmrt.redis.clients import redis_client

log = logging.getLogger(__name__)

#: Delete the key only when it still holds our value.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
#: Push the expiry only when the key still holds our value.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

DEFAULT_TTL = 60.0
DEFAULT_WAIT = 30.0


class AgentBusy(XmrtError):
    """Another process holds the agent's lock and did not release it within the wait timeout."""

    def __init__(self, name: str, holder: dict[str, Any] | None, expires_in: float | None, waited: float) -> None:
        self.name = name
        self.holder = holder or {}
        self.expires_in = expires_in
        self.waited = waited
        who = self.holder.get("owner", "an unknown process")
        what = f" ({self.holder['purpose']})" if self.holder.get("purpose") else ""
        since = self.holder.get("since")
        held = f" for {max(0.0, time.time() - since):.1f} s" if isinstance(since, int | float) else ""
        expiry = f"; the lock expires in {expires_in:.1f} s unless renewed" if expires_in is not None else ""
        super().__init__(
            f"agent {name!r} is busy: it is held by {who}{what}{held}{expiry}; gave up after waiting {waited:.1f} s"
        )


class LockWaitCancelled(XmrtError):
    """The wait for a lock was cancelled (the process is stopping)."""


class LockLost(XmrtError):
    """We no longer hold a lock we thought we held (it expired and someone else took it, or it was deleted)."""


@dataclass
class LockInfo:
    """Who holds a lock now."""

    holder: dict[str, Any]
    expires_in: float | None


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class AgentLock:
    """A Redis lock with expiry on one name (an agent id), safe against releasing someone else's lock.

    Example:
        >>> lock = AgentLock(config, "eliza", ttl=60)
        >>> with lock.hold(wait=30, purpose="cycle 3"):   # raises AgentBusy after 30 s of waiting
        ...     run_the_cycle()

    Args:
        config: Where Redis is, and the key prefix.
        name: The agent id (or any resource name).
        ttl: Seconds until the lock expires if its holder stops renewing it (dies).
        client: A Redis client to reuse (default: the process's shared client for ``config``).
        principal: Whose agent it is (:mod:`xmrt.policy`): a served API user's locks are their own.
    """

    def __init__(self, config: Config, name: str, *, ttl: float = DEFAULT_TTL, client: redis.Redis | None = None,
                 principal: Principal | None = None):
        if ttl <= 0:
            raise ValueError("lock ttl must be > 0")
        self.r = client or redis_client(config)
        self.name = name
        self.key = f"{(principal or LOCAL).redis_root(config)}:lock:{name}"
        self.ttl = float(ttl)
        self._value: str | None = None
        self._release = self.r.register_script(_RELEASE)
        self._extend = self.r.register_script(_EXTEND)

    @property
    def held(self) -> bool:
        """Whether this object believes it holds the lock (see :meth:`owned` for the truth in Redis)."""
        return self._value is not None

    def owned(self) -> bool:
        """Whether Redis still holds our value under the key."""
        if self._value is None:
            return False
        raw = self.r.get(self.key)
        return raw is not None and (raw.decode() if isinstance(raw, bytes) else raw) == self._value

    def info(self) -> LockInfo | None:
        """The current holder and the seconds until the lock expires, or None when it is free."""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(self.key)
        pipe.pttl(self.key)
        raw, pttl = pipe.execute()
        if raw is None:
            return None
        try:
            holder = json.loads(raw)
            if not isinstance(holder, dict):
                holder = {"owner": str(holder)}
        except (ValueError, TypeError):
            holder = {"owner": raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)}
        holder.pop("token", None)
        return LockInfo(holder=holder, expires_in=(pttl / 1000.0) if pttl and pttl > 0 else None)

    def try_acquire(self, purpose: str = "") -> bool:
        """Take the lock if it is free; never waits."""
        if self._value is not None:
            raise RuntimeError(f"lock {self.key} is already held by this object")
        value = json.dumps({"token": secrets.token_hex(16), "owner": _owner(), "purpose": purpose,
                            "since": time.time()})
        if self.r.set(self.key, value, nx=True, px=max(1, int(self.ttl * 1000))) or self._landed(value):
            self._value = value
            return True
        return False

    def _landed(self, value: str) -> bool:
        """Whether the key holds ``value`` after a refused ``SET NX``: the client's retry after a lost reply.

        The shared client retries a command whose reply was lost; when the first ``SET NX`` did run, the retry finds
        the key taken by our own value (its token is random, so nobody else's can be equal).
        """
        raw = self.r.get(self.key)
        return raw is not None and (raw.decode() if isinstance(raw, bytes) else raw) == value

    def acquire(self, wait: float = DEFAULT_WAIT, purpose: str = "", poll: float = 0.1,
                cancel: threading.Event | None = None) -> None:
        """Take the lock, waiting up to ``wait`` seconds for its holder to release it (or for it to expire).

        Raises:
            AgentBusy: Still held by another process after ``wait`` seconds.
            LockWaitCancelled: ``cancel`` was set while waiting.
        """
        started = time.monotonic()
        delay = min(poll, 0.05)
        logged = False
        while True:
            if self.try_acquire(purpose):
                log.debug("took lock %s", self.key)
                return
            waited = time.monotonic() - started
            if waited >= wait:
                current = self.info()
                raise AgentBusy(self.name, current.holder if current else None,
                                current.expires_in if current else None, waited)
            if not logged:
                current = self.info()
                if current is not None:
                    log.info("agent %r is busy (held by %s); waiting up to %.1f s", self.name,
                             current.holder.get("owner"), wait)
                logged = True
            pause = min(delay, max(0.0, wait - waited)) or 0.001
            if cancel is not None:
                if cancel.wait(pause):
                    raise LockWaitCancelled(f"stopped while waiting for agent {self.name!r}")
            else:
                time.sleep(pause)
            delay = min(delay * 2, poll)

    def extend(self, ttl: float | None = None) -> None:
        """Push the expiry to ``ttl`` (default: the lock's ttl) seconds from now.

        Raises:
            LockLost: The lock expired and is gone or held by someone else.
        """
        if self._value is None:
            raise LockLost(f"lock {self.key} is not held")
        ms = max(1, int((ttl or self.ttl) * 1000))
        if not self._extend(keys=[self.key], args=[self._value, ms]):
            raise LockLost(f"lock on {self.name!r} was lost (it expired and may be held by another process)")

    def release(self) -> bool:
        """Release the lock if we still hold it. Returns False when it had already expired or been taken over."""
        value, self._value = self._value, None
        if value is None:
            return False
        try:
            released = bool(self._release(keys=[self.key], args=[value]))
        except redis.RedisError as exc:  # the lock expires on its own; never mask the caller's outcome
            log.warning("could not release lock %s: %s (it expires within %.0f s)", self.key, exc, self.ttl)
            return False
        if not released:
            log.warning("lock on %r had expired before it was released", self.name)
        return released

    @contextlib.contextmanager
    def hold(self, wait: float = DEFAULT_WAIT, purpose: str = "", renew: bool = True,
             cancel: threading.Event | None = None) -> Iterator[AgentLock]:
        """Acquire, renew every ``ttl / 3`` seconds from a daemon thread while the block runs, then release."""
        self.acquire(wait=wait, purpose=purpose, cancel=cancel)
        stop = threading.Event()
        renewer = None
        if renew:
            renewer = threading.Thread(target=self._renew_loop, args=(stop, self._value), daemon=True,
                                       name=f"lock-renew-{self.name}")
            renewer.start()
        try:
            yield self
        finally:
            stop.set()
            if renewer is not None:
                renewer.join(timeout=5)
            self.release()

    def _renew_loop(self, stop: threading.Event, value: str | None) -> None:
        while not stop.wait(self.ttl / 3):
            if self._value != value:
                return
            try:
                self.extend()
            except LockLost as exc:
                log.error("%s", exc)
                return
            except redis.RedisError as exc:
                log.warning("could not renew lock %s: %s", self.key, exc)
