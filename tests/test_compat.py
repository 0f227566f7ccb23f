"""xmrt/compat: each private API still does what we use it for on the installed packages, and the guard."""

from __future__ import annotations

import asyncio
import operator
import re
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from xmrt import compat
from xmrt.compat import CompatError, installed_version, require
from xmrt.compat import langchain_core as lc_compat
from xmrt.compat import langgraph as lg_compat


class _Count(TypedDict):
    n: Annotated[int, operator.add]


def _three_steps() -> StateGraph:
    builder = StateGraph(_Count)
    builder.add_node("a", lambda s: {"n": 1})
    builder.add_node("b", lambda s: {"n": 1})
    builder.add_node("c", lambda s: {"n": 1})
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", END)
    return builder


def _checkpoints(durability: str) -> int:
    saver = InMemorySaver()
    graph = _three_steps().compile(checkpointer=saver)
    graph = graph.with_config(configurable=lg_compat.durability_configurable(durability))
    config = {"configurable": {"thread_id": "t"}}
    assert graph.invoke({"n": 0}, config)["n"] == 3
    return len(list(saver.list(config)))


def test_installed_versions_are_the_tested_ones():
    assert installed_version("langgraph") in lg_compat.TESTED_VERSIONS
    assert installed_version("langchain-core") in lc_compat.TESTED_VERSIONS


def test_durability_key_sets_a_graphs_default_durability():
    # "exit" writes only the final checkpoint; "sync" writes one per super-step. The key is what changes it.
    assert _checkpoints("exit") == 1
    assert _checkpoints("sync") > 1


def test_require_names_the_tested_versions_when_the_installed_one_differs():
    installed = installed_version("langgraph")
    with pytest.raises(CompatError, match=r"tested with langgraph 0\.9\.9; installed: " + re.escape(installed)):
        require("langgraph", ("0.9.9",), "a test")
    with pytest.raises(CompatError, match="installed: none"):
        require("no-such-package-xmrt", ("1.0",), "a test")
    require("langgraph", lg_compat.TESTED_VERSIONS, "a test")


def test_guarded_helpers_refuse_an_untested_version(monkeypatch):
    monkeypatch.setattr(lg_compat, "TESTED_VERSIONS", ("0.0.1",))
    with pytest.raises(CompatError, match="default durability"):
        lg_compat.durability_configurable("sync")
    monkeypatch.setattr(lc_compat, "TESTED_VERSIONS", ("0.0.1",))

    async def drain():
        return [c async for c in lc_compat.astream_in_thread(_Scripted(), [HumanMessage("hi")])]

    with pytest.raises(CompatError, match="langchain-core"):
        asyncio.run(drain())


class _Scripted(BaseChatModel):
    """A chat model with a sync stream only, whose own ``_astream`` refuses (as ChatHuggingFace's does locally)."""

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage("one two"))])

    def _stream(self, messages, stop=None, run_manager=None, **kwargs: Any):
        for word in ("one", " two"):
            yield ChatGenerationChunk(message=AIMessageChunk(word))

    async def _astream(self, *args: Any, **kwargs: Any):
        raise AssertionError("the bridge must not call the subclass's own _astream")
        yield  # pragma: no cover


def test_astream_in_thread_streams_the_sync_stream():
    async def drain():
        return [c.message.content async for c in lc_compat.astream_in_thread(_Scripted(), [HumanMessage("hi")])]

    assert asyncio.run(drain()) == ["one", " two"]


def test_compat_modules_are_the_only_users_of_private_api():
    from pathlib import Path

    root = Path(compat.__file__).resolve().parents[2]
    offenders = []
    for folder in ("xmrt", "graphs", "nodes", "tools"):
        for file in (root / folder).rglob("*.py"):
            if "compat" in file.relative_to(root).parts:
                continue
            text = file.read_text()
            if "._internal" in text or "BaseChatModel._astream" in text or "from langgraph_api" in text:
                offenders.append(str(file.relative_to(root)))
    assert offenders == []
