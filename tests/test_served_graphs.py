"""Every graph of langgraph.json through the real served API, and a thread resumed after the server restarts."""

from __future__ import annotations

import asyncio
import json

import pytest
from langgraph_sdk import get_client

from tests.conftest import ROOT
from tests.served import LangGraphServer, langgraph_config_with, server_env

SHORT = {"max_new_tokens": 24}


def _cheap_requests(config) -> dict[str, tuple[dict, dict]]:
    """Input and context per graph, chosen to be cheap (small replies, no LLM for Eliza)."""
    sources = config.ingest_roots[0] / "notes"
    sources.mkdir(parents=True, exist_ok=True)
    (sources / "treasury.md").write_text("# Treasury\nSpending above 100 XMR needs a governance vote.\n")
    proposal = {"id": "srv-1", "title": "Fund an audit", "description": "Audit the app", "amount_xmr": 10,
                "criteria": {"community_support": 0.8, "risk": 0.2}}
    question = [{"role": "user", "content": "Who approves treasury spending?"}]
    return {
        "ingest": ({"source": str(sources)}, {"collection": "served", "progress": False}),
        "rag": ({"messages": question}, {"collection": "served", **SHORT}),
        "rat": ({"question": "Who approves treasury spending?"},
                {"collection": "served", "max_steps": 1, "reflection_steps": 1, **SHORT}),
        "agentic_rag": ({"messages": question}, {"collection": "served", "max_tool_calls": 1,
                                                 "first_tool": "search_knowledge", **SHORT}),
        "eliza": ({"proposals": [proposal]}, {"agent_id": "served", "use_llm": False, "collection": "served"}),
        "self_improve": ({"outcomes": [{"id": "srv-1", "success": True}]}, {"agent_id": "served"}),
        "orchestrator": ({"requests": [{"type": "proposal", **proposal, "id": "srv-2"}]},
                         {"agent_id": "served", "use_llm": False, "collection": "served"}),
        "memory_agent": ({"messages": [{"role": "user", "content": "Say hello."}]}, {"agent_id": "served"}),
    }


@pytest.mark.slow
def test_every_graph_runs_over_the_api_and_a_thread_resumes_after_restart(config, redis_client, tmp_path):
    registered = list(json.loads((ROOT / "langgraph.json").read_text())["graphs"])
    extra = {"echo": "./tests/served_graphs.py:graph"}
    if "ingest" not in registered:  # not (yet) in langgraph.json: serve it here so the API path is still tested
        extra["ingest"] = "./graphs/ingest.py:graph"
        registered.insert(0, "ingest")
    requests = _cheap_requests(config)
    lg_config = langgraph_config_with(tmp_path, extra)
    env = {**server_env(config), "XMRT_LLM_MAX_NEW_TOKENS": "24"}
    server = LangGraphServer(env, tmp_path / "dev-1.log", config_path=lg_config).start()
    try:
        async def run_all():
            client = get_client(url=server.url)
            results = {}
            for graph_id in registered:
                if graph_id not in requests:
                    results[graph_id] = ("no cheap input known", None)
                    continue
                inp, ctx = requests[graph_id]
                thread = await client.threads.create()
                out = await client.runs.wait(thread["thread_id"], graph_id, input=inp, context=ctx)
                history = await client.threads.get_history(thread["thread_id"])
                results[graph_id] = (out, len(history))
            thread = await client.threads.create()
            await client.runs.wait(thread["thread_id"], "echo", input={"text": "before restart"})
            return results, thread["thread_id"]

        results, tid = asyncio.run(run_all())
    except Exception:
        print(server.tail())
        raise
    finally:
        server.stop()

    problems = {g: r for g, r in results.items()
                if not isinstance(r[0], dict) or "__error__" in r[0] or not r[1]}
    assert not problems, problems
    assert results["eliza"][0]["decisions"][0]["id"] == "srv-1"
    assert results["ingest"][0]["summary"]
    from xmrt.redis.audit import tail

    actions = {(e["action"], e["details"].get("collection")) for e in tail(200, config)}
    assert ("kb.ingest", "served") in actions and ("eliza.decision", None) in actions

    server = LangGraphServer(env, tmp_path / "dev-2.log", config_path=lg_config).start()
    try:
        async def resume():
            client = get_client(url=server.url)
            before = await client.threads.get_state(tid)
            out = await client.runs.wait(tid, "echo", input={"text": "after restart"})
            history = await client.threads.get_history(tid)
            return before, out, history

        before, out, history = asyncio.run(resume())
    except Exception:
        print(server.tail())
        raise
    finally:
        server.stop()
    assert before["values"]["echo"] == "echo: before restart" and before["values"]["runs"] == 1
    assert out["echo"] == "echo: after restart" and out["runs"] == 2
    assert len(history) >= 4
    keys = [k.decode() for k in redis_client.scan_iter(match=f"{config.key_prefix}:checkpoint:*", count=1000)]
    assert any(tid in k for k in keys)
