"""Write tests/fixtures/legacy_checkpoints.json: threads saved by the library-compatible saver.

It ran once, against the ``FastRedisSaver`` of ``xmrt/checkpoint.py`` as of commit 6fa1e70 (the
format of langgraph-checkpoint-redis 0.5.2: RedisJSON documents, latest-pointers and the
library's unprefixed ``write_keys_zset:*`` registries), before that saver was replaced. It cannot
run against the current code; it is kept to say how the fixture was made.

Usage (from the checkout, with that commit's code): ``python tests/scripts/make_legacy_checkpoints.py PORT``.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import redis
from langchain_core.messages import HumanMessage

from tests.checkpoint_graphs import branching_graph, chat_graph, interrupt_graph, linear_graph, parent_with_subgraph

PREFIX = "legacy"
OUT = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_checkpoints.json"


def _text(value: bytes) -> dict:
    try:
        return {"text": value.decode()}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode()}


def _plain(values: dict) -> dict:
    """State values as JSON: messages as [type, content]."""
    out = {}
    for key, value in values.items():
        if key == "messages":
            value = [[m.type, m.content] for m in value]
        out[key] = value
    return out


def main(port: int) -> None:
    from xmrt.checkpoint import FastRedisSaver, checkpoint_prefixes

    client = redis.Redis(port=port)
    saver = FastRedisSaver(redis_client=client, **checkpoint_prefixes(PREFIX))
    saver.setup()
    cfg = {"configurable": {"thread_id": "legacy-linear"}}
    linear_graph(saver).invoke({"log": []}, cfg)
    linear_graph(saver).invoke({"log": ["x"]}, cfg)
    interrupt_graph(saver).invoke({"log": []}, {"configurable": {"thread_id": "legacy-interrupt"}})
    parent_with_subgraph(saver).invoke({"log": []}, {"configurable": {"thread_id": "legacy-subgraph"}})
    try:
        branching_graph(saver, {"ok": 0, "flaky": 0}, {"on": True}).invoke(
            {"log": []}, {"configurable": {"thread_id": "legacy-failed"}})
    except RuntimeError:
        pass
    chat = chat_graph(saver)
    for turn in range(3):
        chat.invoke({"messages": [HumanMessage(content=f"question {turn} ünï")]},
                    {"configurable": {"thread_id": "legacy-chat"}})

    expected = {}
    graphs = {"legacy-linear": linear_graph(saver), "legacy-interrupt": interrupt_graph(saver),
              "legacy-subgraph": parent_with_subgraph(saver), "legacy-chat": chat,
              "legacy-failed": branching_graph(saver, {"ok": 0, "flaky": 0}, {"on": True})}
    for thread, graph in graphs.items():
        history = []
        for state in graph.get_state_history({"configurable": {"thread_id": thread}}):
            tup = saver.get_tuple(state.config)
            history.append({
                "checkpoint_id": state.config["configurable"]["checkpoint_id"],
                "parent_id": (state.parent_config or {}).get("configurable", {}).get("checkpoint_id"),
                "step": state.metadata["step"], "source": state.metadata["source"], "next": list(state.next),
                # read through get_tuple: the library's list (and so get_state_history) returns messages
                # as plain dicts, unrevived
                "values": _plain(graph.get_state(state.config).values),
                "pending_writes": sorted([t, c] for t, c, _ in tup.pending_writes),
            })
        expected[thread] = history
    keys = sorted({*client.scan_iter(match=f"{PREFIX}:*"), *client.scan_iter(match="write_keys_zset:*")})
    dump = []
    for key in keys:
        kind = client.type(key).decode()
        entry: dict = {"key": key.decode(), "type": kind}
        if kind == "ReJSON-RL":
            entry["json"] = json.loads(client.execute_command("JSON.GET", key))
        elif kind == "string":
            entry["value"] = _text(client.get(key))
        elif kind == "zset":
            entry["members"] = [[m.decode(), s] for m, s in client.zrange(key, 0, -1, withscores=True)]
        else:
            raise SystemExit(f"unexpected key type {kind} for {key!r}")
        dump.append(entry)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"prefix": PREFIX, "made_by": "xmrt/checkpoint.py FastRedisSaver @ 6fa1e70",
                               "expected": expected, "keys": dump}, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(dump)} keys -> {OUT}")


if __name__ == "__main__":
    main(int(sys.argv[1]))
