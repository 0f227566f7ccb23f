"""What the embedded servers (:mod:`xmrt.redis.server`, :mod:`xmrt.server.postgres`) share.

Each keeps its files under one directory and runs as a background process that outlives the command that
started it. This module holds the parts that do not depend on which server it is: the directory, port and host,
the pid file and the log, launching a server's command with one clear error, and waiting for a server to answer
or for its process to end.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie (a zombie child still answers ``kill(pid, 0)``)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # the command name may hold spaces and ")"
    except IndexError:
        return True
    except OSError:
        return not Path("/proc/self").exists()  # gone meanwhile, unless there is no /proc to ask


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


@dataclass
class EmbeddedServer:
    """An embedded server's files and process, under ``directory``; it listens on ``host:port``.

    A subclass names its pid and log files and its error type, says how to tell that it answers, and gives the
    steps of :meth:`start`: :meth:`prepare` (its files, and the command that starts it in the background),
    :meth:`launch_failed` (the message when that command fails) and :meth:`ready` (checks once it answers).
    """

    directory: Path
    port: int
    host: str = "127.0.0.1"

    name: ClassVar[str]
    directory_name: ClassVar[str]
    error: ClassVar[type[Exception]]
    poll: ClassVar[float]
    pid_name: ClassVar[str]
    log_name: ClassVar[str]

    def __init_subclass__(cls, *, name: str, directory_name: str, error: type[Exception], pid_name: str,
                          log_name: str, poll: float = 0.05, **kwargs: Any) -> None:
        """A server declares its facts in its class statement.

        Args:
            name: The server's name in messages.
            directory_name: The server's ``directory`` under the configured data directory (``XMRT_DATA_DIR``).
            error: What a failed start raises.
            pid_name: The file whose first line is the running server's pid, relative to ``directory``.
            log_name: The server's log, relative to ``directory``.
            poll: Seconds between two checks whether the server answers.
            **kwargs: For other base classes.
        """
        super().__init_subclass__(**kwargs)
        cls.name, cls.directory_name, cls.error = name, directory_name, error
        cls.pid_name, cls.log_name, cls.poll = pid_name, log_name, poll

    @classmethod
    def from_config(cls, config: Any) -> EmbeddedServer:
        """The embedded server described by the configuration."""
        raise NotImplementedError

    @property
    def pid_file(self) -> Path:
        """The file whose first line is the running server's pid."""
        return self.directory / self.pid_name

    @property
    def log_file(self) -> Path:
        """The server's log."""
        return self.directory / self.log_name

    def is_running(self) -> bool:
        """True when the server answers on its port."""
        raise NotImplementedError

    def prepare(self, timeout: float) -> tuple[list[str], dict[str, Any]]:
        """Create what the server needs on disk; return the command that starts it and ``subprocess.run`` options."""
        raise NotImplementedError

    def launch_failed(self, proc: subprocess.CompletedProcess) -> str:
        """The error message when the start command exits with an error."""
        raise NotImplementedError

    def ready(self) -> None:
        """Check (or finish setting up) a server that answers; raise the class's ``error`` when it is unusable."""

    def start(self, timeout: float = 15.0) -> bool:
        """Start the server in the background unless it already runs.

        Returns:
            True if this call started it, False if it was already running.

        Raises:
            The class's ``error``: it could not start (the message includes the log's last lines).
        """
        if self.is_running():
            self.ready()
            return False
        command, options = self.prepare(timeout)
        proc = self.launch(command, f"the embedded {self.name}", options.pop("timeout", timeout), **options)
        if proc.returncode != 0:
            raise self.error(self.launch_failed(proc))
        if not self.wait_running(timeout, self.poll):
            raise self.error(f"embedded {self.name} does not answer on {self.host}:{self.port} within "
                             f"{timeout:.0f}s: {self.log_tail()}")
        self.ready()
        log.info("embedded %s started on %s:%s (data in %s)", self.name, self.host, self.port, self.directory)
        return True

    def pid(self) -> int | None:
        """Pid of the running server (first line of its pid file), or None."""
        try:
            pid = int(self.pid_file.read_text().split("\n", 1)[0].strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def log_tail(self, lines: int = 3) -> str:
        """The log's last non-empty lines, joined with `` | `` (for error messages)."""
        if not self.log_file.exists():
            return "(no log)"
        kept = [line for line in self.log_file.read_text(errors="replace").splitlines() if line.strip()]
        return " | ".join(kept[-lines:])

    def launch(self, command: Sequence[str], what: str, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess:
        """Run the server's start command (it returns once the server is in the background).

        Raises:
            The class's ``error``: the command could not be run or did not return within ``timeout``.
        """
        try:
            return subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, **kwargs)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise self.error(f"could not launch {what}: {exc}") from None

    def wait_running(self, timeout: float, interval: float = 0.05) -> bool:
        """Wait until the server answers; False if it does not within ``timeout`` seconds."""
        return wait_for(self.is_running, timeout, interval)

    def wait_exited(self, pid: int | None, timeout: float) -> bool:
        """Wait until the server no longer answers and process ``pid`` (when known) has ended."""
        return wait_for(lambda: not self.is_running() and (pid is None or not pid_alive(pid)), timeout)
