import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk

from graphs.memory_agent import builder
from nodes.models import scripted_model
from tests.conftest import ROOT, free_port, make_config
from tests.fakes import ScriptedChat
from xmrt.eliza.memory import AgentMemory
from xmrt.redis.persistence import redis_graph
from xmrt.redis.server import EmbeddedRedis


def test_graph_exports_builder_and_graph_without_checkpointer():
    from graphs import memory_agent

    assert memory_agent.graph.checkpointer is None
    assert set(memory_agent.graph.get_input_jsonschema()["properties"]) == {"messages"}


def test_answers_remembers_and_recalls_on_a_new_thread(config):
    from graphs.context import NO_MEMORY_MESSAGE

    graph = redis_graph(builder, config)
    model = ScriptedChat(replies=["It holds 1,200 XMR."])
    ctx = {"agent_id": "recall-agent"}
    with scripted_model(model):
        first = graph.invoke(
            {"messages": [("user", "Our treasury holds 1,200 XMR. What should we fund first?")]},
            {"configurable": {"thread_id": "t-1"}}, context=ctx,
        )
        second = graph.invoke(
            {"messages": [("user", "How much XMR is in our treasury?")]},
            {"configurable": {"thread_id": "t-2"}}, context=ctx,
        )
    # Nothing remembered yet: no guess (and no model call), an honest answer.
    assert first["messages"][-1].content == NO_MEMORY_MESSAGE
    assert first["recalled"] == []
    assert len(second["recalled"]) == 1 and "1,200 XMR" in second["recalled"][0]["text"]
    assert second["recalled"][0]["score"] >= 0.3
    # The recalled memory reached the model's system prompt, and the answer it supports is shown.
    assert len(model.calls) == 1
    assert "1,200 XMR" in model.calls[0][0].content and model.calls[0][0].type == "system"
    assert second["messages"][-1].content == "It holds 1,200 XMR."
    # Threads are separate conversations; memories are shared by the agent.
    assert len(graph.get_state({"configurable": {"thread_id": "t-2"}}).values["messages"]) == 2
    stored = AgentMemory(config, store=graph.store).list("recall-agent")
    assert len(stored) == 2 and all(m.data["kind"] == "exchange" for m in stored)


def test_an_answer_what_the_user_said_does_not_support_becomes_a_quote_of_it(config):
    graph = redis_graph(builder, config)
    ctx = {"agent_id": "quote-agent"}
    with scripted_model(ScriptedChat(replies=["Noted.", "The community requests 5 million USD per year."])):
        graph.invoke({"messages": [("user", "Our DAO treasury holds 1,200 XMR and the community wants to fund "
                                            "node operators.")]}, {"configurable": {"thread_id": "q-1"}},
                     context=ctx)
        tokens = []
        for kind, chunk in graph.stream({"messages": [("user", "What does the community want to fund?")]},
                                        {"configurable": {"thread_id": "q-2"}}, context=ctx,
                                        stream_mode=["custom", "values"]):
            if kind == "custom":
                tokens.append(chunk["token"])
            else:
                out = chunk
    answer = out["messages"][-1].content
    assert answer.startswith("From what I remember: “Our DAO treasury holds 1,200 XMR and the community wants "
                             "to fund node operators.”"), answer
    assert "5 million" not in answer and "".join(tokens).strip() == answer and len(tokens) > 5


def test_the_agents_own_earlier_answers_are_not_evidence():
    from langchain_core.messages import AIMessage, HumanMessage

    from nodes.memory_agent import memory_units

    recalled = [{"text": "User said: The treasury holds 1,200 XMR.\nAssistant answered: It holds 9,999 XMR."}]
    messages = [HumanMessage("Spending needs a vote."), AIMessage("Dragons approve spending."),
                HumanMessage("Who approves spending?")]
    units = memory_units(recalled, messages)
    assert [(u.text, u.cite) for u in units] == [("The treasury holds 1,200 XMR.", "memory"),
                                                 ("Spending needs a vote.", "you said")]


def test_conversation_history_persists_per_thread(config):
    graph = redis_graph(builder, config)
    model = ScriptedChat(replies=["one", "two"])
    cfg = {"configurable": {"thread_id": "history"}}
    with scripted_model(model):
        graph.invoke({"messages": [("user", "first question")]}, cfg, context={"remember": False, "grounded": False})
        graph.invoke({"messages": [("user", "second question")]}, cfg, context={"remember": False, "grounded": False})
    contents = [m.content for m in graph.get_state(cfg).values["messages"]]
    assert contents == ["first question", "one", "second question", "two"]
    # The second call saw the first exchange (the history went to the model).
    assert [m.content for m in model.calls[1][1:]] == ["first question", "one", "second question"]
    assert len(list(graph.get_state_history(cfg))) >= 8


def test_empty_model_replies_fall_back_after_bounded_retries(config):
    graph = redis_graph(builder, config)
    model = ScriptedChat(replies=["", "   ", "never reached"])
    with scripted_model(model):
        out = graph.invoke({"messages": [("user", "hello?")]}, {"configurable": {"thread_id": "empty"}},
                           context={"max_attempts": 2, "grounded": False})
    assert len(model.calls) == 2
    assert out["messages"][-1].content.startswith("I could not generate an answer")


def test_answers_stream_token_by_token(config):
    graph = redis_graph(builder, config)
    model = GenericFakeChatModel(messages=iter([AIMessage("The treasury is governed by a three of five multisig")]))
    chunks = []
    with scripted_model(model):
        for chunk, meta in graph.stream({"messages": [("user", "who governs the treasury?")]},
                                        {"configurable": {"thread_id": "stream"}}, stream_mode="messages",
                                        context={"grounded": False}):
            if isinstance(chunk, AIMessageChunk) and meta["langgraph_node"] == "respond":
                chunks.append(chunk.content)
    assert len(chunks) > 5
    assert "".join(chunks) == "The treasury is governed by a three of five multisig"


def _proc_env(config) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "XMRT_", "OPENAI_", "RAGLIGHT_"))}
    env.update(XMRT_DATA_DIR=str(config.data_dir), XMRT_REDIS_PORT=str(config.embedded_redis_port),
               XMRT_KEY_PREFIX=config.key_prefix, PYTHONPATH=str(ROOT))
    return env


def test_thread_resumes_in_a_new_process_after_a_kill(config):
    script = Path(__file__).parent / "scripts" / "memory_agent_proc.py"
    env = _proc_env(config)
    proc = subprocess.Popen([sys.executable, str(script), "first", "killed-thread"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line.strip())
            if line.strip() == "IN_MODEL":
                break
        assert seen[-2:] == ["TURN1_DONE", "IN_MODEL"], (seen, proc.stderr.read() if proc.poll() else "")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
    done = subprocess.run([sys.executable, str(script), "resume", "killed-thread"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["next_before"] == ["respond"]
    assert result["messages_before"] == [
        ["human", "How big is the treasury?"], ["ai", "The treasury holds 1200 XMR."], ["human", "And who controls it?"]
    ]
    assert result["messages_after"] == [*result["messages_before"], ["ai", "A 3-of-5 multisig controls it."]]
    assert result["next_after"] == []


@pytest.fixture
def own_redis(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis", free_port())
    server.start()
    yield server
    server.stop()


def test_redis_stopped_mid_run_fails_clearly_and_the_thread_resumes(own_redis, tmp_path):
    config = make_config(tmp_path / "data", own_redis.port, XMRT_KEY_PREFIX="fault")
    graph = redis_graph(builder, config)
    cfg = {"configurable": {"thread_id": "fault-thread"}}
    ctx = {"agent_id": "fault-agent"}
    with scripted_model(ScriptedChat(replies=["Noted: 1,200 XMR."])):
        graph.invoke({"messages": [("user", "The treasury holds 1,200 XMR.")]}, cfg, context=ctx)

    def stop_server(n, _messages):
        own_redis.stop()

    with scripted_model(ScriptedChat(replies=["lost answer"], on_call=stop_server)), pytest.raises(Exception) as err:
        graph.invoke({"messages": [("user", "How much XMR do we hold?")]}, cfg, context=ctx)
    assert "Redis" in str(err.value) and f":{own_redis.port}" in str(err.value), repr(err.value)

    own_redis.start()
    state = graph.get_state(cfg)
    # The last checkpoint is the one written before Redis went away: after `recall`, before `respond`.
    assert state.next == ("respond",)
    assert [m.content for m in state.values["messages"]][-1] == "How much XMR do we hold?"
    with scripted_model(ScriptedChat(replies=["We hold 1,200 XMR."])):
        out = graph.invoke(None, cfg, context=ctx)
    assert out["messages"][-1].content == "We hold 1,200 XMR."
    memories = AgentMemory(config, store=graph.store).list("fault-agent")
    assert any("1,200 XMR" in m.text for m in memories)
