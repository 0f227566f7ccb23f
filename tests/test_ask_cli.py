"""``xmrt ask`` / ``xmrt chat``: streamed answers, sources, reflections, --json, threads, errors, EOF and Ctrl-C.

The commands run in-process through ``xmrt.cli.main`` on the session's real Redis and a real Chroma collection;
only the chat model is scripted.
"""

from __future__ import annotations

import builtins
import io
import json

import pytest
from langchain_core.messages import AIMessage

from nodes.models import scripted_model
from tests.fakes import ScriptedChat
from tests.reasoning_corpus import ScriptedToolChat, call, fill
from tests.test_rat import DRAFT, REV1, REV2, SUPPORTED
from xmrt import cli


@pytest.fixture
def env(config, monkeypatch, tmp_path):
    """The process configuration (get_config) pointed at this test's data dir, Redis and key prefix."""
    import os

    from xmrt.config import get_config

    for name in list(os.environ):
        if name.startswith(("RAGLIGHT_", "OPENAI_", "REDIS_", "CHROMA_", "XMRT_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XMRT_DATA_DIR", str(config.data_dir))
    monkeypatch.setenv("XMRT_REDIS_PORT", str(config.embedded_redis_port))
    monkeypatch.setenv("XMRT_KEY_PREFIX", config.key_prefix)
    monkeypatch.chdir(tmp_path)  # no .env file
    # Only this module's commands: the test does not depend on the other command modules.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("xmrt.cli.commands.ask",))
    get_config.cache_clear()
    fill(get_config(), "default")
    yield get_config()
    get_config.cache_clear()


def run(argv, model, capsys):
    with scripted_model(model):
        code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_commands_are_registered():
    assert "xmrt.cli.commands.ask" in cli.COMMAND_MODULES


def test_ask_rag_json(env, capsys):
    model = ScriptedChat(replies=["The treasury holds 1,200 XMR [1]."])
    code, out, err = run(["ask", "How much XMR does the treasury hold?", "--json"], model, capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert len(out.strip().splitlines()) == 1  # with --json, stdout holds only the JSON object
    assert result["final_response"].startswith("The treasury holds 1,200 XMR [1].")
    assert result["sources"][0]["path"] == "docs/treasury.md"
    assert result["mode"] == "rag" and result["thread_id"].startswith("ask-")
    # The streamed answer and the sources went to stderr.
    assert "The treasury holds 1,200 XMR [1]." in err and "[1] docs/treasury.md:1" in err


def test_ask_rat_prints_reflections_and_confidence(env, capsys):
    replies = [DRAFT, REV1, REV2, REV1, REV2, SUPPORTED]
    question = "How much XMR does the DAO treasury hold and who approves spending from it?"
    code, out, err = run(["ask", question, "--mode", "rat"], ScriptedChat(replies=replies), capsys)
    assert code == 0, err
    assert out.startswith(SUPPORTED)
    assert "\nSources:\n  [1] docs/treasury.md:1" in out
    assert "Reflections (4):" in out and "round 1 step 1 (changed); retrieved: docs/treasury.md:1" in out
    assert f"after:  {REV1}" in out
    assert "Confidence: 1.00 (2 of 2 answer sentences supported by retrieved passages)" in out

    code, out, err = run(["ask", question, "--mode", "rat", "--json", "--reflection-steps", "1"],
                         ScriptedChat(replies=[DRAFT, REV1, REV2, SUPPORTED]), capsys)
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result) >= {"final_response", "sources", "reflections", "confidence"}
    assert len(result["reflections"]) == 2 and result["confidence"] == 1.0
    assert {"query", "sources", "before", "after"} <= set(result["reflections"][0])
    assert result["reflections"][0]["sources"][0]["path"] == "docs/treasury.md"


def test_ask_agentic_json(env, capsys):
    model = ScriptedToolChat(replies=[
        AIMessage("", tool_calls=[call("search_knowledge", query="treasury approval")]),
        "The council approves spending with a 3-of-5 multisig (docs/treasury.md).",
    ])
    code, out, err = run(["ask", "Who approves spending?", "--mode", "agentic", "--json", "--max-tool-calls", "2"],
                         model, capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["final_response"].startswith("The council approves spending")
    assert result["sources"][0]["path"] == "docs/treasury.md"
    assert "The council approves spending" in err  # streamed from the agent node


def test_thread_continues_a_conversation(env, capsys):
    model = ScriptedChat(replies=["It holds 1,200 XMR [1].", "Who approves treasury spending?",
                                  "The council's 3-of-5 multisig [1]."])
    run(["ask", "How much XMR does the treasury hold?", "--thread", "cli-thread", "--json"], model, capsys)
    code, out, _ = run(["ask", "And who approves spending?", "--thread", "cli-thread", "--json"], model, capsys)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["standalone_question"] == "Who approves treasury spending?"
    assert result["thread_id"] == "cli-thread"


def test_missing_collection_and_empty_question_are_user_errors(env, capsys):
    code, _, err = run(["ask", "anything", "--collection", "nope-missing"], ScriptedChat(), capsys)
    assert code == 2 and "no knowledge-base collection named 'nope-missing'" in err and "default" in err
    code, _, err = run(["ask", "   "], ScriptedChat(), capsys)
    assert code == 2 and "the question is empty" in err


def test_chat_answers_until_end_of_input(env, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("How much XMR does the treasury hold?\n\nAnd who approves it?\n"))
    model = ScriptedChat(replies=["1,200 XMR [1].", "Who approves treasury spending?", "The council [1]."])
    code, out, err = run(["chat", "--thread", "chat-eof"], model, capsys)
    assert code == 0, err
    assert out.count("xmrt> ") == 2 and "1,200 XMR [1]." in out and "The council [1]." in out
    assert "bye (thread chat-eof)" in err
    assert len(model.calls) == 3  # the second question was rewritten with the first exchange as history


def test_chat_ctrl_c_cancels_an_answer_and_leaves_at_the_prompt(env, capsys, monkeypatch):
    lines = iter(["first question about the treasury", "How long is voting on proposals?"])

    def fake_input(prompt=""):
        try:
            return next(lines)
        except StopIteration:
            raise KeyboardInterrupt from None

    def interrupt_first(n, _messages):
        if n == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(builtins, "input", fake_input)
    model = ScriptedChat(replies=["unused", "Who is voting?", "Seven days [1]."], on_call=interrupt_first)
    code, out, err = run(["chat", "--thread", "chat-ctrl-c"], model, capsys)
    assert code == 0
    assert "(answer cancelled)" in err and "Seven days [1]." in out and "bye" in err
