"""Coordination of knowledge-base writers through the Chroma store itself: a lease per collection.

Machines that share a Chroma server (``CHROMA_HOST``) need not share anything else, so the lock that
serialises writers of one collection lives in Chroma too, in the hidden collection ``xmrt--coordination``:

* Chroma's ``add`` keeps the first record of an id and ignores later adds of the same id (also between
  clients of one server), which makes it a compare-and-set. A lease for a key is a record
  ``<key>#<epoch>`` whose metadata names its holder (token, host, pid, purpose) and its expiry. To take the
  lease, a writer reads the highest epoch of the key; when that record is released or expired it adds
  ``<key>#<epoch + 1>`` and reads it back: the lease is its own exactly when the stored token is its own.
* The holder renews the expiry from a daemon thread every ``ttl / 3`` and releases the lease by setting the
  expiry to 0. A holder killed with SIGKILL leaves its lease behind only until its expiry (``ttl``, 60 s by
  default): then another writer takes it over with the next epoch.
* Expiries are compared on the waiting machine's clock, so the clocks of the machines must agree within a
  fraction of ``ttl`` (as NTP keeps them). A lease whose holder ran on this same host in a process that no
  longer exists counts as expired at once (its pid is checked), so a crashed local ingest is taken over
  without waiting for the expiry.

:class:`ChromaLease` is re-entrant within one object: the ingest holds it around plan, embed and write, and
every upsert/delete inside takes it again without waiting.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

from xmrt.errors import XmrtError

log = logging.getLogger(__name__)

#: Prefix of the collections the knowledge base keeps for itself (hidden from listings, refused as names).
RESERVED_PREFIX = "xmrt--"
COORDINATION_COLLECTION = RESERVED_PREFIX + "coordination"
DEFAULT_TTL = 60.0
DEFAULT_WAIT = 3600.0


class LeaseBusy(XmrtError):
    """The lease stayed held by another writer for the whole wait."""


class LeaseLost(XmrtError):
    """Our lease expired and another writer took it over."""


def coordination_collection(client):
    """The hidden coordination collection (1-dimensional placeholder vectors), created on first use."""
    return client.get_or_create_collection(COORDINATION_COLLECTION, embedding_function=None,
                                           metadata={"xmrt": "coordination"})


class ChromaLease:
    """A re-entrant lease with expiry on ``key``, kept in the Chroma store (see the module docstring).

    Args:
        client: The Chroma client of the store.
        key: What is locked, e.g. ``write:<collection id>``.
        ttl: Seconds the lease lives without renewal.
    """

    def __init__(self, client, key: str, *, ttl: float = DEFAULT_TTL) -> None:
        self._client = client
        self.key = key
        self.ttl = ttl
        self._token = secrets.token_hex(12)
        self._depth = 0
        self._record: str | None = None
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._mutex = threading.RLock()
        self.lost = False

    # -- state of the key ----------------------------------------------------------------------------------

    def _col(self):
        return coordination_collection(self._client)

    def current(self) -> tuple[int, dict | None]:
        """``(highest epoch, its metadata)`` of the key; ``(0, None)`` when it was never taken."""
        got = self._col().get(where={"key": self.key}, include=["metadatas"])
        best, meta = 0, None
        for meta_i in got["metadatas"] or []:
            epoch = int((meta_i or {}).get("epoch", 0))
            if epoch > best:
                best, meta = epoch, dict(meta_i)
        return best, meta

    @staticmethod
    def _live(meta: dict | None) -> bool:
        """Whether a lease record is live: not released or expired, and not held by a dead local process."""
        if not meta or float(meta.get("expires", 0)) <= time.time():
            return False
        if meta.get("host") == socket.gethostname():
            try:
                os.kill(int(meta.get("pid", 0)), 0)
            except ProcessLookupError:
                return False
            except (PermissionError, ValueError, OverflowError):
                pass
        return True

    def held_by_other(self) -> dict | None:
        """The live holder's record when someone other than us holds the lease, else None."""
        _, meta = self.current()
        if meta and meta.get("token") != self._token and self._live(meta):
            return meta
        return None

    # -- taking and giving back ----------------------------------------------------------------------------

    def try_acquire(self, purpose: str = "") -> bool:
        """Take the lease if it is free or expired; True when we hold it (also when we held it already)."""
        with self._mutex:
            if self._depth:
                self._depth += 1
                return True
            epoch, meta = self.current()
            if meta and meta.get("token") != self._token and self._live(meta):
                return False
            record = f"{self.key}#{epoch + 1}"
            mine = {"key": self.key, "epoch": epoch + 1, "token": self._token, "host": socket.gethostname(),
                    "pid": os.getpid(), "purpose": purpose[:200], "since": time.time(),
                    "expires": time.time() + self.ttl}
            col = self._col()
            col.add(ids=[record], embeddings=[[0.0]], metadatas=[mine])
            got = col.get(ids=[record], include=["metadatas"])
            if not got["ids"] or (got["metadatas"][0] or {}).get("token") != self._token:
                return False  # another writer added this epoch first
            self._record, self._depth, self.lost = record, 1, False
            self._start_renewal(mine)
            if epoch > 2:  # forget old epochs of this key (never the one just taken)
                old = [f"{self.key}#{e}" for e in range(max(1, epoch - 20), epoch - 1)]
                try:
                    col.delete(ids=old)
                except Exception:  # housekeeping only
                    log.debug("could not delete old lease records of %s", self.key, exc_info=True)
            return True

    def acquire(self, wait: float = DEFAULT_WAIT, purpose: str = "", poll: float = 0.25,
                on_wait: Callable[[dict], None] | None = None) -> None:
        """Take the lease, waiting up to ``wait`` seconds for the holder to finish or expire.

        Raises:
            LeaseBusy: Still held by another writer after ``wait`` seconds (the message names the holder).
        """
        deadline = time.monotonic() + wait
        told = False
        while not self.try_acquire(purpose):
            holder = self.held_by_other()
            if holder and not told and on_wait is not None:
                on_wait(holder)
                told = True
            if time.monotonic() >= deadline:
                who = f"{holder.get('host')} pid {holder.get('pid')} ({holder.get('purpose')})" if holder else "?"
                raise LeaseBusy(f"{self.key} is held by {who} for {wait:.0f} s; try again later")
            time.sleep(poll)

    def release(self) -> None:
        """Give back one level of the lease; the last level marks the record released."""
        with self._mutex:
            if not self._depth:
                return
            self._depth -= 1
            if self._depth:
                return
            self._stop_renewal()
            record, self._record = self._record, None
            try:
                col = self._col()
                got = col.get(ids=[record], include=["metadatas"])
                if got["ids"] and (got["metadatas"][0] or {}).get("token") == self._token:
                    meta = dict(got["metadatas"][0])
                    meta["expires"] = 0.0
                    col.upsert(ids=[record], embeddings=[[0.0]], metadatas=[meta])
            except Exception:  # the lease then simply expires
                log.warning("could not release the lease %s; it expires in %.0f s", self.key, self.ttl,
                            exc_info=True)

    def __enter__(self) -> ChromaLease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def held(self) -> bool:
        """Whether this object holds the lease."""
        return self._depth > 0 and not self.lost

    def check(self) -> None:
        """Raise LeaseLost when our lease was taken over (a writer checks before committing).

        Raises:
            LeaseLost: Our lease expired (e.g. the process was stopped longer than the ttl) and was taken over.
        """
        if self.lost:
            raise LeaseLost(f"the lease {self.key} expired and was taken over by another writer")

    # -- renewal -------------------------------------------------------------------------------------------

    def _start_renewal(self, meta: dict) -> None:
        stop = threading.Event()
        self._stop = stop
        record = self._record
        self._thread = threading.Thread(target=self._renew_loop, args=(stop, record, dict(meta)), daemon=True,
                                        name=f"lease-{self.key}")
        self._thread.start()

    def _stop_renewal(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._stop = self._thread = None

    def _renew_loop(self, stop: threading.Event, record: str, meta: dict) -> None:
        while not stop.wait(self.ttl / 3):
            try:
                col = self._col()
                epoch, current = self.current()
                if current is None or current.get("token") != self._token:
                    self.lost = True
                    log.error("lease %s was taken over (epoch %d)", self.key, epoch)
                    return
                meta["expires"] = time.time() + self.ttl
                col.upsert(ids=[record], embeddings=[[0.0]], metadatas=[meta])
            except Exception:  # a passing network error: try again at the next tick
                log.warning("could not renew the lease %s", self.key, exc_info=True)
