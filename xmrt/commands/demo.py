"""``xmrt demo``: the main job on embedded defaults.

A question is answered by the memory agent and remembered; a second run, on a new thread,
asks a follow-up and shows the memory it recalled from the first.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

from xmrt.cli import CommandTree

FIRST = "Our DAO treasury holds 1,200 XMR and the community wants to fund node operators. What should we do first?"
SECOND = "How much XMR does our treasury hold, and what does the community want to fund?"


def _ask(graph, question: str, thread_id: str, agent_id: str) -> dict:
    from langchain_core.messages import AIMessageChunk

    print(f"\n[{thread_id}] you: {question}\n[{thread_id}] eliza: ", end="", flush=True)
    config = {"configurable": {"thread_id": thread_id}}
    streamed = False
    started = time.perf_counter()
    for chunk, meta in graph.stream(
        {"messages": [("user", question)]}, config, context={"agent_id": agent_id}, stream_mode="messages"
    ):
        if isinstance(chunk, AIMessageChunk) and meta.get("langgraph_node") == "respond" and chunk.content:
            print(chunk.content, end="", flush=True)
            streamed = True
    state = graph.get_state(config).values
    if not streamed:  # a provider that does not stream: print the final answer
        print(state["messages"][-1].content, end="")
    print(f"\n[{thread_id}] ({time.perf_counter() - started:.1f}s, {len(state['messages'])} messages in thread)")
    return state


def _demo(args: argparse.Namespace) -> int:
    from graphs.memory_agent import builder
    from xmrt.config import get_config
    from xmrt.llm import describe_llm
    from xmrt.persistence import redis_graph
    from xmrt.redis_server import describe, ensure_redis

    config = get_config()
    ensure_redis(config)
    llm = describe_llm(config)
    print(f"Redis: {describe(config.redis_url)}   LLM: {llm.get('provider')} {llm.get('model')}", file=sys.stderr)
    print("loading models (the local model takes ~20 s the first time)...", file=sys.stderr)
    graph = redis_graph(builder, config)
    run = uuid.uuid4().hex[:6]
    _ask(graph, args.question, f"demo-{run}-1", args.agent)
    state = _ask(graph, args.followup, f"demo-{run}-2", args.agent)
    recalled = state.get("recalled") or []
    print(f"\nrecalled {len(recalled)} memor{'y' if len(recalled) == 1 else 'ies'} from earlier runs:")
    for m in recalled:
        first_line = m["text"].splitlines()[0]
        print(f"  - ({m.get('score', 0):.2f}) {first_line[:110]}")
    return 0


def register(cli: CommandTree) -> None:
    """Add ``xmrt demo``."""
    p = cli.command(
        "demo",
        help="run the main job: answer a question, remember it, recall it in a second run",
        handler=_demo,
        description=__doc__,
    )
    p.add_argument("--question", default=FIRST, help="the first question")
    p.add_argument("--followup", default=SECOND, help="the follow-up, asked on a new thread")
    p.add_argument("--agent", default="eliza-demo", help="agent id whose memories are used (default: eliza-demo)")
