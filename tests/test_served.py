import asyncio

import pytest
from langgraph_sdk import get_client

from tests.served import LangGraphServer, server_env


@pytest.mark.slow
def test_served_memory_agent_streams_tokens_and_checkpoints_in_redis(config, redis_client, tmp_path):
    """The real server, the real local model: tokens stream over the API and the thread lands in Redis."""
    server = LangGraphServer(server_env(config), tmp_path / "langgraph-dev.log").start()
    try:
        async def run():
            client = get_client(url=server.url)
            thread = await client.threads.create()
            chunks = []
            async for part in client.runs.stream(
                thread["thread_id"], "memory_agent",
                input={"messages": [{"role": "user", "content": "What is the XMRT DAO?"}]},
                stream_mode="messages-tuple", context={"agent_id": "served", "grounded": False},
            ):
                if part.event == "messages" and part.data[1].get("langgraph_node") == "respond":
                    chunks.append(part.data[0].get("content") or "")
            state = await client.threads.get_state(thread["thread_id"])
            return thread["thread_id"], chunks, state

        thread_id, chunks, state = asyncio.run(run())
    except Exception:
        print(server.tail())
        raise
    finally:
        server.stop()
    assert len([c for c in chunks if c]) > 3, chunks
    messages = state["values"]["messages"]
    assert [m["type"] for m in messages] == ["human", "ai"] and messages[1]["content"].strip()
    keys = [k.decode() for k in redis_client.scan_iter(match=f"{config.key_prefix}:checkpoint:*", count=1000)]
    assert any(thread_id in k for k in keys)
