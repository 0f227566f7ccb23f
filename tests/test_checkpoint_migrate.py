"""Threads written by the previous, library-compatible saver (tests/fixtures/legacy_checkpoints.json,
made by tests/scripts/make_legacy_checkpoints.py with FastRedisSaver @ 6fa1e70) are carried over by
``xmrt migrate checkpoints`` and read back, and resumed, exactly as that saver read them."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from tests.checkpoint_graphs import (
    assert_consistent,
    branching_graph,
    chat_graph,
    interrupt_graph,
    linear_graph,
    parent_with_subgraph,
)
from xmrt.redis.checkpoint import make_checkpointer

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "legacy_checkpoints.json").read_text())
PREFIX = FIXTURE["prefix"]  # "legacy": the fixture's keys and pointers name it


def _load_fixture(client) -> None:
    for index in client.execute_command("FT._LIST"):
        if index.decode().startswith(f"{PREFIX}:"):
            client.execute_command("FT.DROPINDEX", index)
    stale = [*client.scan_iter(match=f"{PREFIX}:*"), *client.scan_iter(match="write_keys_zset:legacy-*")]
    if stale:
        client.delete(*stale)
    for entry in FIXTURE["keys"]:
        if entry["type"] == "ReJSON-RL":
            client.execute_command("JSON.SET", entry["key"], "$", json.dumps(entry["json"]))
        elif entry["type"] == "string":
            client.set(entry["key"], entry["value"]["text"])
        else:
            client.zadd(entry["key"], {member: score for member, score in entry["members"]})
    # the previous saver's setup() created its RediSearch indexes, as a real deployment has them
    from langgraph.checkpoint.redis import RedisSaver

    RedisSaver(redis_client=client, checkpoint_prefix=f"{PREFIX}:checkpoint",
               checkpoint_write_prefix=f"{PREFIX}:checkpoint_write").setup()
    for _ in range(100):  # the index is built in the background
        info = client.execute_command("FT.INFO", f"{PREFIX}:checkpoint")
        info = info if isinstance(info, dict) else dict(zip(info[::2], info[1::2], strict=False))
        if int(float(info[b"num_docs"])) == 31:
            break
        time.sleep(0.05)


def _history(graph, saver, thread: str) -> list[dict]:
    """The same summary the fixture script recorded, read through the new saver."""
    out = []
    for state in graph.get_state_history({"configurable": {"thread_id": thread}}):
        values = dict(state.values)
        if "messages" in values:
            values["messages"] = [[m.type, m.content] for m in values["messages"]]
        tup = saver.get_tuple(state.config)
        out.append({
            "checkpoint_id": state.config["configurable"]["checkpoint_id"],
            "parent_id": (state.parent_config or {}).get("configurable", {}).get("checkpoint_id"),
            "step": state.metadata["step"], "source": state.metadata["source"], "next": list(state.next),
            "values": values,
            "pending_writes": sorted([t, c] for t, c, _ in tup.pending_writes),
        })
    return out


def _migrate_cli(monkeypatch, tmp_path, redis_server, *argv: str) -> int:
    from xmrt.cli import COMMAND_MODULES, CommandTree
    from xmrt.cli.commands import migrate

    assert "xmrt.cli.commands.migrate" in COMMAND_MODULES
    parser = argparse.ArgumentParser(prog="xmrt")
    migrate.register(CommandTree(parser))  # only this command: others may be mid-edit
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    for name in ("REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("XMRT_KEY_PREFIX", PREFIX)
    monkeypatch.setenv("XMRT_DATA_DIR", str(tmp_path / "data"))
    args = parser.parse_args(["migrate", "checkpoints", *argv])
    return args._handler(args)


def test_legacy_threads_are_migrated_by_one_command_and_read_as_before(redis_server, redis_client, tmp_path,
                                                                       monkeypatch, capsys, caplog):
    from xmrt.config import create_config

    _load_fixture(redis_client)
    config = create_config({"REDIS_URL": redis_server.url, "XMRT_KEY_PREFIX": PREFIX,
                            "XMRT_DATA_DIR": str(tmp_path / "data")}, env_file=None)
    with caplog.at_level(logging.WARNING, logger="xmrt.redis.checkpoint"):
        saver = make_checkpointer(config)
    assert "31 checkpoints under the prefix 'legacy' are in the previous format" in caplog.text
    assert "xmrt migrate checkpoints" in caplog.text
    assert saver.get_tuple({"configurable": {"thread_id": "legacy-chat"}}) is None  # not readable before

    assert _migrate_cli(monkeypatch, tmp_path, redis_server, "--dry-run", "--json") == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["threads"] == 5 and counts["checkpoints"] == 31 and counts["legacy_keys"] == len(FIXTURE["keys"])
    assert saver.get_tuple({"configurable": {"thread_id": "legacy-chat"}}) is None  # a dry run writes nothing

    assert _migrate_cli(monkeypatch, tmp_path, redis_server) == 0
    assert "migrated 31 checkpoints and 56 writes of 5 threads" in capsys.readouterr().out
    assert _migrate_cli(monkeypatch, tmp_path, redis_server) == 0  # again: nothing changes
    capsys.readouterr()

    calls = {"ok": 0, "flaky": 0}
    fail = {"on": False}
    graphs = {
        "legacy-linear": linear_graph(saver), "legacy-interrupt": interrupt_graph(saver),
        "legacy-subgraph": parent_with_subgraph(saver), "legacy-chat": chat_graph(saver),
        "legacy-failed": branching_graph(saver, calls, fail),
    }
    for thread, expected in FIXTURE["expected"].items():
        assert _history(graphs[thread], saver, thread) == expected, thread
    stored = assert_consistent(redis_client, PREFIX, ttl=False, orphan_writes=False)
    assert sorted(stored) == sorted(FIXTURE["expected"])

    # ... and they go on from where the old saver left them
    out = graphs["legacy-interrupt"].invoke(Command(resume="yes"), {"configurable": {"thread_id": "legacy-interrupt"}})
    assert out == {"steps": 3, "log": ["before", "answer:yes", "after"]}
    out = graphs["legacy-failed"].invoke(None, {"configurable": {"thread_id": "legacy-failed"}})
    assert calls == {"ok": 0, "flaky": 1}  # the branch that had succeeded is not run again
    assert sorted(out["log"]) == ["flaky", "join", "ok", "start"]
    out = graphs["legacy-subgraph"].invoke(Command(resume="ok"), {"configurable": {"thread_id": "legacy-subgraph"}})
    reference = parent_with_subgraph(InMemorySaver())  # the same run, never interrupted by a migration
    reference.invoke({"log": []}, {"configurable": {"thread_id": "r"}})
    assert out == reference.invoke(Command(resume="ok"), {"configurable": {"thread_id": "r"}})
    out = graphs["legacy-chat"].invoke({"messages": [("user", "more")]}, {"configurable": {"thread_id": "legacy-chat"}})
    assert [m.content for m in out["messages"]][-2:] == ["more", "answer 7"]

    # the legacy keys and indexes go with --delete-legacy; the migrated threads stay
    assert _migrate_cli(monkeypatch, tmp_path, redis_server, "--delete-legacy", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["deleted_keys"] == len(FIXTURE["keys"])
    assert sorted(report["dropped_indexes"]) == [f"{PREFIX}:checkpoint", f"{PREFIX}:checkpoint_write"]
    left = sorted(k.decode() for k in redis_client.scan_iter(match=f"{PREFIX}:*"))
    assert left and all(k.startswith(f"{PREFIX}:checkpoint:{{legacy-") for k in left)
    assert not list(redis_client.scan_iter(match="write_keys_zset:legacy-*"))
    assert len(list(saver.list({"configurable": {"thread_id": "legacy-linear"}}))) == 10
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="xmrt.redis.checkpoint"):
        make_checkpointer(config).close()
    assert "previous format" not in caplog.text  # nothing left to migrate, no warning
    saver.delete_thread("legacy-chat")  # leave less behind on the shared server
    for thread in FIXTURE["expected"]:
        saver.delete_thread(thread)


@pytest.mark.parametrize("flag", ["--dry-run"])
def test_migrating_nothing_is_fine(redis_server, tmp_path, monkeypatch, capsys, flag, redis_client):
    stale = [*redis_client.scan_iter(match=f"{PREFIX}:*")]
    if stale:
        redis_client.delete(*stale)
    assert _migrate_cli(monkeypatch, tmp_path, redis_server, flag) == 0
    assert "would migrate 0 checkpoints and 0 writes of 0 threads" in capsys.readouterr().out
