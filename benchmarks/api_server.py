"""The server of ``xmrt bench api`` when it starts its own: config, knowledge base, scratch database, clean-up.

:func:`own_server` starts the production server (``xmrt serve --workers N``, langgraph-runtime-pg on a scratch
Postgres database) or the development server (``langgraph dev``) on a free port, serving the project's graphs plus
the bench graphs (:func:`bench_langgraph_config`) with a generated API key, its own key prefix and data directory
(the knowledge base :func:`seed_knowledge_base` fills from ``xmrt/sample``); it stops the server and removes the
scratch database and the Redis keys afterwards. Used by :mod:`benchmarks.commands.api`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from xmrt.cli.commands.serve import end_with_parent, stop_process_group
from xmrt.errors import XmrtError

BENCH_GRAPH = "bench_scripted"
RAG_GRAPH = "rag_scripted"
RAG_COLLECTION = "bench_kb"
STARTUP_TIMEOUT = 300


# ----------------------------------------------------------------------------- own server
def bench_langgraph_config(directory: Path) -> Path:
    """The project's langgraph.json with absolute paths, plus the bench graphs (and ``ingest`` if missing)."""
    from xmrt.cli.commands.serve import PROJECT_ROOT

    data = json.loads((PROJECT_ROOT / "langgraph.json").read_text())

    def fix(spec: str) -> str:
        path, _, name = spec.rpartition(":")
        return f"{(PROJECT_ROOT / path).resolve()}:{name}" if path.startswith("./") else spec

    graphs = {k: fix(v) for k, v in data.get("graphs", {}).items()}
    graphs[BENCH_GRAPH] = fix("./benchmarks/api_graph.py:graph")
    graphs[RAG_GRAPH] = fix("./benchmarks/api_graph.py:rag_scripted")
    if "ingest" not in graphs and (PROJECT_ROOT / "graphs" / "ingest.py").exists():
        graphs["ingest"] = fix("./graphs/ingest.py:graph")
    data["graphs"] = graphs
    for section, key in (("checkpointer", "path"), ("store", "path"), ("http", "app"), ("auth", "path")):
        if key in data.get(section, {}):
            data[section][key] = fix(data[section][key])
    data["dependencies"] = [str(PROJECT_ROOT)]
    path = directory / "langgraph.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def seed_knowledge_base(config: Any) -> int:
    """Ingest the sample documents (xmrt/sample) into the bench collection of ``config``'s knowledge base."""
    from xmrt.kb.ingest import ingest_path

    sample = Path(__file__).resolve().parents[1] / "xmrt" / "sample"
    summary = ingest_path(config, str(sample), collection=RAG_COLLECTION, progress=False)
    return int(summary.get("chunks_embedded") or 0)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scratch_database(database_uri: str) -> tuple[str, str]:
    """Create an empty database next to ``database_uri``'s; returns (its URI, its name)."""
    import psycopg
    from psycopg import sql

    name = f"xmrt_bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(database_uri, connect_timeout=10, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise XmrtError(f"cannot create the benchmark's scratch database: {' '.join(str(exc).split())}") from None
    from urllib.parse import urlparse

    return urlparse(database_uri)._replace(path=f"/{name}").geturl(), name


def drop_database(database_uri: str, name: str) -> None:
    """Drop a scratch database (best effort: a failure is only reported)."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(database_uri, connect_timeout=10, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        print(f"xmrt: warning: could not drop the scratch database {name}: {exc}", file=sys.stderr)


def drop_redis_prefix(redis_url: str, prefix: str) -> int:
    """Remove the search indexes and keys under ``prefix`` (the benchmark's own); returns the keys removed."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        for index in client.execute_command("FT._LIST"):
            name = index.decode() if isinstance(index, bytes) else str(index)
            if name.startswith(prefix):
                with contextlib.suppress(redis.ResponseError):
                    client.execute_command("FT.DROPINDEX", name)
        removed = 0
        for pattern in (f"{prefix}:*", f"{prefix}_*"):
            batch = []
            for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    removed += client.delete(*batch)
                    batch = []
            if batch:
                removed += client.delete(*batch)
        return removed
    finally:
        client.close()


@contextlib.contextmanager
def own_server(*, dev: bool, workers: int, jobs: int):
    """Start a server for the benchmark; yields ``(url, api_key, description)``."""
    import httpx

    from xmrt.cli.commands.serve import parse_api_url, serve_command
    from xmrt.config import get_config
    from xmrt.redis.server import ensure_redis

    config = get_config()
    ensure_redis(config)
    key = "bench-" + secrets.token_hex(12)
    prefix = f"{config.key_prefix}-bench-{secrets.token_hex(3)}"
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="xmrt-bench-api-") as tmp_name:
        tmp = Path(tmp_name)
        config_path = bench_langgraph_config(tmp)
        bench_config = config.with_overrides(data_dir=tmp / "data", vector_store_dir=tmp / "data" / "chroma",
                                             chroma_host=None, key_prefix=prefix)
        seed_knowledge_base(bench_config)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("REDIS_", "XMRT_", "RAGLIGHT_VECTOR", "CHROMA_", "DATABASE_URI"))}
        env.update(REDIS_URL=config.redis_url, XMRT_DATA_DIR=str(tmp / "data"), XMRT_KEY_PREFIX=prefix,
                   XMRT_API_KEYS=f"{key}:bench", REDIS_URI=config.runtime_redis)
        scratch = None
        if dev:
            cmd, env = serve_command(port=port, host="127.0.0.1", jobs=jobs, env=env)
            cmd += ["--config", str(config_path)]
            description = f"langgraph dev (in-memory runtime, 1 process, {jobs} jobs)"
        else:
            from xmrt.server.postgres import ensure_postgres

            scratch = scratch_database(ensure_postgres(config))
            env["DATABASE_URI"] = scratch[0]
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]),
                                                             env.get("PYTHONPATH", "")) if p)
            cmd = [sys.executable, "-m", "xmrt.cli", "serve", "--port", str(port), "--workers", str(workers),
                   "--jobs", str(jobs), "--config", str(config_path)]
            description = (f"xmrt serve (langgraph-runtime-pg, {workers} worker process{'es' if workers > 1 else ''}"
                           f" x {jobs} jobs)")
        log_path = tmp / "server.log"
        with log_path.open("w") as log:
            # Run in the temporary directory: the dev server's on-disk state (.langgraph_api) goes with it.
            # The server gets SIGTERM if this command dies (even by SIGKILL): no orphaned benchmark server.
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, stdin=subprocess.DEVNULL,
                                    preexec_fn=end_with_parent if sys.platform == "linux" else None)
        try:
            url, deadline = None, time.time() + STARTUP_TIMEOUT
            while time.time() < deadline:
                if proc.poll() is not None:
                    raise XmrtError("the benchmark server exited:\n" + log_path.read_text(errors="replace")[-2000:])
                text = log_path.read_text(errors="replace")
                if dev:
                    url = url or parse_api_url(text)
                elif "xmrt: serving the graph API on" in text:
                    url = f"http://127.0.0.1:{port}"
                if url:
                    with contextlib.suppress(httpx.HTTPError):
                        if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                            break
                time.sleep(0.5)
            else:
                raise XmrtError(f"the benchmark server did not come up in {STARTUP_TIMEOUT} s")
            yield url, key, description
        finally:
            stop_process_group(proc, timeout=40)
            if scratch is not None:
                drop_database(ensure_postgres(config), scratch[1])
            drop_redis_prefix(config.redis_url, prefix)
