"""The agentic RAG graph's nodes (graphs/agentic_rag.py): a tool-calling agent with a step budget in state.

* ``start_turn`` resets the turn: the budget (``max_tool_calls``, capped so the run always fits its recursion
  limit) and the tool-call counter.
* ``agent`` calls the model with the allowed tools bound. Calls to unknown tools and malformed calls are
  dropped; a reply with valid calls keeps at most ``max_calls_per_step`` of them and never more than the budget
  left. With ``first_tool`` set, the turn's first step must call that tool. A reply with neither valid calls
  nor text is retried ``max_attempts`` times. The verdict is written
  to state as ``agent_outcome`` (``tools``, ``answer`` or ``no_reply``).
* ``route_after_tools`` goes back to the agent while budget is left, else to ``final_answer``, which answers
  without tools from what was gathered (an extractive answer when the model still gives nothing).
* ``finish`` turns the agent's own answer into ``final_response`` with the gathered sources.

Sources are the passages the tools returned this turn that pass the same relevance threshold as a search
(similarity to the question), plus any whose path the answer names.

Text in tool results is data: the budget is enforced here, so a document that says "call tool X 100 times"
cannot push the agent past it.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from graphs.context import AgenticRagContext, context_of
from graphs.state import last_human_index, loop_cap, message_text
from nodes.citations import clean_citations, format_passages, sources_of, with_footer
from nodes.evidence import passage_units
from nodes.grounding import ground, stream_answer
from nodes.models import ask, ask_text, bounded_model, chat_model
from nodes.retrieval import embedder, keep_relevant
from xmrt import services

log = logging.getLogger(__name__)

#: Supersteps of a turn besides the agent/tools rounds (start_turn, the last agent call, final_answer or finish).
_FIXED_SUPERSTEPS = 4


def available_tools() -> list[Any]:
    """Every tool the agent can be given: knowledge search, code signatures, collections, memory."""
    from tools.knowledge import KNOWLEDGE_TOOLS
    from tools.memory import MEMORY_TOOLS

    return [*KNOWLEDGE_TOOLS, *MEMORY_TOOLS]


def _selected_tools(ctx: AgenticRagContext) -> list[Any]:
    wanted = set(ctx.tools)
    return [t for t in available_tools() if t.name in wanted]


def start_turn(state: dict[str, Any], runtime: Runtime, config: RunnableConfig) -> dict[str, Any]:
    """Reset the budget and counter for the new question."""
    ctx = context_of(runtime, AgenticRagContext)
    messages = state.get("messages") or []
    start = last_human_index(messages) or 0
    budget = max(0, int(ctx.max_tool_calls))
    cap = loop_cap(config, _FIXED_SUPERSTEPS)
    if cap is not None and cap < budget:
        log.warning("recursion limit allows %d of %d tool calls", cap, budget)
        budget = cap
    question = message_text(messages[start]).strip() if messages else ""
    return {"question": question, "turn_start": start, "tool_budget": budget,
            "tool_calls_used": -int(state.get("tool_calls_used") or 0), "agent_outcome": "", "final_response": "",
            "sources": [], "fallbacks": []}


def _history(messages: list, start: int, max_history: int) -> list:
    """Earlier turns as plain text messages (no tool traffic), the last ``max_history`` of them."""
    earlier = []
    for m in messages[:start]:
        if m.type == "human" and message_text(m).strip():
            earlier.append(HumanMessage(message_text(m)))
        elif m.type == "ai" and not getattr(m, "tool_calls", None) and message_text(m).strip():
            earlier.append(AIMessage(message_text(m)))
    return earlier[-max_history:] if max_history > 0 else []


def _looks_like_failed_call(reply: Any, text: str) -> bool:
    meta = getattr(reply, "response_metadata", None) or {}
    return bool(getattr(reply, "invalid_tool_calls", None) or meta.get("tool_call_error")) or \
        text.lstrip().startswith(("{", "```json", "<tool_call>"))


def agent(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """One agent step: call tools (within the budget) or answer."""
    ctx = context_of(runtime, AgenticRagContext)
    used = int(state.get("tool_calls_used") or 0)
    budget = int(state.get("tool_budget") or 0)
    remaining = max(0, budget - used)
    tools = _selected_tools(ctx) if remaining else []
    allowed = {t.name for t in tools}
    model = chat_model(ctx.model)
    if tools:
        forced = ctx.first_tool if ctx.first_tool in allowed and remaining == budget else None
        try:
            model = model.bind_tools(tools, tool_choice=forced) if forced else model.bind_tools(tools)
        except NotImplementedError:
            log.warning("the chat model cannot call tools; the agent answers without them")
            tools, allowed = [], set()
    if ctx.max_new_tokens > 0:
        model = model.bind(max_tokens=ctx.max_new_tokens)
    messages = state["messages"]
    start = int(state.get("turn_start") or 0)
    prompt = [SystemMessage(ctx.instructions.format(budget=budget, remaining=remaining)),
              *_history(messages, start, ctx.max_history), *messages[start:]]

    def step(reply: Any) -> dict[str, Any] | None:
        """The state update for a usable reply (valid tool calls, or a plain answer); None for an unusable one."""
        calls = [c for c in (getattr(reply, "tool_calls", None) or []) if c.get("name") in allowed]
        text = message_text(reply).strip()
        if calls:
            keep = calls[: min(remaining, max(1, int(ctx.max_calls_per_step)))]
            if len(keep) < len(reply.tool_calls):
                log.warning("dropped %d of %d tool calls (unknown tool, per-step limit or budget)",
                            len(reply.tool_calls) - len(keep), len(reply.tool_calls))
            message = AIMessage(content=text, tool_calls=[{**c, "id": c.get("id") or f"call_{i}_{used}"}
                                                         for i, c in enumerate(keep)])
            return {"messages": [message], "tool_calls_used": len(keep), "agent_outcome": "tools"}
        if text and not _looks_like_failed_call(reply, text) and not getattr(reply, "tool_calls", None):
            return {"messages": [AIMessage(text)], "agent_outcome": "answer"}
        return None

    update, _calls = ask(model, prompt, ctx.max_attempts, step)
    return update or {"agent_outcome": "no_reply",
                      "fallbacks": [*(state.get("fallbacks") or []), "agent: no usable reply"]}


def route_agent(state: dict[str, Any]) -> Literal["tools", "finish", "final_answer"]:
    """Run the tools the agent called, take its answer, or answer without it when it gave nothing usable."""
    outcome = state.get("agent_outcome")
    if outcome == "tools":
        return "tools"
    return "finish" if outcome == "answer" else "final_answer"


def route_after_tools(state: dict[str, Any]) -> Literal["agent", "final_answer"]:
    """Back to the agent while the budget lasts; when it is spent, answer from what was gathered."""
    used = int(state.get("tool_calls_used") or 0)
    return "agent" if used < int(state.get("tool_budget") or 0) else "final_answer"


def _items(content: str) -> list[Any]:
    try:
        value = json.loads(content)
    except (TypeError, ValueError):
        return []
    if isinstance(value, dict):
        value = [value]
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def gathered_passages(messages: list, start: int, max_chars: int = 1500) -> list[dict[str, Any]]:
    """Passages from this turn's tool results (knowledge hits, signatures, memories), deduplicated, numbered."""
    out: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    for m in messages[start:]:
        if not isinstance(m, ToolMessage) or getattr(m, "status", "success") == "error":
            continue
        content = message_text(m)
        for item in _items(content):
            if item.get("source"):
                text = item.get("text") or item.get("signature") or item.get("symbol") or ""
                passage = {"id": f"{item['source']}:{item.get('start_line') or item.get('line') or ''}",
                           "path": item["source"], "start_line": item.get("start_line") or item.get("line"),
                           "text": str(text)[:max_chars], "score": item.get("score"), "similarity": None,
                           "tool": m.name}
            elif item.get("key") and item.get("text"):
                passage = {"id": f"memory:{item['key']}", "path": f"memory:{item['key']}", "start_line": None,
                           "text": str(item["text"])[:max_chars], "score": item.get("score"), "similarity": None,
                           "tool": m.name}
            else:
                continue
            marker = (passage["path"], passage["start_line"], passage["text"][:120])
            if marker not in seen and passage["text"].strip():
                seen.add(marker)
                out.append(passage)
    return [{**p, "n": i} for i, p in enumerate(out, 1)]


def _final(text: str, passages: list[dict[str, Any]], ctx: AgenticRagContext, question: str,
           runtime: Runtime) -> tuple[str, list[dict]]:
    """The grounded answer (nodes.grounding) with its sources footer, streamed word by word."""
    answer, _ = clean_citations(text, (p["n"] for p in passages))
    result = ground(answer, question, passage_units(passages), embedder(), threshold=ctx.grounding_threshold,
                    min_coverage=ctx.min_coverage,
                    dont_know="I don't know: the tools returned nothing that answers this.")
    stream_answer(runtime, result.answer)
    sources = sources_of(passages, result.cited)
    return with_footer(result.answer, sources), sources


def _relevant_gathered(state: dict[str, Any], ctx: AgenticRagContext, answer: str = "") -> list[dict[str, Any]]:
    """This turn's tool results that are relevant to the question (or named in the answer), numbered."""
    passages = gathered_passages(state["messages"], int(state.get("turn_start") or 0), ctx.max_tool_result_chars)
    if not passages:
        return []
    return keep_relevant(services.config(), state.get("question") or "", passages, ctx.min_similarity,
                         ctx.relevance_ratio, keep_paths=answer)


def final_answer(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Answer without tools from what the tools returned (budget spent, or the agent gave nothing usable)."""
    ctx = context_of(runtime, AgenticRagContext)
    passages = _relevant_gathered(state, ctx)
    spent = int(state.get("tool_calls_used") or 0) >= int(state.get("tool_budget") or 0)
    reason = (f"the tool budget of {state.get('tool_budget', 0)} calls is spent" if spent
              else "the agent gave no usable reply")
    prompt = [SystemMessage(ctx.final_prompt.format(passages=format_passages(passages, ctx.max_passage_chars),
                                                    reason=reason)),
              HumanMessage(state.get("question") or "")]
    # No tools are bound here; a reply that still holds tool calls has no text and counts as unusable.
    text, _calls = ask_text(bounded_model(ctx), prompt, ctx.max_attempts,
                            lambda t: None if not t.strip() or t.lstrip().startswith("{") else t.strip())
    fallbacks = list(state.get("fallbacks") or [])
    if text is None:
        fallbacks.append(f"final_answer: no reply ({reason}), grounded on the tool results")
    final, sources = _final(text or "", passages, ctx, state.get("question") or "", runtime)
    return {"final_response": final, "sources": sources, "messages": [AIMessage(final)], "fallbacks": fallbacks}


def finish(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """The agent answered: keep what the tool results support, attach their sources (the reply is replaced)."""
    ctx = context_of(runtime, AgenticRagContext)
    last = state["messages"][-1]
    text = message_text(last)
    final, sources = _final(text, _relevant_gathered(state, ctx, text), ctx, state.get("question") or "", runtime)
    return {"final_response": final, "sources": sources, "messages": [AIMessage(final, id=last.id)]}
