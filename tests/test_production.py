"""The production server (``xmrt serve``) as several hosts: processes on this machine, one Postgres, one Redis.

* A host is SIGKILLed while it executes a multi-step run (the real Eliza cycle in the middle, tests/crash_graphs.py):
  the other host takes the run over from its last checkpoint and finishes it within 30 s, and a client following
  the run's stream through the load balancer (``stream_resumable``) gets the rest of it without a gap or a repeat.
* Every host is SIGKILLed, one is started again: the run finishes.
* The Eliza action that the killed host had already done is not done a second time.

The heartbeat is 5 s here (the ``xmrt serve`` default): a dead host's run is handed over 2-4 heartbeats later.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from langgraph_sdk import get_client

from tests.crash_graphs import ORDER
from tests.served import LoadBalancer, ProductionServer, fresh_database, langgraph_config_with, server_env

pytestmark = pytest.mark.slow

HEARTBEAT = 5.0
TAKEOVER_LIMIT = 30.0
CONTEXT = {"agent_id": "crashtest", "use_llm": False}


class DuplicateAction(AssertionError):
    """An Eliza action was executed twice for the same agent and proposal."""


def crash_input(tag: str, *, gate: bool = False) -> dict:
    proposals = [{"id": f"{tag}-{i}", "title": f"Fund audit {i}", "description": "Audit the payment module",
                  "amount_xmr": 5, "criteria": {"community_support": 0.9, "risk": 0.1},
                  "action": {"type": "record_task", "title": f"audit {tag}-{i}", "details": "crash test"}}
                 for i in range(3)]
    return {"proposals": proposals, "pause": 0.3, "act_pause": 3.0, "gate": gate}


def events(redis_client, config) -> list[tuple[str, str, int]]:
    out = []
    for raw in redis_client.lrange(f"{config.key_prefix}:crashtest:events", 0, -1):
        node, event, pid = raw.decode().rsplit(":", 2)
        out.append((node, event, int(pid)))
    return out


def wait_event(redis_client, config, node: str, event: str, timeout: float = 120, count: int = 1) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [pid for n, e, pid in events(redis_client, config) if (n, e) == (node, event)]
        if len(found) >= count:
            return found[count - 1]
        time.sleep(0.1)
    raise AssertionError(f"no {node}:{event} (#{count}) within {timeout} s; events: {events(redis_client, config)}")


def tasks_by_proposal(redis_client, config) -> dict[str, int]:
    counts: dict[str, int] = {}
    for raw in redis_client.lrange(f"{config.key_prefix}:dao:tasks", 0, -1):
        pid = json.loads(raw)["proposal_id"]
        counts[pid] = counts.get(pid, 0) + 1
    return counts


def assert_no_duplicate_actions(redis_client, config, tag: str) -> None:
    counts = tasks_by_proposal(redis_client, config)
    wanted = {f"{tag}-{i}" for i in range(3)}
    assert wanted <= set(counts), f"actions missing: {counts}"
    twice = {k: v for k, v in counts.items() if v != 1}
    if twice:
        raise DuplicateAction(f"record_task ran more than once per proposal after the takeover: {twice}")


@pytest.fixture
def hosts(config, postgres_server, tmp_path):
    """A factory of production servers (hosts) sharing one fresh database; every host is stopped afterwards."""
    database = fresh_database(postgres_server)
    lg_config = langgraph_config_with(tmp_path, {"crash_steps": "./tests/crash_graphs.py:graph"})
    env = server_env(config)
    started: list[ProductionServer] = []

    def make(name: str) -> ProductionServer:
        server = ProductionServer(env, tmp_path / f"{name}.log", database_uri=database, config_path=lg_config,
                                  heartbeat=HEARTBEAT, jobs=4)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def _run_status(url: str, thread_id: str, run_id: str) -> str:
    async def get() -> str:
        return (await get_client(url=url).runs.get(thread_id, run_id))["status"]

    return asyncio.run(get())


def wait_run(url: str, thread_id: str, run_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    status = "?"
    while time.monotonic() < deadline:
        try:
            status = _run_status(url, thread_id, run_id)
        except Exception as exc:  # a host still starting; keep asking
            status = f"error: {exc}"
        if status in ("success", "error", "interrupted"):
            return status
        time.sleep(0.25)
    return status


def test_a_killed_host_s_run_finishes_on_the_other_from_its_last_checkpoint_and_its_stream_resumes(
        hosts, config, redis_client):
    host_a = hosts("host-a").start()
    lb = LoadBalancer([host_a.url])
    try:
        async def scenario() -> dict:
            client = get_client(url=lb.url)
            thread = await client.threads.create()
            parts: list = []
            kill: dict = {}

            async def follow() -> None:
                async for part in client.runs.stream(thread["thread_id"], "crash_steps",
                                                     input=crash_input("t1", gate=True), context=CONTEXT,
                                                     stream_mode="updates", stream_resumable=True):
                    parts.append(part)

            async def crash() -> None:
                # The run starts on host A (the only host so far) and waits at its gate while host B comes up.
                kill["executor"] = await asyncio.to_thread(wait_event, redis_client, config, "step_1", "start")
                host_b = hosts("host-b")
                await asyncio.to_thread(host_b.start)
                kill["host_b"] = host_b
                lb.backends.append(host_b.url)
                redis_client.set(f"{config.key_prefix}:crashtest:go", 1)
                await asyncio.to_thread(wait_event, redis_client, config, "act", "done")
                kill["parts_before"] = len(parts)
                host_a.kill()
                kill["at"] = time.monotonic()

            await asyncio.gather(follow(), crash())
            kill["finished"] = time.monotonic()
            kill["thread_id"] = thread["thread_id"]
            kill["parts"] = parts
            kill["state"] = await get_client(url=kill["host_b"].url).threads.get_state(thread["thread_id"])
            kill["runs"] = await get_client(url=kill["host_b"].url).runs.list(thread["thread_id"])
            return kill

        result = asyncio.run(asyncio.wait_for(scenario(), 420))
    except Exception:
        print(host_a.tail())
        raise
    finally:
        lb.close()
    host_b = result["host_b"]
    log = events(redis_client, config)
    a_pids, b_pids = {result["executor"]}, host_b.pids()
    print("events:", log, "takeover took", round(result["finished"] - result["at"], 1), "s")

    # The run finished, on host B, within the limit after host A died.
    assert [r["status"] for r in result["runs"]] == ["success"], result["runs"]
    assert result["finished"] - result["at"] < TAKEOVER_LIMIT, result["finished"] - result["at"]
    # From the last checkpoint: the nodes before `act` ran once, on A; `act` ran on A (killed before its
    # checkpoint) and again on B; the nodes after it ran once, on B.
    starts = [(node, pid) for node, event, pid in log if event == "start"]
    assert [n for n, _ in starts if n.startswith("step")] == ["step_1", "step_2", "step_3", "step_4", "step_5"]
    assert [pid for n, pid in starts if n in ("step_1", "step_2", "step_3")] == [result["executor"]] * 3
    assert [pid in b_pids for n, pid in starts if n in ("step_4", "step_5")] == [True, True]
    act_starts = [pid for n, pid in starts if n == "act"]
    assert len(act_starts) == 2 and act_starts[0] in a_pids and act_starts[1] in b_pids, log
    # The state holds every step once.
    assert result["state"]["values"]["steps"] == [n for n in ORDER if n not in
                                                  ("load_context", "assess", "decide", "reflect", "learn")]
    assert len(result["state"]["values"]["decisions"]) == 3
    # The client's stream dropped with host A, reconnected through the load balancer with its last event id and
    # got the rest: every node's update, in order, none twice, up to the end.
    updates = [next(iter(p.data)) for p in result["parts"] if p.event == "updates" and p.data]
    assert updates == ORDER, updates
    ids = [p.id for p in result["parts"] if p.id]
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    assert result["parts_before"] < len(result["parts"]), "nothing arrived after the kill"
    assert_no_duplicate_actions(redis_client, config, "t1")


def test_after_every_host_is_killed_a_restarted_host_finishes_the_run(hosts, config, redis_client):
    host_a, host_b = hosts("host-a").launch(), hosts("host-b").launch()
    host_a.wait(), host_b.wait()

    async def create() -> tuple[str, str]:
        client = get_client(url=host_a.url)
        thread = await client.threads.create()
        run = await client.runs.create(thread["thread_id"], "crash_steps", input=crash_input("t2"), context=CONTEXT)
        return thread["thread_id"], run["run_id"]

    thread_id, run_id = asyncio.run(create())
    executor = wait_event(redis_client, config, "act", "done")
    assert executor in host_a.pids() | host_b.pids()
    host_a.kill()
    host_b.kill()
    killed_at = time.monotonic()
    host_c = hosts("host-c").start()
    ready_at = time.monotonic()
    status = wait_run(host_c.url, thread_id, run_id, timeout=60)
    print("events:", events(redis_client, config), f"ready after {ready_at - killed_at:.1f} s, done after "
          f"{time.monotonic() - killed_at:.1f} s")
    assert status == "success", host_c.tail()
    starts = [(node, pid) for node, event, pid in events(redis_client, config) if event == "start"]
    assert [n for n, _ in starts if n.startswith("step")] == ["step_1", "step_2", "step_3", "step_4", "step_5"]
    c_pids = host_c.pids()
    assert [pid in c_pids for n, pid in starts if n in ("step_4", "step_5")] == [True, True]
    assert_no_duplicate_actions(redis_client, config, "t2")


def _start_replica(directory, port: int, primary_port: int) -> None:
    """A second Redis 8 with the same modules, replicating the primary (what compose.yaml's redis-replica is)."""
    import subprocess

    from xmrt.redis.server import module_paths, server_binary

    directory.mkdir(parents=True, exist_ok=True)
    args = [str(server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--daemonize", "yes", "--pidfile", str(directory / "redis.pid"), "--logfile", str(directory / "redis.log"),
            "--appendonly", "yes", "--replicaof", "127.0.0.1", str(primary_port)]
    for module in module_paths():
        args += ["--loadmodule", str(module)]
    subprocess.run(args, check=True, timeout=30)


def test_after_the_redis_primary_is_lost_a_promoted_replica_serves_the_threads(postgres_server, tmp_path):
    import os
    import signal

    import redis

    from tests.conftest import free_port, make_config
    from xmrt.redis.server import EmbeddedRedis

    primary = EmbeddedRedis(tmp_path / "redis-primary", free_port())
    primary.start()
    replica_port = free_port()
    _start_replica(tmp_path / "redis-replica", replica_port, primary.port)
    replica = redis.Redis(port=replica_port, socket_timeout=10)
    host_a = host_b = None
    try:
        config = make_config(tmp_path / "data", primary.port, XMRT_KEY_PREFIX="failover")
        lg_config = langgraph_config_with(tmp_path, {"echo": "./tests/served_graphs.py:graph"})
        database = fresh_database(postgres_server)
        host_a = ProductionServer(server_env(config), tmp_path / "host-a.log", database_uri=database,
                                  config_path=lg_config).start()

        async def two_turns() -> str:
            client = get_client(url=host_a.url)
            thread = await client.threads.create()
            for text in ("first", "second"):
                await client.runs.wait(thread["thread_id"], "echo", input={"text": text}, durability="sync")
            return thread["thread_id"]

        thread_id = asyncio.run(two_turns())
        assert primary.client(timeout=10).execute_command("WAIT", 1, 10_000) >= 1, "the replica did not catch up"
        host_a.stop()
        os.kill(primary.pid(), signal.SIGKILL)  # the primary is lost, with whatever it had not persisted
        replica.execute_command("REPLICAOF", "NO", "ONE")
        promoted = {**server_env(config), "REDIS_URL": f"redis://127.0.0.1:{replica_port}/0"}
        host_b = ProductionServer(promoted, tmp_path / "host-b.log", database_uri=database,
                                  config_path=lg_config).start()

        async def third_turn() -> tuple[dict, dict, list]:
            client = get_client(url=host_b.url)
            before = await client.threads.get_state(thread_id)
            out = await client.runs.wait(thread_id, "echo", input={"text": "third"})
            history = await client.threads.get_history(thread_id)
            return before, out, history

        before, out, history = asyncio.run(third_turn())
        assert before["values"] == {"text": "second", "echo": "echo: second", "runs": 2}
        assert out["runs"] == 3 and out["echo"] == "echo: third" and len(history) >= 6
        assert replica.exists("failover:audit"), "the audit log did not survive the failover"
    finally:
        for host in (host_a, host_b):
            if host is not None:
                host.stop()
        try:
            replica.shutdown(nosave=True)
        except redis.RedisError:
            pass
        if primary.pid():
            primary.stop()
