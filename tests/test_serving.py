"""The served API with the project's custom routes and API-key auth, against the real ``langgraph dev``.

One server (module scope) with two users' keys serves every test here; it runs the project's langgraph.json
plus a test-only ``echo`` graph without an LLM.
"""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest
from langgraph_sdk import get_client

from tests.conftest import free_port, make_config
from tests.served import LangGraphServer, langgraph_config_with, server_env

ALICE, BOB = "alice-key-0001", "bob-key-0002"
KEYS = f"{ALICE}:alice,{BOB}:bob"


@pytest.fixture(scope="module")
def served(redis_server, tmp_path_factory):
    """The real server with API keys; yields (server, config)."""
    tmp = tmp_path_factory.mktemp("serving")
    config = make_config(tmp / "data", redis_server.port, XMRT_KEY_PREFIX=f"srv{free_port()}", XMRT_API_KEYS=KEYS)
    lg_config = langgraph_config_with(tmp, {"echo": "./tests/served_graphs.py:graph"})
    env = {**server_env(config), "XMRT_API_KEYS": KEYS}
    server = LangGraphServer(env, tmp / "langgraph-dev.log", config_path=lg_config, jobs=4).start()
    try:
        yield server, config
    except Exception:
        print(server.tail())
        raise
    finally:
        server.stop()


def _get(server, path, key=None, **headers):
    if key:
        headers["x-api-key"] = key
    return httpx.get(server.url + path, headers=headers, timeout=15)


def test_health_is_open_and_cheap(served):
    server, _ = served
    t0 = time.perf_counter()
    res = _get(server, "/health")
    assert res.status_code == 200, res.text
    assert res.json()["status"] == "ok" and res.json()["redis"] is True
    assert time.perf_counter() - t0 < 2


def test_every_other_route_needs_a_valid_key(served):
    server, _ = served
    for path in ("/status", "/dashboard/data", "/threads/search", "/assistants/search", "/store/items/search"):
        method = httpx.post if path.endswith("search") else httpx.get
        body = {"namespace_prefix": ["notes"]} if path.startswith("/store") else {}
        kwargs = {"json": body} if method is httpx.post else {}
        none = method(server.url + path, timeout=15, **kwargs)
        wrong = method(server.url + path, headers={"x-api-key": "not-a-key-at-all"}, timeout=15, **kwargs)
        assert none.status_code == 401, (path, none.status_code, none.text)
        assert wrong.status_code == 401, (path, wrong.status_code, wrong.text)
        assert "API key" in none.text and "invalid API key" in wrong.text
        good = method(server.url + path, headers={"x-api-key": ALICE}, timeout=15, **kwargs)
        assert good.status_code == 200, (path, good.status_code, good.text)
    bearer = httpx.get(server.url + "/status", headers={"Authorization": f"Bearer {BOB}"}, timeout=15)
    assert bearer.status_code == 200
    # In dev, "x-auth-scheme: langsmith" selects Studio's no-op auth unless disable_studio_auth is set: it is.
    studio = httpx.post(server.url + "/threads/search", json={}, headers={"x-auth-scheme": "langsmith"}, timeout=15)
    assert studio.status_code == 401


def test_auth_failures_are_audited(served):
    server, config = served
    from xmrt.redis.audit import tail

    httpx.get(server.url + "/status", headers={"x-api-key": "wrong-key-audited"}, timeout=15)
    entries = [e for e in tail(50, config) if e["action"] == "auth.failure"]
    assert entries, "no auth.failure entry"
    last = entries[-1]
    assert last["outcome"] == "denied" and last["who"] == "anonymous"
    assert last["details"]["path"] == "/status" and last["details"]["reason"] == "invalid API key"


def test_status_has_the_seed_shape_with_live_values(served):
    server, config = served
    res = _get(server, "/status", ALICE)
    assert res.status_code == 200
    body = res.json()
    assert body["timestamp"].endswith("Z")
    eliza = body["eliza_agent"]
    assert {"is_active", "metrics", "redis"} <= set(eliza)
    assert eliza["redis"]["connected"] is True
    stats = eliza["redis"]["stats"]
    assert stats["used_memory"] > 0 and stats["connected_clients"] >= 1 and stats["keyspace_hits"] >= 0
    assert isinstance(eliza["metrics"], dict) and "decision_accuracy" in eliza["metrics"]
    rag = body["raglight"]
    assert {"initialized", "stats"} <= set(rag)
    assert {"total_documents", "embedding_model", "llm_provider"} <= set(rag["stats"])
    assert rag["stats"]["embedding_model"] and rag["stats"]["llm_provider"] == config.llm_provider
    assert body["enhanced_features"]["api_key_auth"] is True
    assert {"registry", "node_latencies"} <= set(body["orchestrator"])
    components = body["components"]
    assert components["redis"]["status"] == "up" and "echo" in components["graphs"]
    assert "ReJSON" in components["redis"]["modules"] or "search" in components["redis"]["modules"]


def test_threads_belong_to_their_creator(served, redis_client):
    server, config = served

    async def scenario():
        alice = get_client(url=server.url, api_key=ALICE)
        bob = get_client(url=server.url, api_key=None, headers={"Authorization": f"Bearer {BOB}"})
        thread = await alice.threads.create(metadata={"topic": "treasury"})
        tid = thread["thread_id"]
        assert thread["metadata"]["owner"] == "alice"
        run = await alice.runs.wait(tid, "echo", input={"text": "hello"})
        state = await alice.threads.get_state(tid)
        history = await alice.threads.get_history(tid)
        seen_by_alice = [t["thread_id"] for t in await alice.threads.search(limit=100)]
        seen_by_bob = [t["thread_id"] for t in await bob.threads.search(limit=100)]
        errors = {}
        for name, call in {
            "get": lambda: bob.threads.get(tid),
            "state": lambda: bob.threads.get_state(tid),
            "history": lambda: bob.threads.get_history(tid),
            "run": lambda: bob.runs.wait(tid, "echo", input={"text": "bob was here"}),
            "update": lambda: bob.threads.update(tid, metadata={"owner": "bob"}),
            "delete": lambda: bob.threads.delete(tid),
        }.items():
            try:
                await call()
                errors[name] = None
            except Exception as exc:  # langgraph_sdk raises httpx.HTTPStatusError
                errors[name] = getattr(getattr(exc, "response", None), "status_code", repr(exc))
        after = await alice.threads.get_state(tid)
        return tid, run, state, history, seen_by_alice, seen_by_bob, errors, after

    tid, run, state, history, seen_a, seen_b, errors, after = asyncio.run(scenario())
    assert run["echo"] == "echo: hello" and state["values"]["runs"] == 1 and history
    assert tid in seen_a and tid not in seen_b
    assert errors == {"get": 404, "state": 404, "history": 404, "run": 404, "update": 404, "delete": 404}, errors
    assert after["values"] == state["values"], "bob changed alice's thread"
    keys = [k.decode() for k in redis_client.scan_iter(match=f"{config.key_prefix}:checkpoint:*", count=1000)]
    assert any(tid in k for k in keys), "the checkpoints are not in Redis"

    from xmrt.redis.audit import tail

    runs = [e for e in tail(100, config) if e["action"] == "run.create" and e["details"]["thread_id"] == tid]
    assert [(e["who"], e["details"]["graph"], e["outcome"]) for e in runs] == [("alice", "echo", "requested")]
    refused = {(e["who"], e["details"]["method"], e["details"]["path"]) for e in tail(200, config)
               if e["action"] == "http.refused"}
    assert ("bob", "POST", f"/threads/{tid}/runs/wait") in refused  # bob's run was refused before it existed


def test_store_items_belong_to_their_creator_and_any_label_round_trips(served):
    server, _ = served
    url = server.url + "/store/items"

    def call(method, key, **kwargs):
        return httpx.request(method, url + kwargs.pop("suffix", ""), headers={"x-api-key": key}, timeout=15,
                             **kwargs)

    put = call("PUT", ALICE, json={"namespace": ["notes"], "key": "plan", "value": {"text": "buy XMR"}})
    assert put.status_code == 204, put.text
    mine = call("GET", ALICE, params={"namespace": "notes", "key": "plan"})
    assert mine.status_code == 200 and mine.json()["value"] == {"text": "buy XMR"}
    assert call("GET", BOB, params={"namespace": "notes", "key": "plan"}).json() is None
    assert call("GET", BOB, params={"namespace": "alice.notes", "key": "plan"}).json() is None
    found_b = call("POST", BOB, suffix="/search", json={"namespace_prefix": ["notes"]}).json()["items"]
    found_a = call("POST", ALICE, suffix="/search", json={"namespace_prefix": ["notes"]}).json()["items"]
    assert found_b == [] and [i["key"] for i in found_a] == ["plan"]
    assert call("DELETE", BOB, json={"namespace": ["notes"], "key": "plan"}).status_code == 204
    assert call("GET", ALICE, params={"namespace": "notes", "key": "plan"}).json() is not None, "bob deleted it"
    for label in ("a@b", "x|y", "no-dash", "st*r", "(p)", "{c}", "x"):  # any label the store API accepts
        put = call("PUT", ALICE, json={"namespace": ["notes", label], "key": "k", "value": {"v": label}})
        assert put.status_code == 204, (label, put.status_code, put.text)
        got = call("GET", ALICE, params={"namespace": f"notes.{label}", "key": "k"})
        assert got.json()["value"] == {"v": label}, label
    bad = call("PUT", ALICE, json={"namespace": ["notes", "a.b"], "key": "k", "value": {"v": 1}})
    assert bad.status_code == 422 and "label" in bad.text.lower()
    listed = httpx.post(server.url + "/store/namespaces", json={}, headers={"x-api-key": BOB}, timeout=15)
    assert listed.status_code == 200 and listed.json()["namespaces"] == [], listed.text


def test_dashboard_shell_is_open_but_its_data_is_not(served):
    server, _ = served
    page = _get(server, "/dashboard")
    assert page.status_code == 200 and "<svg" in page.text and "https://" not in page.text
    assert _get(server, "/dashboard/static/dashboard.js").status_code == 200
    assert _get(server, "/dashboard/data").status_code == 401
    data = _get(server, "/dashboard/data", ALICE)
    assert data.status_code == 200 and data.json()["redis"]["connected"] is True
    assert _get(server, "/dashboard/data?agent=", ALICE).status_code == 200
    assert _get(server, "/dashboard/data?agent=" + "x" * 200, ALICE).status_code == 400


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _browser(tmp_path):
    """Headless Debian Chromium through Selenium; a missing browser fails the test (it is a bootstrap package)."""
    import shutil

    if not (shutil.which("chromium") or os.path.exists(CHROMIUM)) or not os.path.exists(CHROMEDRIVER):
        pytest.fail("Chromium is missing: apt-get install -y chromium chromium-driver (the dashboard test needs it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1400", f"--user-data-dir={tmp_path / 'chrome'}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")),
                            options=options)


def test_dashboard_in_headless_chromium_shows_and_refreshes_live_values(served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from xmrt.eliza import DecisionLedger
    from xmrt.redis.monitoring import PerfRecorder

    server, config = served
    from xmrt.policy import Principal

    ledger = DecisionLedger(config, "eliza", principal=Principal("alice", remote=True, tenant="alice"))
    assert _get(server, f"/threads/{__import__('uuid').uuid4()}", ALICE).status_code == 404  # an audited refusal
    ledger.record([{"id": f"prop-{i}", "decision": "approve" if i % 2 else "reject", "score": 0.3 + i / 20,
                    "rationale": f"rationale number {i}: treasury impact is acceptable"} for i in range(6)])
    accuracies = [0.4, 0.55, 0.5, 0.7, 0.8]
    for acc in accuracies:
        ledger.append_metrics({"kind": "cycle", "decision_accuracy": acc})
    perf = PerfRecorder(config)
    for ms in (12.0, 15.5, 30.0):
        perf.add("node:eliza.decide", ms)
    perf.add("node:rag.retrieve", 42.0)
    perf.flush()

    driver = _browser(tmp_path)
    try:
        driver.get(f"{server.url}/dashboard#key={ALICE}")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "true")
        text = driver.find_element(By.TAG_NAME, "body").text
        assert driver.find_element(By.ID, "redis-state").text == "up"
        assert driver.find_element(By.ID, "redis-memory").text not in ("", "–")
        assert driver.find_element(By.ID, "kb-documents").text == "0"
        assert "rationale number 5: treasury impact is acceptable" in text
        assert "eliza.decide" in text and "rag.retrieve" in text
        assert len(driver.find_elements(By.CSS_SELECTOR, "#chart circle.point")) == len(accuracies)
        assert driver.find_element(By.ID, "accuracy-line").get_attribute("d").startswith("M")
        assert "http.refused" in text  # the audit panel: alice's own entries

        # It refreshes by itself: a new decision shows up without reloading the page.
        ledger.record([{"id": "prop-late", "decision": "defer", "score": 0.5, "rationale": "arrived after load"}])
        wait.until(lambda d: "arrived after load" in d.find_element(By.ID, "decisions").text)
        shot = tmp_path / "dashboard.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        print(f"dashboard screenshot: {shot}")
    finally:
        driver.quit()
