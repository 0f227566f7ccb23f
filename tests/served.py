"""Run the real served graph API on a free port against the test Redis (and, in production mode, the test Postgres).

Two modes, one interface (``start()``, ``url``, ``stop()``, ``tail()``):

* :class:`LangGraphServer`: ``langgraph dev`` (the development server, in-memory runtime, one process).
* :class:`ProductionServer`: ``xmrt serve`` (stock langgraph-api on langgraph-runtime-pg: Postgres + Redis,
  ``workers`` processes). Several of them on one Postgres database and one Redis simulate several hosts.

:func:`start_server` builds either from a mode name, so a test can be parametrised over ``MODES``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from tests.conftest import ROOT, free_port

MODES = ("dev", "production")

API_LINE = re.compile(r"API:\s*(?:\x1b\[[0-9;]*m)?(http://[0-9.:]+)")


class LangGraphServer:
    """``langgraph dev`` as a subprocess; ``url`` is the address it really serves on."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None,
                 config_path: Path | None = None, jobs: int | None = None) -> None:
        self.env = env
        self.log_path = log_path
        self.port = port or free_port()
        self.config_path = config_path
        self.jobs = jobs
        self.url = ""
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> LangGraphServer:
        env = {**self.env, "LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGSMITH_TRACING": "false",
               "LANGGRAPH_NO_VERSION_CHECK": "true", "PYTHONPATH": str(ROOT)}
        cmd = [str(Path(sys.executable).with_name("langgraph")), "dev", "--port", str(self.port), "--no-browser",
               "--no-reload", "--host", "127.0.0.1"]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        if self.jobs:
            cmd += ["--n-jobs-per-worker", str(self.jobs)]
        self.log = self.log_path.open("a")
        # With its own config the server runs in that config's directory, so the dev server's on-disk state
        # (.langgraph_api: threads and runs of the in-memory runtime) is private to it and survives a restart.
        cwd = self.config_path.parent if self.config_path is not None else ROOT
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"langgraph dev exited with {self.proc.returncode}:\n{self.tail()}")
            match = API_LINE.search(self.log_path.read_text(errors="replace"))
            if match:
                self.url = match.group(1)
                try:
                    if httpx.get(f"{self.url}/ok", timeout=2).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.5)
        raise RuntimeError(f"langgraph dev did not come up in {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if getattr(self, "log", None):
            self.log.close()


def server_env(config) -> dict[str, str]:
    """The environment for a served process that uses ``config``'s Redis, data dir and key prefix."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "XMRT_", "OPENAI_", "RAGLIGHT_"))}
    env.update(XMRT_DATA_DIR=str(config.data_dir), XMRT_REDIS_PORT=str(config.embedded_redis_port),
               XMRT_KEY_PREFIX=config.key_prefix)
    return env


def langgraph_config_with(directory: Path, graphs: dict[str, str]) -> Path:
    """A copy of the project's langgraph.json with every path absolute, plus test-only ``graphs``."""
    data = json.loads((ROOT / "langgraph.json").read_text())

    def absolute(spec: str) -> str:
        return str((ROOT / spec).resolve()) if spec.startswith("./") else spec

    def fix(spec: str) -> str:
        path, _, name = spec.rpartition(":")
        return f"{absolute(path)}:{name}" if path else spec

    data["graphs"] = {k: fix(v) for k, v in data["graphs"].items()} | {k: fix(v) for k, v in graphs.items()}
    for section, key in (("checkpointer", "path"), ("store", "path"), ("http", "app"), ("auth", "path")):
        if section in data and key in data[section]:
            data[section][key] = fix(data[section][key])
    data["dependencies"] = [str(ROOT)]
    path = directory / "langgraph.json"
    path.write_text(json.dumps(data, indent=2))
    return path


class ProductionServer:
    """``xmrt serve`` (production mode) as a subprocess; ``url`` is where it serves.

    ``kill()`` SIGKILLs every process of it at once (the supervisor, uvicorn and its workers): a host crash.
    """

    def __init__(self, env: dict[str, str], log_path: Path, *, database_uri: str, port: int | None = None,
                 config_path: Path | None = None, workers: int = 1, jobs: int | None = None,
                 runtime_redis: str | None = None, heartbeat: float | None = None) -> None:
        self.env = {**env, "DATABASE_URI": database_uri, "PYTHONPATH": str(ROOT)}
        if runtime_redis:
            self.env["REDIS_URI"] = runtime_redis
        if heartbeat:
            self.env["LG_BG_JOB_HEARTBEAT"] = str(heartbeat)
        self.log_path = log_path
        self.port = port or free_port()
        self.config_path = config_path
        self.workers = workers
        self.jobs = jobs
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = None

    def launch(self) -> ProductionServer:
        """Start the process; :meth:`wait` for it (two servers can start side by side)."""
        cmd = [sys.executable, "-m", "xmrt.cli", "serve", "--port", str(self.port), "--workers", str(self.workers)]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        if self.jobs:
            cmd += ["--jobs", str(self.jobs)]
        self.log = self.log_path.open("a")
        self._log_start = self.log_path.stat().st_size  # a reused log's earlier "serving" line must not count
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, stdin=subprocess.DEVNULL)
        return self

    def wait(self, timeout: float = 240) -> ProductionServer:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"xmrt serve exited with {self.proc.returncode}:\n{self.tail()}")
            if "xmrt: serving the graph API on" in self.log_path.read_text(errors="replace")[self._log_start:]:
                return self
            time.sleep(0.25)
        raise RuntimeError(f"xmrt serve did not come up in {timeout}s:\n{self.tail()}")

    def start(self, timeout: float = 240) -> ProductionServer:
        return self.launch().wait(timeout)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def pids(self) -> set[int]:
        """Every live process of this server (the supervisor and all its descendants)."""
        import psutil

        if self.proc is None:
            return set()
        try:
            root = psutil.Process(self.proc.pid)
            return {root.pid, *(p.pid for p in root.children(recursive=True))}
        except psutil.NoSuchProcess:
            return set()

    def kill(self) -> None:
        """SIGKILL every process of this server at once, as if its host lost power."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            self.proc.wait(10)
        if self.log:
            self.log.close()
            self.log = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            leftovers = self.pids()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                pass
            for pid in leftovers:  # anything still alive after the graceful stop
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if self.proc.poll() is None:
                self.proc.wait(10)
        if self.log:
            self.log.close()
            self.log = None


def fresh_database(postgres_server, prefix: str = "t") -> str:
    """A new, empty database on the session's Postgres; its URI."""
    return postgres_server.ensure_database(f"{prefix}_{uuid.uuid4().hex[:12]}")


def start_server(mode: str, env: dict[str, str], log_path: Path, *, config_path: Path | None = None,
                 jobs: int | None = None, postgres_server=None, database_uri: str | None = None,
                 workers: int = 1) -> LangGraphServer | ProductionServer:
    """A started server of ``mode`` (``"dev"`` or ``"production"``; production needs ``postgres_server``)."""
    if mode == "dev":
        return LangGraphServer(env, log_path, config_path=config_path, jobs=jobs).start()
    if mode != "production":
        raise ValueError(f"unknown mode {mode!r}")
    uri = database_uri or fresh_database(postgres_server)
    return ProductionServer(env, log_path, database_uri=uri, config_path=config_path, jobs=jobs,
                            workers=workers).start()


class LoadBalancer:
    """A round-robin TCP load balancer on a free port, in a background thread (the multi-host tests' front door).

    Each new connection goes to the next backend that accepts it; a backend that refuses (a dead host) is skipped.
    ``backends`` may change while it runs. ``routed`` counts the connections each backend got.
    """

    def __init__(self, backends: list[str] | None = None) -> None:
        import asyncio
        import threading

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backends: list[str] = list(backends or [])
        self.routed: dict[str, int] = {}
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the test load balancer did not start")

    def _run(self) -> None:
        import asyncio

        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader, writer) -> None:
        import asyncio
        from urllib.parse import urlparse

        upstream = None
        for _ in range(max(1, len(self.backends))):
            if not self.backends:
                break
            backend = self.backends[self._next % len(self.backends)]
            self._next += 1
            parsed = urlparse(backend)
            try:
                upstream = await asyncio.open_connection(parsed.hostname, parsed.port)
            except OSError:
                continue
            self.routed[backend] = self.routed.get(backend, 0) + 1
            break
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream

        async def pipe(src, dst) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                try:
                    dst.close()
                except (ConnectionError, OSError, RuntimeError):
                    pass

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def close(self) -> None:
        import asyncio

        async def shutdown() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(10)
