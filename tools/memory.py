"""Agent-memory tools: save, recall, search, list and forget long-term memories in Redis.

Inside a graph the tools use the graph's store (``runtime.store``) and take the agent id from
the run's context (a ``agent_id`` field) or ``configurable.agent_id``. Called outside a graph they
open the configured Redis store themselves.
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.tools import tool
from langgraph.prebuilt import ToolRuntime

from xmrt.eliza.memory import AgentMemory, shared_memory
from xmrt.errors import UserError
from xmrt.policy import current_principal

DEFAULT_AGENT = "eliza"


def _memory_and_agent(runtime: ToolRuntime | None) -> tuple[AgentMemory, str]:
    from xmrt import services

    store = getattr(runtime, "store", None) if runtime is not None else None
    agent = getattr(getattr(runtime, "context", None), "agent_id", None)
    if not agent and runtime is not None:
        agent = ((getattr(runtime, "config", None) or {}).get("configurable") or {}).get("agent_id")
    principal = current_principal(getattr(runtime, "config", None) if runtime is not None else None)
    config = services.config()
    memory = AgentMemory(config, store=store if store is not None else shared_memory(config).store, principal=principal)
    return memory, agent or DEFAULT_AGENT


def _run(fn) -> str:
    try:
        return fn()
    except UserError as exc:
        return f"error: {exc}"


@tool
def save_memory(text: str, key: str | None = None, runtime: ToolRuntime = None) -> str:
    """Save a fact worth remembering to long-term memory. Give a key to overwrite an earlier memory."""
    memory, agent = _memory_and_agent(runtime)
    return _run(lambda: f"saved memory {memory.remember(agent, text, key=key)}")


@tool
def search_memories(query: str, k: int = 5, runtime: ToolRuntime = None) -> str:
    """Search long-term memory for what is relevant to the query. Returns JSON: key, text, score."""
    memory, agent = _memory_and_agent(runtime)
    k = max(1, min(int(k), 20))
    return _run(lambda: json.dumps([m.to_dict() for m in memory.search(agent, query, limit=k)], ensure_ascii=False))


@tool
def get_memory(key: str, runtime: ToolRuntime = None) -> str:
    """Read one memory by its key. Returns JSON, or 'not found'."""
    memory, agent = _memory_and_agent(runtime)

    def read() -> str:
        found = memory.recall(agent, key)
        return json.dumps(found.to_dict(), ensure_ascii=False) if found else f"not found: {key}"

    return _run(read)


@tool
def list_memories(limit: int = 20, runtime: ToolRuntime = None) -> str:
    """List the most recent long-term memories. Returns JSON: key, text."""
    memory, agent = _memory_and_agent(runtime)
    limit = max(1, min(int(limit), 100))
    return _run(lambda: json.dumps([m.to_dict() for m in memory.list(agent, limit=limit)], ensure_ascii=False))


@tool
def forget_memory(key: str, runtime: ToolRuntime = None) -> str:
    """Delete one memory by its key."""
    memory, agent = _memory_and_agent(runtime)
    return _run(lambda: f"forgot {key}" if memory.forget(agent, key) else f"not found: {key}")


MEMORY_TOOLS: list[Any] = [save_memory, search_memories, get_memory, list_memories, forget_memory]
