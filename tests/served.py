"""Run the real served graph API (``langgraph dev``) on a free port against the test Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ROOT, free_port

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
