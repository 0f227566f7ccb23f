"""/health, /status and /dashboard/data in process; the audit log; ``xmrt serve`` and ``xmrt audit tail``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from starlette.testclient import TestClient

from tests.conftest import ROOT, create_config, free_port, subprocess_env


@pytest.fixture
def client(app_config):
    from xmrt.server import http

    http._cache.clear()
    with TestClient(http.app) as c:
        yield c


def test_status_and_health_with_redis_up(client, app_config):
    from xmrt.eliza import DecisionLedger

    ledger = DecisionLedger(app_config, "eliza")
    ledger.record([{"id": "p1", "decision": "approve", "score": 0.8, "rationale": "fits the treasury policy"}])
    ledger.append_metrics({"kind": "cycle", "decision_accuracy": 0.5})
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["redis"] is True
    body = client.get("/status").json()
    assert body["eliza_agent"]["redis"]["connected"] is True
    assert body["eliza_agent"]["metrics"]["decisions"] == 1
    assert body["raglight"]["stats"]["total_documents"] == 0
    data = client.get("/dashboard/data").json()
    assert data["decisions"][0]["rationale"] == "fits the treasury policy"
    assert data["history"][0]["decision_accuracy"] == 0.5 and data["agents"] == ["eliza"]


def test_redis_down_status_answers_200_and_health_503_quickly(monkeypatch, tmp_path):
    from xmrt.config import get_config
    from xmrt.server import http

    dead = free_port()  # nothing listens here
    for name in list(os.environ):
        if name.startswith(("REDIS_", "XMRT_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XMRT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XMRT_REDIS_PORT", str(dead))
    monkeypatch.chdir(tmp_path)
    get_config.cache_clear()
    http._cache.clear()
    try:
        with TestClient(http.app) as c:
            t0 = time.perf_counter()
            health = c.get("/health")
            status = c.get("/status")
            data = c.get("/dashboard/data")
            elapsed = time.perf_counter() - t0
    finally:
        get_config.cache_clear()
    assert health.status_code == 503 and health.json()["redis"] is False
    assert status.status_code == 200
    body = status.json()
    assert body["eliza_agent"]["redis"]["connected"] is False and "error" in body["eliza_agent"]["redis"]
    assert body["components"]["redis"]["status"] == "down" and body["eliza_agent"]["is_active"] is False
    assert data.status_code == 200 and data.json()["redis"]["connected"] is False
    assert elapsed < 15, f"took {elapsed:.1f}s"


def test_api_keys_are_parsed_and_validated():
    from xmrt.config import ConfigError

    config = create_config({"XMRT_API_KEYS": " key-aaaa1:alice , key-bbbb2:bob"}, env_file=None)
    assert dict(config.api_keys) == {"key-aaaa1": "alice", "key-bbbb2": "bob"}
    assert "key-aaaa1" not in repr(config)
    assert create_config({}, env_file=None).api_keys == ()
    for bad, words in [("nokey", "KEY:USER"), ("short:alice", "8 characters"), ("key-aaaa1:a", "user"),
                       ("key-aaaa1:al-ice", "user"), ("key-aaaa1:alice,key-aaaa1:bob", "twice")]:
        with pytest.raises(ConfigError, match="XMRT_API_KEYS") as err:
            create_config({"XMRT_API_KEYS": bad}, env_file=None)
        assert words in str(err.value)
    with pytest.raises(ConfigError, match="XMRT_AUDIT_MAX_LEN"):
        create_config({"XMRT_AUDIT_MAX_LEN": "5"}, env_file=None)


def test_key_lookup():
    from xmrt.server.auth import key_user

    config = create_config({"XMRT_API_KEYS": "key-aaaa1:alice"}, env_file=None)
    assert key_user(config, "key-aaaa1") == "alice"
    assert key_user(config, "key-aaaa") is None and key_user(config, "") is None


def test_audit_record_tail_and_trim(config):
    from xmrt.redis import audit

    small = config.with_overrides(audit_max_len=100)
    for i in range(500):
        audit.record("kb.export", who="alice", outcome="ok", config=small, details={"i": i})
    entries = audit.tail(1000, small)
    assert 100 <= len(entries) < 500  # approximate trimming (MAXLEN ~)
    last = entries[-1]
    assert (last["who"], last["action"], last["outcome"], last["details"]) == ("alice", "kb.export", "ok", {"i": 499})
    dead = config.with_overrides(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert audit.record("kb.export", config=dead) is None  # never raises

    async def served():  # the served API's writer: same entry, written on the event loop
        entry_id = await audit.arecord("run.create", who="bob", outcome="requested", config=small,
                                       details={"graph": "rag"})
        return entry_id, await audit.arecord("run.create", config=dead)

    entry_id, dead_id = asyncio.run(served())
    last = audit.tail(1, small)[-1]
    assert last["id"] == entry_id and dead_id is None
    assert (last["who"], last["action"], last["outcome"], last["details"]) == ("bob", "run.create", "requested",
                                                                               {"graph": "rag"})


def test_cli_commands_are_audited_with_their_outcome(app_config):
    from xmrt.errors import UserError
    from xmrt.redis import audit

    ok = argparse.Namespace(_cmd_root="kb", _cmd_kb="export", collection="docs", verbose=0, _handler=None)
    assert audit.run_cli_command(lambda a: 0, ok) == 0
    bad = argparse.Namespace(_cmd_root="eliza", _cmd_eliza="decide", input="x.jsonl", verbose=0)

    def fail(args):
        raise UserError("no valid proposals")

    with pytest.raises(UserError):
        audit.run_cli_command(fail, bad)
    other = argparse.Namespace(_cmd_root="redis", _cmd_redis="status")
    audit.run_cli_command(lambda a: 0, other)
    entries = audit.tail(10, app_config)
    assert [(e["action"], e["outcome"]) for e in entries] == [("kb.export", "ok"), ("eliza.decide", "error")]
    assert entries[0]["details"] == {"collection": "docs"}
    assert "no valid proposals" in entries[1]["details"]["error"]

    out = subprocess.run([sys.executable, "-m", "xmrt.cli", "audit", "tail", "-n", "5", "--json"], cwd=ROOT,
                         env=subprocess_env(app_config), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [x["action"] for x in lines] == ["kb.export", "eliza.decide"]
    text = subprocess.run([sys.executable, "-m", "xmrt.cli", "audit", "tail"], cwd=ROOT,
                          env=subprocess_env(app_config), capture_output=True, text=True, timeout=60)
    assert "eliza.decide" in text.stdout and "error" in text.stdout


def test_serve_helpers():
    from xmrt.cli.commands.serve import choose_host, parse_api_url, serve_command
    from xmrt.errors import UserError

    assert parse_api_url("- \x1b[36mAPI:\x1b[0m http://127.0.0.1:2025\n") == "http://127.0.0.1:2025"
    assert parse_api_url("INFO: something else") is None
    assert choose_host(None, False)[0] == "127.0.0.1" and "127.0.0.1 only" in choose_host(None, False)[1]
    with pytest.raises(UserError, match="XMRT_API_KEYS"):
        choose_host("0.0.0.0", False)
    assert choose_host("0.0.0.0", True)[0] == "0.0.0.0"
    cmd, env = serve_command(port=2024, host="127.0.0.1", jobs=8, env={})
    assert cmd[1] == "dev" and "--no-browser" in cmd and cmd[cmd.index("--n-jobs-per-worker") + 1] == "8"
    assert env["LANGGRAPH_CLI_NO_ANALYTICS"] == "1" and env["LANGSMITH_TRACING"] == "false"
    assert env["LANGGRAPH_NO_VERSION_CHECK"] == "true"


def test_xmrt_serve_refuses_a_taken_port_with_a_clear_error(config, tmp_path):
    """The production server never moves: clients are configured with its port. A taken one is a clear error."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        env = {**subprocess_env(config), "XMRT_API_KEYS": ""}
        proc = subprocess.run([sys.executable, "-m", "xmrt.cli", "serve", "--port", str(port)], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    finally:
        taken.close()
    assert proc.returncode == 2, proc.stdout + proc.stderr  # a usage error, like any bad option
    assert f"port {port} on 127.0.0.1 cannot be used" in proc.stderr and "--port" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_xmrt_serve_dev_prints_the_real_url_when_the_port_is_taken(config, tmp_path):
    """``xmrt serve --dev`` on a taken port: langgraph dev moves; the printed URL is the real one."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    log = tmp_path / "serve.log"
    env = {**subprocess_env(config), "XMRT_API_KEYS": ""}
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "xmrt.cli", "serve", "--dev", "--port", str(port)],
                                cwd=tmp_path, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = None
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("xmrt: serving the graph API (development) on "):
                    url = line.split(" on ", 1)[1].split()[0].rstrip(";")
            if url:
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.5)
        text = log.read_text(errors="replace")
        assert url, text[-3000:]
        assert not url.endswith(f":{port}") and f"port {port} was taken" in text
        assert "binds to 127.0.0.1 only" in text and "Redis OK" in text
        assert httpx.get(url + "/status", timeout=15).json()["eliza_agent"]["redis"]["connected"] is True
    finally:
        taken.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


def test_every_decision_and_outcome_is_audited(config):
    from xmrt.eliza import DecisionLedger, Outcome
    from xmrt.redis import audit

    ledger = DecisionLedger(config, "auditee")
    ledger.record([{"id": "a1", "decision": "approve", "score": 0.9, "rationale": "r"}])
    ledger.set_outcome(Outcome(id="a1", success=False))
    entries = [(e["who"], e["action"], e["details"]) for e in audit.tail(10, config)]
    assert entries == [("agent:auditee", "eliza.decision", {"decisions": {"a1": "approve"}}),
                       ("agent:auditee", "eliza.outcome", {"id": "a1", "success": False})]
