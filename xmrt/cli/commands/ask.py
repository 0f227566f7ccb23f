"""``xmrt ask`` and ``xmrt chat``: questions to the reasoning graphs over the knowledge base.

``xmrt ask "QUESTION" [--mode rag|rat|agentic] [--thread ID] [--collection NAME] [--json]`` streams the answer,
then prints its sources and, for RAT, the reflections and the confidence. With ``--json`` the streamed text
goes to stderr and stdout gets one JSON object (``final_response``, ``sources`` with their ``path``, and for RAT
``reflections`` and ``confidence``). ``xmrt chat`` asks question after question on one thread until end of
input (Ctrl-D), ``/exit`` or Ctrl-C at the prompt; Ctrl-C during an answer cancels that answer only.

Threads persist in Redis: ``--thread ID`` continues a conversation, also across processes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import uuid
from typing import Any, TextIO

from xmrt.cli import CommandTree

MODES = ("rag", "rat", "agentic")
_MODULES = {"rag": "graphs.rag", "rat": "graphs.rat", "agentic": "graphs.agentic_rag"}


def _builder(mode: str):
    import importlib

    return importlib.import_module(_MODULES[mode]).builder


def build_context(mode: str, args: argparse.Namespace, config) -> Any:
    """The Context of the mode's graph from the command-line options."""
    from graphs.context import AgenticRagContext, RagContext, RatContext

    kwargs: dict[str, Any] = {"collection": args.collection}
    if args.k:
        kwargs["k"] = args.k
    if args.model:
        kwargs["model"] = args.model
    if args.max_new_tokens:
        kwargs["max_new_tokens"] = args.max_new_tokens
    if mode == "rag" and args.answer_style:
        kwargs["answer_style"] = args.answer_style
    if mode == "rat":
        if args.reflection_steps is not None:
            kwargs["reflection_steps"] = args.reflection_steps
        return RatContext(**kwargs)
    if mode == "agentic":
        if args.max_tool_calls is not None:
            kwargs["max_tool_calls"] = args.max_tool_calls
        if args.agent:
            kwargs["agent_id"] = args.agent
        return AgenticRagContext(**kwargs)
    return RagContext(**kwargs)


def graph_input(mode: str, question: str) -> dict[str, Any]:
    """What the mode's graph takes: a question (RAT) or a new user message."""
    return {"question": question} if mode == "rat" else {"messages": [("user", question)]}


def _comparable(text: str) -> str:
    from nodes.citations import normalized

    return normalized(re.sub(r"\[\d+(?:\s*,\s*\d+)*\]", " ", text))


def run_turn(graph, mode: str, question: str, thread_id: str, context: Any, out: TextIO) -> dict[str, Any]:
    """Ask one question on a thread, streaming the answer's tokens to ``out``; returns the result record."""
    from nodes.citations import strip_footer

    config = {"configurable": {"thread_id": thread_id}}
    streamed: list[str] = []
    started = time.perf_counter()
    # The graphs stream their grounded answer word by word on the custom stream (nodes.grounding); the model's
    # raw tokens are not shown, because a sentence the passages do not support never reaches the user.
    for chunk in graph.stream(graph_input(mode, question), config, context=context, stream_mode="custom"):
        text = chunk.get("token") if isinstance(chunk, dict) else None
        if text:
            out.write(text)
            out.flush()
            streamed.append(text)
    values = graph.get_state(config).values
    final = values.get("final_response") or ""
    body = strip_footer(final)
    shown = "".join(streamed)
    if not shown.strip():
        out.write(body)
    elif _comparable(shown) != _comparable(body):
        out.write(f"\n\n(final answer)\n{body}")
    out.write("\n")
    out.flush()
    record: dict[str, Any] = {
        "mode": mode,
        "thread_id": thread_id,
        "question": question,
        "final_response": final,
        "sources": values.get("sources") or [],
        "seconds": round(time.perf_counter() - started, 2),
    }
    if mode == "rat":
        record["reflections"] = values.get("reflections") or []
        record["confidence"] = values.get("confidence", 0.0)
        record["support"] = values.get("support") or []
    if mode == "rag":
        record["standalone_question"] = values.get("standalone_question")
    return record


def _label(source: dict[str, Any]) -> str:
    from nodes.citations import source_label

    return source_label(source)


def print_details(record: dict[str, Any], out: TextIO) -> None:
    """The sources and, for RAT, the reflections and the confidence."""
    sources = record["sources"]
    if sources:
        out.write("\nSources:\n")
        for s in sources:
            sim = f"  similarity {s['similarity']:.2f}" if isinstance(s.get("similarity"), int | float) else ""
            out.write(f"  [{s['n']}] {_label(s)}{sim}{'  (cited)' if s.get('cited') else ''}\n")
    else:
        out.write("\nSources: none\n")
    if record["mode"] == "rat":
        reflections = record["reflections"]
        out.write(f"\nReflections ({len(reflections)}):\n")
        for r in reflections:
            paths = ", ".join(_label(s) for s in r["sources"]) or "no relevant passages"
            flag = "changed" if r["changed"] else "unchanged"
            out.write(f"  round {r['round']} step {r['step']} ({flag}); retrieved: {paths}\n")
            out.write(f"    before: {r['before']}\n")
            if r["changed"]:
                out.write(f"    after:  {r['after']}\n")
            if r.get("note"):
                out.write(f"    note:   {r['note']}\n")
        support = record.get("support") or []
        supported = sum(1 for s in support if s["supported"])
        out.write(f"\nConfidence: {record['confidence']:.2f} ({supported} of {len(support)} answer sentences "
                  "supported by retrieved passages)\n")
    out.write(f"({record['seconds']:.1f}s, thread {record['thread_id']})\n")
    out.flush()


def json_record(record: dict[str, Any]) -> str:
    """The one-line JSON object of ``--json``."""
    keys = ["mode", "thread_id", "question", "final_response", "sources"]
    if record["mode"] == "rat":
        keys += ["reflections", "confidence", "support"]
    if record["mode"] == "rag":
        keys.append("standalone_question")
    return json.dumps({k: record[k] for k in keys}, ensure_ascii=False, default=str)


def _prepare(args: argparse.Namespace):
    from nodes.retrieval import missing_collection_message
    from xmrt.config import get_config
    from xmrt.errors import UserError
    from xmrt.kb.index import KnowledgeIndex, validate_collection_name
    from xmrt.redis.persistence import redis_graph

    config = get_config()
    validate_collection_name(args.collection)
    if args.collection not in KnowledgeIndex.list_collections(config):
        raise UserError(missing_collection_message(config, args.collection))
    graph = redis_graph(_builder(args.mode), config)
    return graph, build_context(args.mode, args, config)


def _new_thread(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _ask(args: argparse.Namespace) -> int:
    from xmrt.errors import UserError

    if not args.question.strip():
        raise UserError("the question is empty")
    graph, context = _prepare(args)
    thread_id = args.thread or _new_thread("ask")
    out = sys.stderr if args.json else sys.stdout
    record = run_turn(graph, args.mode, args.question.strip(), thread_id, context, out)
    print_details(record, out)
    if args.json:
        print(json_record(record), flush=True)
    else:
        print(f"(continue this conversation with --thread {thread_id})", file=sys.stderr)
    return 0


def _chat(args: argparse.Namespace) -> int:
    graph, context = _prepare(args)
    thread_id = args.thread or _new_thread("chat")
    print(f"xmrt chat: mode {args.mode}, collection {args.collection!r}, thread {thread_id}. "
          "Ctrl-D or /exit to leave; Ctrl-C cancels an answer.", file=sys.stderr)
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            break
        question = line.strip()
        if not question:
            continue
        if question in ("/exit", "/quit"):
            break
        sys.stdout.write("xmrt> ")
        try:
            record = run_turn(graph, args.mode, question, thread_id, context, sys.stdout)
        except KeyboardInterrupt:
            print("\n(answer cancelled)", file=sys.stderr)
            continue
        print_details(record, sys.stdout)
    print(f"bye (thread {thread_id})", file=sys.stderr)
    return 0


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=MODES, default="rag", help="rag (default), rat or agentic")
    p.add_argument("--thread", default=None, help="thread id: continue that conversation (default: a new one)")
    p.add_argument("--collection", default="default", help="knowledge-base collection (default: default)")
    p.add_argument("-k", type=int, default=0, help="passages per search (default: the graph's)")
    p.add_argument("--reflection-steps", type=int, default=None, help="RAT: passes of revision over the draft")
    p.add_argument("--max-tool-calls", type=int, default=None, help="agentic: tool-call budget per question")
    p.add_argument("--agent", default=None, help="agentic: agent id whose memories the memory tools use")
    p.add_argument("--model", default="", help="chat model name (default: the configured one)")
    p.add_argument("--max-new-tokens", type=int, default=0, help="token limit per model reply")
    p.add_argument("--answer-style", choices=("auto", "generate", "quote"), default=None,
                   help="rag: who words the answer: generate (the model; only supported sentences are shown), "
                        "quote (the best passage sentences, no model call), auto (default: generate with an "
                        "OpenAI-compatible model, quote with the bundled offline model)")


def register(cli: CommandTree) -> None:
    """Add ``xmrt ask`` and ``xmrt chat``."""
    p = cli.command("ask", help="answer a question from the knowledge base (RAG, RAT or agentic RAG)",
                    handler=_ask, description=__doc__)
    p.add_argument("question", help="the question")
    _options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    c = cli.command("chat", help="interactive questions on one thread (RAG, RAT or agentic RAG)", handler=_chat,
                    description=__doc__)
    _options(c)
