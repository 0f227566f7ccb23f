"""Everything the served app promises, in production mode: ``xmrt serve`` with 2 worker processes on Postgres + Redis.

Every test of tests/test_serving.py (health, keys on every other route, audited auth failures, the seed's /status
shape, thread and store ownership, the dashboard in a real browser) runs here again, unchanged, against the
production server: this module's ``served`` fixture replaces the development server's. The tests below add what
only matters here or was only checked by ``xmrt bench api``: the body limit, the ingest policy, the audit of runs,
and one thread's runs and state served by two processes.
"""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest
from langgraph_sdk import get_client

from tests import test_serving
from tests.conftest import free_port, make_config
from tests.served import ProductionServer, fresh_database, langgraph_config_with, server_env
from tests.test_serving import ALICE, BOB, KEYS

# The development server's tests, collected again in this module: they get the production `served` below.
globals().update({name: getattr(test_serving, name) for name in dir(test_serving) if name.startswith("test_")})


@pytest.fixture(scope="module")
def served(redis_server, postgres_server, tmp_path_factory):
    """The production server with API keys and two worker processes; yields (server, config)."""
    tmp = tmp_path_factory.mktemp("production-app")
    config = make_config(tmp / "data", redis_server.port, XMRT_KEY_PREFIX=f"prd{free_port()}", XMRT_API_KEYS=KEYS)
    lg_config = langgraph_config_with(tmp, {"echo": "./tests/served_graphs.py:graph"})
    env = {**server_env(config), "XMRT_API_KEYS": KEYS}
    server = ProductionServer(env, tmp / "xmrt-serve.log", database_uri=fresh_database(postgres_server),
                              config_path=lg_config, workers=2, jobs=4).start()
    try:
        yield server, config
    except Exception:
        print(server.tail())
        raise
    finally:
        server.stop()


def test_it_is_the_production_runtime_with_two_processes(served):
    server, _ = served
    log = server.log_path.read_text(errors="replace")
    assert "langgraph-runtime-pg on Postgres + Redis" in log and "with 2 worker processes" in log
    assert log.count("Application startup complete.") == 2
    assert "Using langgraph_runtime_pg" in log or "Starting PG runtime" in log
    assert "in-memory" not in log.split("xmrt: serving", 1)[1]


def test_bodies_over_one_mebibyte_are_refused_before_anything_is_stored(served):
    server, _ = served
    headers = {"x-api-key": ALICE}
    thread = httpx.post(server.url + "/threads", json={}, headers=headers, timeout=30).json()["thread_id"]
    big = {"assistant_id": "echo", "input": {"text": "x" * (1024 * 1024 + 10)}}
    res = httpx.post(f"{server.url}/threads/{thread}/runs/wait", json=big, headers=headers, timeout=60)
    assert res.status_code == 413 and "larger than 1024 KiB" in res.text
    state = httpx.get(f"{server.url}/threads/{thread}/state", headers=headers, timeout=30).json()
    assert not state.get("values")


def test_an_api_ingest_outside_the_allowed_roots_is_refused_and_audited(served):
    server, config = served
    headers = {"x-api-key": BOB}
    thread = httpx.post(server.url + "/threads", json={}, headers=headers, timeout=30).json()["thread_id"]
    res = httpx.post(f"{server.url}/threads/{thread}/runs/wait", headers=headers, timeout=60,
                     json={"assistant_id": "ingest", "input": {"source": "../../../../etc"}})
    assert res.status_code == 400 and "outside the allowed roots" in res.text, res.text
    from xmrt.redis.audit import tail

    denied = [e for e in tail(100, config) if e["action"] == "kb.ingest" and e["outcome"] == "denied"]
    assert denied and denied[-1]["who"] == "bob"


def test_one_thread_is_served_by_both_processes_and_its_runs_are_audited(served):
    server, config = served

    async def scenario():
        alice = get_client(url=server.url, api_key=ALICE)
        thread = await alice.threads.create()
        tid = thread["thread_id"]
        outs = [await alice.runs.wait(tid, "echo", input={"text": f"turn {i}"}) for i in range(6)]
        states = [await alice.threads.get_state(tid) for _ in range(6)]
        return tid, outs, states

    tid, outs, states = asyncio.run(scenario())
    assert [o["runs"] for o in outs] == [1, 2, 3, 4, 5, 6]
    assert all(s["values"]["runs"] == 6 and s["values"]["echo"] == "echo: turn 5" for s in states)
    from xmrt.redis.audit import tail

    runs = [e for e in tail(200, config) if e["action"] == "run.create" and e["details"]["thread_id"] == tid]
    assert [(e["who"], e["details"]["graph"]) for e in runs] == [("alice", "echo")] * 6
    # Both processes answered: each worker logs the requests it served with its own pid.
    log = server.log_path.read_text(errors="replace")
    pids = {line.split("Started server process [", 1)[1].split("]", 1)[0]
            for line in log.splitlines() if "Started server process [" in line}
    assert len(pids) == 2 and all(int(p) != os.getpid() for p in pids)


def test_the_state_of_an_unknown_thread_is_404_as_in_development(served):
    server, _ = served
    headers = {"x-api-key": ALICE}
    ghost = "00000000-0000-4000-8000-000000000000"
    for method, path in (("GET", f"/threads/{ghost}/state"), ("GET", f"/threads/{ghost}/history"),
                         ("POST", f"/threads/{ghost}/state/checkpoint")):
        res = httpx.request(method, server.url + path, headers=headers, timeout=30,
                            **({"json": {"checkpoint": {}}} if method == "POST" else {}))
        assert res.status_code == 404, (path, res.status_code, res.text)
