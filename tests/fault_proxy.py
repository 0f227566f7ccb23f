"""A TCP proxy between a Redis client and a real Redis that injects faults into a save on the wire.

The client connects to the proxy; every connection gets its own upstream connection. Bytes from
Redis go back untouched. Bytes from the client are split into RESP commands, so a rule can act at an
exact point of a transaction: after ``MULTI`` and ``after`` queued commands (``after`` = 0 cuts
right after ``MULTI``; the number of queued commands cuts just before ``EXEC``), or halfway through
one command's bytes. The action is to cut (close both sockets) or to hold (signal the test and
wait, e.g. while it kills Redis, then cut). Nothing about Redis is mocked: the proxy only forwards.

Bytes from Redis are split into RESP2/RESP3 replies too, and counted: Redis answers the commands of a
connection in order, one reply each (push messages aside), so the reply to a given command is known
by its number. Connections in subscribe mode or with ``CLIENT REPLY OFF`` break that count; the
saver never uses them.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class Rule:
    """Where to strike.

    ``in_multi_after``: strike before forwarding the command at this position after ``MULTI``
    (0 = the first queued command). ``after_exec``: forward a transaction's ``EXEC`` and strike once
    Redis's reply to that ``EXEC`` has arrived (Redis has run it), holding back that reply and every
    one after it (the client never hears that it ran). ``lose_reply``: the same for a command outside a
    transaction whose name is in this set (it runs; its reply is lost). ``partial``: strike
    halfway through the first command whose name is in this set (outside or inside a transaction).
    ``times``: how many strikes (None: all). ``match``: strike only a transaction (or, for
    ``partial`` and ``lose_reply``, a command) whose arguments hold each of these byte strings; empty: any.
    ``hold``: wait for :meth:`FaultProxy.release` before cutting.
    """

    in_multi_after: int | None = None
    after_exec: bool = False
    lose_reply: frozenset[str] = frozenset()
    partial: frozenset[str] = frozenset()
    times: int | None = 1
    match: tuple[bytes, ...] = ()
    hold: bool = False
    strikes: int = 0

    def spent(self) -> bool:
        return self.times is not None and self.strikes >= self.times

    def matches(self, commands: list[list[bytes]]) -> bool:
        return all(any(m in arg for command in commands for arg in command) for m in self.match)


#: RESP reply types of one line; of a length and that many bytes; of that many nested replies.
_LINE_TYPES = frozenset(b"+-:_,#(")
_BULK_TYPES = frozenset(b"$!=")
_AGGREGATE_TYPES = frozenset(b"*~>%|")


def _reply_end(buf: bytearray, pos: int = 0) -> int | None:
    """Where the complete RESP2/RESP3 reply starting at ``pos`` ends, or None if it is incomplete.

    An attribute (``|``) and the reply it annotates are one reply; a push (``>``) is a reply here
    too (the caller tells it apart by its first byte).
    """
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    kind, after = buf[pos], end + 2
    if kind in _LINE_TYPES:
        return after
    if kind in _BULK_TYPES:
        size = int(buf[pos + 1:end])
        if size < 0:  # RESP2 null bulk string
            return after
        return after + size + 2 if len(buf) >= after + size + 2 else None
    if kind in _AGGREGATE_TYPES:
        count = int(buf[pos + 1:end])
        if count < 0:  # RESP2 null array (an EXEC whose WATCH failed)
            return after
        pos = after
        for _ in range(count * 2 if kind in b"%|" else count):  # a map or attribute: key, value
            if (pos := _reply_end(buf, pos)) is None:
                return None
        return _reply_end(buf, pos) if kind == ord("|") else pos
    raise ValueError(f"not a RESP reply: {bytes(buf[pos:pos + 40])!r}")


@dataclass
class _Link:
    """One client connection and its upstream connection: what its two forwarding threads share."""

    client: socket.socket
    upstream: socket.socket
    hold: threading.Event = field(default_factory=threading.Event)  # set: replies are no longer passed on
    sent: int = 0  # commands forwarded whole
    awaited: int | None = None  # the number of the reply that sets ``replied`` (counting from 1)
    replied: threading.Event = field(default_factory=threading.Event)  # set: that reply arrived
    reply: bytes = b""  # and this is it


def _parse_command(buf: bytearray) -> tuple[int, list[bytes]] | None:
    """(length, arguments) of the first complete RESP command in ``buf``, or None if incomplete."""
    if not buf or buf[0:1] != b"*":
        if not buf:
            return None
        end = buf.find(b"\r\n")  # an inline command: one line
        return (end + 2, buf[:end].split()) if end >= 0 else None
    end = buf.find(b"\r\n")
    if end < 0:
        return None
    count = int(buf[1:end])
    pos, args = end + 2, []
    for _ in range(count):
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None
        size = int(buf[pos + 1:end])
        start = end + 2
        if len(buf) < start + size + 2:
            return None
        args.append(bytes(buf[start:start + size]))
        pos = start + size + 2
    return pos, args


@dataclass
class FaultProxy:
    """Listen on 127.0.0.1:``port`` and forward to ``upstream_port``, applying :attr:`rule`."""

    port: int
    upstream_port: int
    rule: Rule | None = None
    struck: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    commands: list[list[bytes]] = field(default_factory=list)  # every command forwarded in full
    exec_reply: bytes | None = None  # an ``after_exec`` strike: Redis's reply to the EXEC it held back
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sockets: list[socket.socket] = field(default_factory=list)
    _listener: socket.socket | None = None
    _closed: bool = False

    def start(self) -> FaultProxy:
        """Accept connections in a background thread."""
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def arm(self, rule: Rule) -> None:
        """Strike from now on according to ``rule``."""
        with self._lock:
            self.struck.clear()
            self.released.clear()
            self.exec_reply = None
            self.rule = rule

    def disarm(self) -> None:
        """Forward everything again."""
        with self._lock:
            self.rule = None

    def release(self) -> None:
        """Let a held strike go on (and cut)."""
        self.released.set()

    def close(self) -> None:
        """Stop listening and drop every connection."""
        self._closed = True
        self.released.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()

    # -- internals -------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            link = _Link(client, upstream)
            threading.Thread(target=self._downstream, args=(link,), daemon=True).start()
            threading.Thread(target=self._upstream, args=(link,), daemon=True).start()

    @staticmethod
    def _cut(*sockets: socket.socket) -> None:
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def _downstream(self, link: _Link) -> None:
        """Pass Redis's bytes on untouched until ``link.hold``; count the replies, whole, as they end."""
        pending = bytearray()  # the bytes of a reply not yet complete
        replies = 0
        try:
            while data := link.upstream.recv(65536):
                if not link.hold.is_set():
                    link.client.sendall(data)
                pending += data
                while (end := _reply_end(pending)) is not None:
                    reply = bytes(pending[:end])
                    del pending[:end]
                    if reply[0] == ord(">"):  # a push message answers no command
                        continue
                    replies += 1
                    if replies == link.awaited:
                        link.reply = reply
                        link.replied.set()
        except (OSError, ValueError):
            pass
        self._cut(link.upstream, link.client)

    def _strike(self, rule: Rule) -> None:
        rule.strikes += 1
        self.struck.set()
        if rule.hold:
            self.released.wait(timeout=60)

    def _upstream(self, link: _Link) -> None:
        client, upstream = link.client, link.upstream
        buf = bytearray()
        queued: int | None = None  # commands queued since MULTI on this connection
        txn: list[list[bytes]] = []  # and those commands
        try:
            while data := client.recv(65536):
                buf += data
                while (parsed := _parse_command(buf)) is not None:
                    size, args = parsed
                    name = args[0].upper() if args else b""
                    with self._lock:
                        rule = self.rule if self.rule is not None and not self.rule.spent() else None
                    if rule is not None:
                        if (queued is not None and rule.in_multi_after is not None and queued == rule.in_multi_after
                                and rule.matches([*txn, args])):
                            self._strike(rule)
                            self._cut(client, upstream)
                            return
                        if ((rule.after_exec and queued is not None and name == b"EXEC" and rule.matches(txn))
                                or (queued is None and name.decode(errors="replace") in rule.lose_reply
                                    and rule.matches([args]))):
                            # Await the reply to this command itself: replies to earlier commands (MULTI
                            # and the queued ones) may still be on their way, and Redis runs it after them.
                            link.awaited = link.sent + 1
                            link.hold.set()
                            upstream.sendall(bytes(buf[:size]))
                            self.commands.append(args)
                            if link.replied.wait(timeout=30):  # else no strike: the test sees none
                                self.exec_reply = link.reply
                                self._strike(rule)
                            self._cut(client, upstream)
                            return
                        if name.decode(errors="replace") in rule.partial and rule.matches([args]):
                            upstream.sendall(bytes(buf[:size // 2]))
                            self._strike(rule)
                            self._cut(client, upstream)
                            return
                    upstream.sendall(bytes(buf[:size]))
                    del buf[:size]
                    self.commands.append(args)
                    if args:  # Redis ignores an empty inline line, and answers every other command
                        link.sent += 1
                    if name == b"MULTI":
                        queued, txn = 0, []
                    elif name in (b"EXEC", b"DISCARD"):
                        queued = None
                    elif queued is not None:
                        queued += 1
                        txn.append(args)
        except OSError:
            pass
        self._cut(client, upstream)
