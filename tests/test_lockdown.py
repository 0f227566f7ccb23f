"""The served API locked down, probed from outside as an attacker and as a busy user would.

One real server (``langgraph dev`` with the project's langgraph.json, a test-only ``echo`` graph, and a scripted
OpenAI-compatible model so runs are cheap) with three users' keys: alice, bob and bobby.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from langgraph_sdk import get_client

from tests.conftest import ROOT, free_port, make_config
from tests.fake_openai import FakeOpenAI
from tests.served import LangGraphServer, langgraph_config_with, server_env

ALICE, BOB, BOBBY = "alice-key-0001", "bob-key-0002", "bobby-key-003"
KEYS = f"{ALICE}:alice,{BOB}:bob,{BOBBY}:bobby"
PUBLIC = {("GET", "/health"), ("GET", "/ok"), ("GET", "/dashboard"), ("GET", "/dashboard/static/{path}")}


@pytest.fixture(scope="module")
def locked(redis_server, tmp_path_factory):
    """(server, config, fake model, langgraph.json path) with three users' keys."""
    tmp = tmp_path_factory.mktemp("lockdown")
    roots = tmp / "roots"
    (roots / "docs").mkdir(parents=True)
    (roots / "docs" / "treasury.md").write_text("# Treasury\nAny spending above 100 XMR needs a governance vote.\n")
    (tmp / "outside").mkdir()
    (tmp / "outside" / "secret.md").write_text("# Secret\nThe admin password is hunter2.\n")
    extra = {"XMRT_API_KEYS": KEYS, "XMRT_INGEST_ROOTS": str(roots)}
    config = make_config(tmp / "data", redis_server.port, XMRT_KEY_PREFIX=f"lock{free_port()}", **extra)
    lg_config = langgraph_config_with(tmp, {"echo": "./tests/served_graphs.py:graph"})
    with FakeOpenAI("I am a scripted model and I only repeat this sentence.") as fake:
        env = {**server_env(config), **extra, **fake.env()}
        server = LangGraphServer(env, tmp / "server.log", config_path=lg_config, jobs=16).start()
        try:
            yield server, config, fake, lg_config, tmp
        except Exception:
            print(server.tail())
            raise
        finally:
            server.stop()


def _client(server, key):
    return get_client(url=server.url, api_key=key)


def _call(server, method, path, key=None, **kwargs):
    headers = {"x-api-key": key} if key else {}
    return httpx.request(method, server.url + path, headers=headers, timeout=30, **kwargs)


def _route_table(lg_config, env) -> list[dict]:
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "scripts" / "route_table.py"), str(lg_config)],
                         cwd=lg_config.parent, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         timeout=180)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("ROUTES ")), None)
    assert line, out.stdout[-2000:] + out.stderr[-2000:]
    return json.loads(line[len("ROUTES "):])


async def _alices_objects(server) -> dict[str, str]:
    alice = _client(server, ALICE)
    thread = await alice.threads.create()
    tid = thread["thread_id"]
    run = await alice.runs.create(tid, "echo", input={"text": "alice's run"})
    await alice.runs.join(tid, run["run_id"])
    assistant = await alice.assistants.create("echo", name="alice's echo")
    cron = await alice.crons.create_for_thread(tid, "echo", schedule="0 0 1 1 *", input={"text": "yearly"})
    state = await alice.threads.get_state(tid)
    return {"thread_id": tid, "run_id": run["run_id"], "assistant_id": assistant["assistant_id"],
            "cron_id": cron["cron_id"], "checkpoint_id": state["checkpoint"]["checkpoint_id"]}


def _fill(path: str, objects: dict[str, str]) -> str:
    values = {**objects, "graph_id": "echo", "path": "dashboard.js", "namespace": "x",
              "operation_id": str(uuid.uuid4())}
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m.group(1), str(uuid.uuid4())), path)


def test_every_route_of_the_real_table_needs_a_key_and_nobody_reaches_another_users_objects(locked):
    server, config, _, lg_config, _ = locked
    routes = _route_table(lg_config, server.env)
    paths = {r["path"] for r in routes}
    # The table really is the server's: our routes, the API, the meta routes and the dev server's own.
    assert {"/status", "/threads/{thread_id}", "/store/items", "/openapi.json", "/internal/truncate"} <= paths
    objects = asyncio.run(_alices_objects(server))
    unauthenticated, crossed, dev = [], [], []
    for route in routes:
        for method in route["methods"]:
            if method == "WEBSOCKET":
                continue
            path = _fill(route["path"], objects)
            body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
            public = (method, route["path"]) in PUBLIC
            none = _call(server, method, path, **body)
            if public:
                assert none.status_code == 200, (method, path, none.status_code)
                continue
            if none.status_code != 401:
                unauthenticated.append((method, path, none.status_code))
            if route["path"].startswith(("/internal", "/deploy")):
                refused = _call(server, method, path, ALICE, **body)
                if refused.status_code != 404:
                    dev.append((method, path, refused.status_code))
                continue
            if any(f"{{{name}}}" in route["path"] for name in ("thread_id", "run_id", "assistant_id", "cron_id")):
                as_bob = _call(server, method, path, BOB, **body)
                if 200 <= as_bob.status_code < 300:
                    crossed.append((method, path, as_bob.status_code, as_bob.text[:120]))
    assert not unauthenticated, unauthenticated
    assert not crossed, crossed
    assert not dev, dev
    # Websockets too: the event stream of alice's thread, without a key, is refused at the handshake.
    from websockets.sync.client import connect

    ws_url = server.url.replace("http://", "ws://") + f"/threads/{objects['thread_id']}/stream/events"
    with pytest.raises(Exception):  # noqa: B017 - the handshake is refused (InvalidStatus) before any frame
        with connect(ws_url, open_timeout=10):
            pass
    # Nothing was wiped: alice's thread, run and assistant are all still hers.
    alice = _client(server, ALICE)

    async def still_there():
        return (await alice.threads.get(objects["thread_id"]),
                await alice.assistants.get(objects["assistant_id"]))

    thread, assistant = asyncio.run(still_there())
    assert thread["metadata"]["owner"] == "alice" and assistant["name"] == "alice's echo"


def test_development_routes_are_refused_and_every_refusal_is_audited(locked):
    server, config, *_ = locked
    from xmrt.redis.audit import tail

    assert _call(server, "POST", "/internal/truncate").status_code == 401
    assert _call(server, "POST", "/internal/truncate", BOB).status_code == 404
    assert _call(server, "GET", f"/internal/debug/thread/{uuid.uuid4()}", BOB).status_code == 404
    assert _call(server, "POST", "/deploy", BOB, json={}).status_code == 404
    missing = f"/threads/{uuid.uuid4()}"
    assert _call(server, "GET", missing, BOB).status_code == 404
    entries = tail(200, config)
    refused = {(e["who"], e["details"].get("method"), e["details"].get("path"), e["details"].get("status"))
               for e in entries if e["action"] in ("http.refused", "auth.failure")}
    assert ("anonymous", "POST", "/internal/truncate", 401) in refused
    assert ("bob", "POST", "/internal/truncate", 404) in refused
    assert ("bob", "POST", "/deploy", 404) in refused
    assert ("bob", "GET", missing, 404) in refused
    for path in ("/openapi.json", "/docs", "/metrics", "/info", "/"):
        assert _call(server, "GET", path).status_code == 401, path
        assert _call(server, "GET", path, ALICE).status_code == 200, path


def test_memories_belong_to_the_user_not_to_the_agent_id(locked):
    server, *_ = locked

    async def scenario():
        alice, bob = _client(server, ALICE), _client(server, BOB)
        ctx = {"agent_id": "shared_agent"}
        t1 = await alice.threads.create()
        secret = "Remember: the vault code is 4242 and the treasury holds 1200 XMR."
        await alice.runs.wait(t1["thread_id"], "memory_agent", context=ctx,
                              input={"messages": [{"role": "user", "content": secret}]})
        t2 = await bob.threads.create()
        bob_out = await bob.runs.wait(t2["thread_id"], "memory_agent", context=ctx, input={
            "messages": [{"role": "user", "content": "What is the vault code of the treasury?"}]})
        t3 = await alice.threads.create()
        alice_out = await alice.runs.wait(t3["thread_id"], "memory_agent", context=ctx, input={
            "messages": [{"role": "user", "content": "What is the vault code of the treasury?"}]})
        bob_store = await bob.store.search_items(["shared_agent"], limit=50)
        bob_all = await bob.store.search_items([], limit=100)
        alice_mem = await alice.store.search_items(["memories"], limit=50)
        return bob_out, alice_out, bob_store, bob_all, alice_mem

    bob_out, alice_out, bob_store, bob_all, alice_mem = asyncio.run(scenario())
    assert "4242" not in json.dumps(bob_out["recalled"]), bob_out["recalled"]
    assert "4242" not in json.dumps(bob_all), "bob's store view holds alice's memory"
    assert any("4242" in m["text"] for m in alice_out["recalled"]), alice_out["recalled"]
    # Alice's graph memories are hers in the store API too, under her own namespace.
    assert any("4242" in json.dumps(i["value"]) for i in alice_mem["items"])
    assert bob_store["items"] == []


def test_agents_belong_to_the_user(locked):
    server, config, *_ = locked
    proposal = {"id": "alice-p1", "title": "Fund a node operator", "description": "Run two nodes",
                "amount_xmr": 10, "criteria": {"community_support": 0.9, "alignment": 0.9, "technical_risk": 0.1}}

    async def scenario():
        alice, bob = _client(server, ALICE), _client(server, BOB)
        decided = await alice.runs.wait(None, "eliza", input={"proposals": [proposal]},
                                        context={"agent_id": "alice_agent", "use_llm": False})
        stolen = await bob.runs.wait(None, "self_improve", input={"outcomes": [{"id": "alice-p1", "success": False}]},
                                     context={"agent_id": "alice_agent", "prompt_optimizer": "off"})
        return decided, stolen

    decided, stolen = asyncio.run(scenario())
    assert decided["decisions"][0]["id"] == "alice-p1"
    assert stolen["recorded"] == [] and "no decision" in stolen["errors"][0]["error"]
    bob_view = _call(server, "GET", "/dashboard/data?agent=alice_agent", BOB).json()
    alice_view = _call(server, "GET", "/dashboard/data?agent=alice_agent", ALICE).json()
    assert bob_view["decisions"] == [] and "alice_agent" not in bob_view["agents"]
    assert [d["id"] for d in alice_view["decisions"]] == ["alice-p1"] and alice_view["decisions"][0]["outcome"] is None
    assert "alice_agent" in alice_view["agents"]
    assert all(e["who"] == "alice" for e in alice_view["audit"]) and alice_view["audit"]
    assert all(e["who"] == "bob" for e in bob_view["audit"])
    status = _call(server, "GET", "/status", BOB).json()["eliza_agent"]
    assert {"is_active", "redis", "raglight", "decision_accuracy", "learning_rate"} <= set(status)
    assert {"connected", "stats"} <= set(status["redis"]) and {"initialized", "stats"} <= set(status["raglight"])


def test_store_namespaces_are_exact_per_user(locked):
    server, *_ = locked
    for key, who in ((BOB, "bob"), (BOBBY, "bobby")):
        res = _call(server, "PUT", "/store/items", key,
                    json={"namespace": ["notes"], "key": "k", "value": {"who": who}})
        assert res.status_code == 204, res.text
    for key, who in ((BOB, "bob"), (BOBBY, "bobby")):
        items = _call(server, "POST", "/store/items/search", key, json={"namespace_prefix": [], "limit": 100}).json()
        assert {i["value"].get("who") for i in items["items"]} <= {who, None}, items
        assert all(i["namespace"][0] == who for i in items["items"])
        spaces = _call(server, "POST", "/store/namespaces", key, json={}).json()["namespaces"]
        assert spaces and all(ns[0] == who for ns in spaces), spaces
    odd = ["lab", "Ünï", "|", "a", "@x-y*(z){w}"]
    assert _call(server, "PUT", "/store/items", BOB, json={"namespace": odd, "key": "k", "value": {"v": 1}}
                 ).status_code == 204
    got = _call(server, "GET", "/store/items", BOB, params={"namespace": ".".join(odd), "key": "k"}).json()
    assert got["value"] == {"v": 1} and got["namespace"] == ["bob", *odd]


def test_ingestion_obeys_one_policy_wherever_it_starts(locked):
    server, config, _, _, tmp = locked
    outside = tmp / "outside"
    inside = config.ingest_roots[0] / "docs"

    def run_wait(graph, inp, ctx=None, key=BOB, assistant=None):
        body = {"assistant_id": assistant or graph, "input": inp, **({"context": ctx} if ctx else {})}
        return _call(server, "POST", "/runs/wait", key, json=body)

    for source in (str(outside), f"file://{outside}", "../outside", f"{inside}/../../outside",
                   "ext::sh -c touch% /tmp/pwned", "--upload-pack=touch /tmp/pwned"):
        res = run_wait("ingest", {"source": source}, {"collection": "lockdown", "progress": False})
        assert res.status_code == 400, (source, res.status_code, res.text)
    created = _call(server, "POST", "/assistants", BOB, json={"graph_id": "ingest", "name": "bob's ingest"})
    assert created.status_code == 200, created.text
    res = run_wait("ingest", {"source": str(outside)}, {"collection": "lockdown", "progress": False},
                   assistant=created.json()["assistant_id"])
    assert res.status_code == 400 and "allowed roots" in res.text
    res = run_wait("orchestrator", {"requests": [{"type": "ingest", "source": f"file://{outside}"}]})
    assert res.status_code == 400 and "allowed roots" in res.text
    proposal = {"id": "repo-1", "title": "Analyze our repository", "criteria": {"community_support": 1.0,
                "alignment": 1.0, "technical_risk": 0.0}, "action": {"type": "analyze_repository",
                                                                      "url": str(outside), "collection": "lockdown"}}
    out = run_wait("eliza", {"proposals": [proposal]}, {"agent_id": "bob_agent", "use_llm": False})
    assert out.status_code == 200, out.text
    body = out.json()
    assert body["decisions"][0]["decision"] == "approve"
    assert body["actions"][0]["status"] == "error" and "allowed roots" in body["actions"][0]["result"]
    ok = run_wait("ingest", {"source": str(inside)}, {"collection": "lockdown", "progress": False})
    assert ok.status_code == 200 and ok.json()["summary"]["added"] == 1, ok.text
    answer = run_wait("rag", {"messages": [{"role": "user", "content": "What is the admin password?"}]},
                      {"collection": "lockdown"})
    assert "hunter2" not in answer.text


@pytest.mark.parametrize("case", [
    ("PUT", "/store/items", {"namespace": ["notes"], "key": "", "value": {"a": 1}}, "key"),
    ("PUT", "/store/items", {"namespace": ["notes"], "key": "k", "value": {"a": 1}, "ttl": 1e18}, "ttl"),
    ("PUT", "/store/items", {"namespace": ["no.dots"], "key": "k", "value": {"a": 1}}, "namespace"),
    ("POST", "/runs/wait", {"assistant_id": "eliza", "input": {"proposals": None}}, "input.proposals"),
    ("POST", "/runs/wait", {"assistant_id": "eliza", "input": {"proposals": []},
                            "context": {"knowledge_k": "many"}}, "context.knowledge_k"),
    ("POST", "/runs/wait", {"assistant_id": "eliza", "input": {"proposals": []},
                            "context": {"no_such_setting": 1}}, "context.no_such_setting"),
    ("POST", "/runs/wait", {"assistant_id": "eliza", "input": {"proposals": []},
                            "config": {"configurable": {"defer_margin": 3}}}, "config.configurable.defer_margin"),
    ("POST", "/runs/wait", {"assistant_id": "rag", "input": {"messages": []},
                            "context": {"config": {"data_dir": "/"}}}, "context.config"),
    ("POST", "/runs/wait", {"assistant_id": "rat", "input": {"question": 42}}, "input.question"),
    ("POST", "/assistants", {"graph_id": "eliza", "context": {"use_llm": "yes"}}, "context.use_llm"),
])
def test_bad_input_gets_a_4xx_naming_the_field_and_nothing_is_stored(locked, case):
    server, *_ = locked
    method, path, body, field = case
    before = _call(server, "POST", "/store/items/search", ALICE, json={"namespace_prefix": [], "limit": 1000}).json()
    res = _call(server, method, path, ALICE, json=body)
    assert 400 <= res.status_code < 500, (res.status_code, res.text)
    assert field.lower() in res.text.lower(), res.text
    after = _call(server, "POST", "/store/items/search", ALICE, json={"namespace_prefix": [], "limit": 1000}).json()
    assert after == before


@pytest.mark.slow
def test_sixteen_concurrent_runs_of_each_real_graph_finish_without_errors(locked):
    server, config, fake, *_ = locked
    ingested = _call(server, "POST", "/runs/wait", ALICE, json={
        "assistant_id": "ingest", "input": {"source": str(config.ingest_roots[0] / "docs")},
        "context": {"collection": "concurrent", "progress": False}})
    assert ingested.status_code == 200, ingested.text

    async def one(client, graph, i):
        thread = await client.threads.create()
        if graph == "eliza":
            inp = {"proposals": [{"id": f"c-{i}", "title": f"Proposal {i}", "criteria": {"alignment": i / 16}}]}
            ctx = {"agent_id": f"conc{i % 4}", "use_llm": False, "collection": "concurrent"}
        elif graph == "self_improve":
            inp, ctx = {"outcomes": [{"id": f"c-{i}", "success": i % 2 == 0}]}, {"agent_id": f"conc{i % 4}",
                                                                                  "prompt_optimizer": "off"}
        elif graph == "memory_agent":
            inp, ctx = {"messages": [{"role": "user", "content": f"Note {i}: node operators"}]}, {"agent_id": "conc"}
        else:
            inp = {"messages": [{"role": "user", "content": "Who approves spending?"}]}
            ctx = {"collection": "concurrent"}
        out = await client.runs.wait(thread["thread_id"], graph, input=inp, context=ctx)
        return graph, out

    async def scenario():
        client = _client(server, ALICE)
        health = []

        async def probe():
            # A stalled server never answers; 10 s leaves room for a 2-core machine running other work too.
            async with httpx.AsyncClient(timeout=10) as http:
                for _ in range(30):
                    try:
                        health.append((await http.get(server.url + "/health")).status_code)
                    except httpx.HTTPError as exc:
                        health.append(repr(exc))
                    await asyncio.sleep(1)

        prober = asyncio.create_task(probe())
        started = time.perf_counter()
        eliza = await asyncio.gather(*(one(client, "eliza", i) for i in range(16)), return_exceptions=True)
        rest = await asyncio.wait_for(asyncio.gather(
            *(one(client, g, i) for g in ("memory_agent", "self_improve", "rag") for i in range(16)),
            return_exceptions=True), timeout=300)
        elapsed = time.perf_counter() - started
        prober.cancel()
        return [*eliza, *rest], health, elapsed

    results, health, elapsed = asyncio.run(scenario())
    errors = [r for r in results if isinstance(r, BaseException) or "__error__" in (r[1] or {})]
    assert not errors, errors[:3]
    assert len(results) == 64
    assert health and all(h == 200 for h in health), f"/health answers: {health}"
    print(f"64 runs in {elapsed:.1f}s")


@pytest.mark.slow
def test_a_server_killed_mid_run_starts_again_and_serves(redis_server, tmp_path):
    """SIGKILL while runs are in flight; the restarted server answers /health and runs new work, and the
    interrupted runs it restores do not hang it."""
    import os
    import signal

    config = make_config(tmp_path / "data", redis_server.port, XMRT_KEY_PREFIX=f"kill{free_port()}",
                         XMRT_API_KEYS=KEYS)
    lg_config = langgraph_config_with(tmp_path, {"echo": "./tests/served_graphs.py:graph"})
    with FakeOpenAI("Slow scripted answer.", delay=4.0) as fake:
        env = {**server_env(config), "XMRT_API_KEYS": KEYS, **fake.env()}
        server = LangGraphServer(env, tmp_path / "first.log", config_path=lg_config, jobs=8).start()
        port = server.port

        async def start_runs():
            client = _client(server, ALICE)
            runs = []
            for i in range(6):
                thread = await client.threads.create()
                runs.append(await client.runs.create(thread["thread_id"], "memory_agent", context={"agent_id": "k"},
                                                     input={"messages": [{"role": "user", "content": f"hi {i}"}]}))
            for _ in range(40):
                statuses = [(await client.runs.get(r["thread_id"], r["run_id"]))["status"] for r in runs]
                if "running" in statuses:
                    return runs
                await asyncio.sleep(0.25)
            return runs

        try:
            runs = asyncio.run(start_runs())
            time.sleep(1.0)  # let the runtime persist its state the way it does while running
        finally:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(10)
        restarted = LangGraphServer(env, tmp_path / "second.log", port=port, config_path=lg_config, jobs=8)
        restarted.start(timeout=120)
        try:
            assert _call(restarted, "GET", "/health").status_code == 200

            async def after():
                client = _client(restarted, ALICE)
                thread = await client.threads.create()
                fresh = await asyncio.wait_for(client.runs.wait(thread["thread_id"], "echo",
                                                                input={"text": "after the crash"}), 60)
                deadline = time.time() + 120
                statuses = []
                while time.time() < deadline:
                    statuses = []
                    for r in runs:
                        try:
                            statuses.append((await client.runs.get(r["thread_id"], r["run_id"]))["status"])
                        except Exception as exc:  # noqa: BLE001 - a run the runtime did not keep
                            statuses.append(type(exc).__name__)
                    if not {"pending", "running"} & set(statuses):
                        break
                    await asyncio.sleep(1)
                return fresh, statuses

            fresh, statuses = asyncio.run(after())
        except Exception:
            print(restarted.tail())
            raise
        finally:
            restarted.stop()
    assert fresh["echo"] == "echo: after the crash"
    assert not {"pending", "running"} & set(statuses), statuses
