import asyncio
import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, free_port, make_config
from xmrt.redis.server import EmbeddedRedis, RedisSetupError, connect, server_binary

XMRT = [sys.executable, "-m", "xmrt.cli"]


def run_cli(*args, env_extra=None, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "XMRT_"))}
    env.update(env_extra or {})
    return subprocess.run([*XMRT, *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture
def plain_redis(tmp_path):
    """A Redis 8 server started WITHOUT the RedisJSON / RediSearch modules."""
    port = free_port()
    proc = subprocess.Popen(
        [str(server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    server = EmbeddedRedis(tmp_path, port)
    for _ in range(100):
        if server.is_running():
            break
        time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(10)


def test_embedded_start_is_idempotent_and_data_survives_a_restart(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis", free_port())
    try:
        assert server.start() is True
        assert server.start() is False
        assert server.pid_file.exists()
        status = server.status()
        assert {"ReJSON", "search"} <= set(status["modules"])
        assert status["version"].startswith("8.") and status["aof_enabled"]
        server.client().set("survivor", "yes")
        assert server.stop() is True
        assert not server.is_running()
        server.start()
        assert server.client().get("survivor") == b"yes"
    finally:
        server.stop()


def test_a_data_directory_in_use_on_another_port_is_refused_and_never_stopped_in_its_name(tmp_path):
    """One data directory, one embedded Redis: a second port neither starts on it nor stops (kills) the first."""
    first = EmbeddedRedis(tmp_path / "redis", free_port())
    second = EmbeddedRedis(tmp_path / "redis", free_port())
    try:
        first.start()
        first.client().set("kept", "yes")
        with pytest.raises(RedisSetupError, match=r"in use by another embedded Redis .*XMRT_DATA_DIR"):
            second.start()
        assert second.stop() is False  # nothing runs on its port, and the pid file is the first one's
        assert first.is_running() and first.client().get("kept") == b"yes"
    finally:
        first.stop()
    assert not first.is_running()


def test_cli_start_status_stop(tmp_path):
    port = str(free_port())
    env = {"XMRT_DATA_DIR": str(tmp_path), "XMRT_REDIS_PORT": port}
    try:
        first = run_cli("redis", "start", env_extra=env)
        assert first.returncode == 0, first.stderr
        assert "started" in first.stdout
        again = run_cli("redis", "start", env_extra=env)
        assert again.returncode == 0 and "already running" in again.stdout
        status = run_cli("redis", "status", env_extra=env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "ReJSON" in status.stdout and "search" in status.stdout and "memory" in status.stdout
    finally:
        stop = run_cli("redis", "stop", env_extra=env)
    assert stop.returncode == 0 and "stopped" in stop.stdout


def test_external_redis_is_used_and_nothing_is_started(redis_server, tmp_path):
    env = {"XMRT_DATA_DIR": str(tmp_path), "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0"}
    out = run_cli("redis", "start", env_extra=env)
    assert out.returncode == 0, out.stderr
    assert "nothing to start" in out.stdout
    assert not (tmp_path / "redis").exists()


def test_redis_without_modules_fails_with_one_clear_line(plain_redis, tmp_path):
    config = make_config(tmp_path, 1, REDIS_URL=f"redis://127.0.0.1:{plain_redis}/0")
    with pytest.raises(RedisSetupError) as err:
        connect(config)
    message = str(err.value)
    assert "RedisJSON" in message and "RediSearch" in message and "Redis 8" in message
    assert "\n" not in message
    # The same through the CLI and the persistence factory: one line on stderr, no traceback.
    out = run_cli("redis", "start", env_extra={"XMRT_DATA_DIR": str(tmp_path), "REDIS_URL": config.redis_url})
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr and "RediSearch" in out.stderr
    from xmrt.redis.persistence import make_store

    with pytest.raises(RedisSetupError):
        make_store(config)


@pytest.mark.parametrize("command", ["start", "stop", "status"])
def test_an_out_of_range_port_is_refused_naming_the_option(command, tmp_path):
    for env in ({"XMRT_DATA_DIR": str(tmp_path)}, {"XMRT_DATA_DIR": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0"}):
        out = run_cli("redis", command, "--port", "70000", env_extra=env)
        assert out.returncode == 2 and "argument --port: 70000 is out of range (1..65535)" in out.stderr, out.stderr
        assert not (tmp_path / "redis").exists()


def test_the_port_option_overrides_the_port_variable_for_one_command(tmp_path):
    port = free_port()
    env = {"XMRT_DATA_DIR": str(tmp_path), "XMRT_REDIS_PORT": str(free_port())}
    out = run_cli("redis", "status", "--port", str(port), "--json", env_extra=env)
    assert out.returncode == 1 and json.loads(out.stdout)["url"] == f"redis://127.0.0.1:{port}/0", out.stdout


def test_unreachable_redis_fails_clearly(tmp_path):
    config = make_config(tmp_path, free_port())
    with pytest.raises(RedisSetupError, match="Cannot reach Redis .*xmrt redis start"):
        connect(config, timeout=0.5)
    external = make_config(tmp_path, 1, REDIS_HOST="127.0.0.1", REDIS_PORT=str(free_port()))
    with pytest.raises(RedisSetupError, match="REDIS_URL/REDIS_HOST"):
        connect(external, timeout=0.5)


def test_every_redis_client_is_built_by_the_one_factory():
    """No module outside ``xmrt/redis/clients.py`` constructs a Redis client or connection pool."""
    constructor = re.compile(r"\.from_url\(|\bRedis\(|RedisCluster\(|ConnectionPool\(")
    offenders = [
        f"{file.relative_to(ROOT)}:{n}: {line.strip()}"
        for folder in ("xmrt", "graphs", "nodes", "tools")
        for file in sorted((ROOT / folder).rglob("*.py"))
        if file.relative_to(ROOT).as_posix() != "xmrt/redis/clients.py"
        for n, line in enumerate(file.read_text().splitlines(), 1)
        if constructor.search(line)
    ]
    assert offenders == []


def test_the_two_policies_and_their_shared_clients(config):
    from xmrt.redis.clients import async_redis_client, redis_client

    def policy(client):
        kw = client.connection_pool.connection_kwargs
        return kw["socket_connect_timeout"], kw["socket_timeout"], client.get_retry()._retries

    fast, default = redis_client(config, fail_fast=True), redis_client(config)
    assert fast is redis_client(config, fail_fast=True) and default is redis_client(config) and fast is not default
    assert policy(fast) == (1.0, 2.0, 0) and policy(default) == (5.0, 30.0, 6)
    assert fast.ping() and default.ping()

    async def on_one_loop():
        afast, adefault = async_redis_client(config, fail_fast=True), async_redis_client(config)
        assert afast is async_redis_client(config, fail_fast=True) and afast is not adefault
        assert await afast.ping() and await adefault.ping()
        policies = policy(afast), policy(adefault)
        await afast.aclose()
        await adefault.aclose()
        return policies

    assert asyncio.run(on_one_loop()) == ((1.0, 2.0, 0), (5.0, 30.0, 6))
    # A closed loop's client is dropped when the next loop asks (its connections would keep the loop alive).
    from xmrt.redis.clients import _async

    async def ping():
        return await async_redis_client(config, fail_fast=True).ping()

    assert asyncio.run(ping()) and asyncio.run(ping())
    assert len(_async[(config.redis_url, True)]) == 1
    probe = connect(config, timeout=0.5)  # the probe: a client of its own, failing fast with its own timeout
    assert policy(probe) == (0.5, 0.5, 0) and probe is not fast
    probe.close()


def test_services_built_without_a_client_use_the_shared_ones(config):
    """Nothing connects per construction: without a client, each service takes the process's shared one."""
    from xmrt.eliza import DecisionLedger
    from xmrt.eliza.runner import SystemRunner
    from xmrt.redis.clients import redis_client
    from xmrt.redis.coordination import AgentLock
    from xmrt.redis.monitoring import PerfRecorder
    from xmrt.redis.registry import Registry

    shared = redis_client(config)
    runner = SystemRunner(config, "shared", lambda proposals, cycle: {})
    assert DecisionLedger(config, "shared").r is shared and AgentLock(config, "shared").r is shared
    assert Registry(config).r is shared and runner.r is runner.lock.r is runner.ledger.r is shared
    assert PerfRecorder(config).client is redis_client(config, fail_fast=True)  # a dead Redis drops samples
