"""Prompted tool calling for chat models without a native tool API (the local model).

The tools are rendered into the system prompt, and the model is asked to answer either in plain
text or with one JSON object ``{"name": ..., "arguments": {...}}``. The reply is parsed with a
bounded tolerance:

* a JSON object or list, optionally inside a Markdown code fence or ``<tool_call>`` tags;
* trailing text after the JSON, JSON cut short by the token limit (open strings, objects and
  lists are closed; anything else broken is rejected), and Python-literal dicts;
* the shapes ``{"name", "arguments"|"args"|"parameters"|"input"}``, OpenAI's
  ``{"function": {"name", "arguments"}}``, a list of calls or ``{"tool_calls": [...]}``, and
  arguments given as a JSON string;
* tool names matched exactly, then ignoring case, ``-`` and spaces;
* with exactly one tool, a bare arguments object that fits its schema.

A reply is a tool call only when it *starts* with JSON (after an optional fence or tag). Anything
else is a plain text answer, so text can be streamed as soon as its first characters arrive. A
reply that starts like JSON but is not a valid call to a bound tool becomes a plain text answer
too, with the reason in :attr:`ParsedReply.error`. Parsing never raises.

Nothing here imports a model library; it is pure and cheap to test.
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

#: At most this many tool calls are taken from one reply; the rest are dropped (and reported).
MAX_TOOL_CALLS = 4
#: Replies longer than this are never parsed as tool calls (a runaway generation is text).
MAX_TOOL_REPLY_CHARS = 20_000
#: Keys under which a JSON reply may hold a plain answer instead of a call.
ANSWER_KEYS = ("answer", "final_answer", "response", "content", "text")
_EXAMPLE_VALUES: dict[str, Any] = {"integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}
_ARG_KEYS = ("arguments", "args", "parameters", "input")
_NAME_KEYS = ("name", "tool", "tool_name", "function_name")
_OPENERS = ("```", "<tool_call>")
#: A reply wrapped in a Markdown code fence: group 1 is its body. The closing fence may be missing (a reply cut
#: off by the token limit) and anything after it is dropped. nodes/parsing.py unwraps replies with it too.
FENCE = re.compile(r"^```[\w-]*[ \t]*\n?(.*?)\s*(?:```.*)?$", re.S)
_TAGS = re.compile(r"^<tool_call>\s*(.*?)\s*(?:</tool_call>.*)?$", re.S)

ToolChoice = Literal["auto", "none", "required"] | str


@dataclass(frozen=True)
class ToolSpec:
    """One tool as the model sees it: name, description and JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def properties(self) -> dict[str, Any]:
        """The argument schemas by argument name."""
        props = self.parameters.get("properties")
        return props if isinstance(props, dict) else {}

    @property
    def required(self) -> list[str]:
        """Names of the required arguments."""
        req = self.parameters.get("required")
        return [r for r in req if isinstance(r, str)] if isinstance(req, list) else []


@dataclass
class ParsedReply:
    """A model reply split into text and tool calls.

    Attributes:
        content: The text answer ("" when the reply is only tool calls).
        tool_calls: LangChain tool calls: dicts with ``name``, ``args`` and ``id``.
        error: Why (part of) a JSON-looking reply was not taken as a tool call, else ``None``.
    """

    content: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def to_tool_specs(tools: Sequence[Any]) -> list[ToolSpec]:
    """Convert LangChain tools, functions, pydantic models or OpenAI tool dicts to :class:`ToolSpec`."""
    from langchain_core.utils.function_calling import convert_to_openai_tool

    specs = []
    for tool in tools:
        fn = convert_to_openai_tool(tool)["function"]
        params = fn.get("parameters") or {}
        specs.append(ToolSpec(fn["name"], (fn.get("description") or "").strip(), dict(params)))
    return specs


def normalize_tool_choice(tool_choice: Any, names: Sequence[str]) -> ToolChoice:
    """Reduce LangChain/OpenAI ``tool_choice`` values to ``auto``, ``none``, ``required`` or a tool name.

    Raises:
        ValueError: ``tool_choice`` names a tool that is not bound, or has an unknown form.
    """
    if tool_choice is None or tool_choice is False or tool_choice == "auto":
        return "auto"
    if tool_choice is True or tool_choice in ("any", "required"):
        return names[0] if len(names) == 1 else "required"
    if tool_choice == "none":
        return "none"
    if isinstance(tool_choice, dict):
        tool_choice = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
    if isinstance(tool_choice, str) and tool_choice in names:
        return tool_choice
    raise ValueError(f"tool_choice={tool_choice!r} is not one of the bound tools ({', '.join(names)})")


def render_tools_prompt(specs: Sequence[ToolSpec], tool_choice: ToolChoice = "auto") -> str:
    """The system-prompt section that describes the tools and the reply format.

    Tools are shown as signatures, ``name(arg: type, optional?: type): description``, which small
    models follow better than JSON schemas (they tend to copy a schema into their arguments).
    """
    lines = ["You can use these tools:"]
    for spec in specs:
        lines.append(f"- {_signature(spec)}: {spec.description or spec.name}")
    example: dict[str, Any] = {}
    if specs:
        first = _first_argument(specs[0])
        value = _EXAMPLE_VALUES.get(_type_name(specs[0].properties.get(first)), "...") if first else "..."
        example = {"name": specs[0].name, "arguments": {first or "argument": value}}
    lines.append(f"To use a tool, reply only with JSON, for example:\n{json.dumps(example)}")
    if tool_choice == "required":
        lines.append("You must use one of the tools now.")
    elif tool_choice not in ("auto", "none"):
        lines.append(f"You must use the tool {tool_choice} now.")
    else:
        lines.append("Otherwise reply in plain text.")
    return "\n".join(lines)


def tool_call_prefill(tool_choice: ToolChoice, specs: Sequence[ToolSpec] = ()) -> str:
    """Start of the assistant reply that steers the model into a call when one is required.

    For a named tool whose first argument is a string, the prefill runs up to that argument's
    value, so the model only has to write the value.
    """
    if tool_choice == "required":
        return '{"name": "'
    if tool_choice in ("auto", "none"):
        return ""
    prefill = json.dumps({"name": tool_choice})[:-1] + ', "arguments": {'
    spec = next((s for s in specs if s.name == tool_choice), None)
    first = _first_argument(spec) if spec else None
    if first and spec and spec.properties.get(first, {}).get("type") == "string":
        prefill += json.dumps(first) + ': "'
    return prefill


def _type_name(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "any"
    kind = schema.get("type")
    if isinstance(kind, str):
        return kind
    options = [_type_name(o) for o in schema.get("anyOf", []) if isinstance(o, dict) and o.get("type") != "null"]
    return "|".join(options) or "any"


def _signature(spec: ToolSpec) -> str:
    args = [f"{name}{'' if name in spec.required else '?'}: {_type_name(schema)}"
            for name, schema in spec.properties.items()]
    return f"{spec.name}({', '.join(args)})"


def _first_argument(spec: ToolSpec) -> str | None:
    names = spec.required or list(spec.properties)
    return names[0] if names else None


def json_is_complete(text: str) -> bool:
    """Whether a (fenced or tagged) reply already holds a complete JSON value; generation can stop."""
    body = _unwrap(text.strip())
    try:
        value, _end = json.JSONDecoder().raw_decode(body)
    except ValueError:
        return False
    return isinstance(value, dict) or (isinstance(value, list) and bool(value)
                                       and all(isinstance(v, dict) for v in value))


def render_tool_call(name: str, args: dict[str, Any]) -> str:
    """How an earlier tool call appears in the prompt: the same JSON the model is asked to write."""
    return json.dumps({"name": name, "arguments": args}, ensure_ascii=False)


def classify_reply_start(text: str) -> Literal["tool", "text"] | None:
    """Decide from its first characters whether a reply is a tool call; ``None`` while undecided."""
    s = text.lstrip()
    if not s:
        return None
    if s[0] == "[":  # a list of calls, or text such as "[1] The answer..."
        rest = s[1:].lstrip()
        return None if not rest else "tool" if rest[0] == "{" else "text"
    if s[0] == "{" or s.startswith(_OPENERS):
        return "tool"
    if any(opener.startswith(s) for opener in _OPENERS):
        return None
    return "text"


def new_tool_call_id() -> str:
    """A fresh id for a tool call, in OpenAI's style."""
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_tool_reply(text: str, specs: Sequence[ToolSpec]) -> ParsedReply:
    """Split a reply into text and tool calls; never raises.

    Args:
        text: The full model reply.
        specs: The bound tools. Calls to other names are not accepted.

    Returns:
        The tool calls found, or the reply as plain text (with ``error`` set when it looked like
        JSON but was not a valid call).
    """
    stripped = text.strip()
    if classify_reply_start(stripped) != "tool" or not specs:
        return ParsedReply(stripped)
    if len(stripped) > MAX_TOOL_REPLY_CHARS:
        return ParsedReply(stripped, error="reply too long to be a tool call")
    body = _unwrap(stripped)
    value, how = _decode(body)
    if how is None:
        return ParsedReply(stripped, error="reply starts like JSON but does not parse")
    if isinstance(value, dict) and len(value) == 1:
        (key, answer), = value.items()
        if key in ANSWER_KEYS and isinstance(answer, str):
            return ParsedReply(answer.strip())

    if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
        value = value["tool_calls"]
    items = value if isinstance(value, list) else [value]
    calls: list[dict[str, Any]] = []
    errors: list[str] = []
    for item in items:
        if len(calls) == MAX_TOOL_CALLS:
            errors.append(f"more than {MAX_TOOL_CALLS} tool calls; the rest were dropped")
            break
        call, error = _one_call(item, specs)
        if call is not None:
            calls.append(call)
        else:
            errors.append(error or "invalid tool call")
    if how == "partial":
        errors.insert(0, "JSON was incomplete and was closed")
    error = "; ".join(errors) or None
    if not calls:
        return ParsedReply(stripped, error=error or "no tool call")
    return ParsedReply("", calls, error)


def _unwrap(s: str) -> str:
    for pattern in (_TAGS, FENCE, _TAGS):
        match = pattern.match(s)
        if match:
            s = match.group(1).strip()
    return s


def _decode(s: str) -> tuple[Any, str | None]:
    """Decode JSON with bounded tolerance; returns (value, how) with how None on failure."""
    try:
        return json.loads(s), "json"
    except ValueError:
        pass
    try:
        value, _end = json.JSONDecoder().raw_decode(s)
        return value, "prefix"
    except ValueError:
        pass
    try:
        value = ast.literal_eval(s)
        if isinstance(value, dict | list):
            return value, "literal"
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    value = _close_truncated(s)
    if isinstance(value, dict | list):
        return value, "partial"
    return None, None


def _close_truncated(s: str) -> Any:
    """Complete JSON that was cut short (open strings, objects, lists); ``None`` if it is broken otherwise.

    Not ``langchain_core.utils.json.parse_partial_json``: when closing is not enough, that one drops characters
    from the end until something parses, so ``{"name": "search", "arguments": {"query": `` becomes a call with
    empty arguments and ``{{"query": "x"}}`` a call with none. Here a reply is only ever closed, never cut, and
    a malformed one stays plain text (tests/test_llm.py, test_garbage_becomes_plain_text).
    """
    closers: list[str] = []
    in_string = escaped = False
    for ch in s:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            closers.append("}" if ch == "{" else "]")
        elif ch in "}]" and (not closers or closers.pop() != ch):
            return None
    if not closers:
        return None
    body = (s[:-1] if escaped else s) + ('"' if in_string else "")
    for candidate in (body, body.rstrip().rstrip(",")):
        try:
            return json.loads(candidate + "".join(reversed(closers)))
        except ValueError:
            continue
    return None


def _canon(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip()).lower()


def _match_name(name: Any, specs: Sequence[ToolSpec]) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return None
    for spec in specs:
        if spec.name == name:
            return spec.name
    matches = [spec.name for spec in specs if _canon(spec.name) == _canon(name)]
    return matches[0] if len(matches) == 1 else None


def _one_call(item: Any, specs: Sequence[ToolSpec]) -> tuple[dict[str, Any] | None, str | None]:
    if not isinstance(item, dict):
        return None, f"expected a JSON object, got {type(item).__name__}"
    fn = item["function"] if isinstance(item.get("function"), dict) else item
    raw_name = next((fn[k] for k in _NAME_KEYS if k in fn), None)
    if raw_name is None:
        return _bare_arguments(item, specs)
    name = _match_name(raw_name, specs)
    if name is None:
        return None, f"unknown tool {str(raw_name)[:80]!r}"
    args = next((fn[k] for k in _ARG_KEYS if k in fn), None)
    if args is None:
        args = {k: v for k, v in fn.items() if k not in _NAME_KEYS and k not in ("id", "type")}
    if isinstance(args, str):
        decoded, how = _decode(args) if args.strip() else ({}, "json")
        if how is None or not isinstance(decoded, dict):
            return None, f"arguments of {name} are not a JSON object"
        args = decoded
    if not isinstance(args, dict):
        return None, f"arguments of {name} are not a JSON object"
    return {"name": name, "args": args, "id": new_tool_call_id(), "type": "tool_call"}, None


def _bare_arguments(item: dict[str, Any], specs: Sequence[ToolSpec]) -> tuple[dict[str, Any] | None, str | None]:
    """With a single tool, accept an object of its arguments (small models often omit the name)."""
    if len(specs) == 1 and item:
        spec = specs[0]
        keys = set(item)
        if keys <= set(spec.properties) and set(spec.required) <= keys:
            return {"name": spec.name, "args": dict(item), "id": new_tool_call_id(), "type": "tool_call"}, None
    return None, "JSON object names no tool"
