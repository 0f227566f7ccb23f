"""Agentic RAG: a tool-calling agent over the knowledge base and long-term memory, with a step budget in state.

``start_turn -> agent -> (tools -> agent)* -> finish | final_answer``

* ``start_turn`` sets the turn's budget (``max_tool_calls`` tool calls, capped to fit the run's recursion
  limit) and resets the counter ``tool_calls_used``.
* ``agent`` calls the model with the tools named in Context bound (knowledge search, code signatures, collection
  list, memory search/save by default). It keeps at most ``max_calls_per_step`` valid calls per reply, never
  more than the budget left, and records its verdict in ``agent_outcome``.
* ``route_agent``: ``tools`` (a ToolNode) for calls; ``finish`` for a text answer; ``final_answer`` when the
  agent gave nothing usable after its retries.
* ``route_after_tools``: back to ``agent`` while budget is left, else ``final_answer``: the model answers
  without tools from what the tools returned, or the top passages are quoted when it still gives nothing.

The conversation persists per ``thread_id``. Input: ``{"messages": [...]}``; output:
``{"messages", "final_response", "sources"}``. Tunables, including the agent's instructions, are on
:class:`graphs.context.AgenticRagContext`::

    graph.invoke({"messages": [("user", "Which function deposits into the ledger?")]},
                 context=AgenticRagContext(collection="code", max_tool_calls=4))
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import ToolNode

from graphs.context import AgenticRagContext
from graphs.state import AnsweredTurn, Counter, MessagesInput, TurnState
from nodes.agentic_rag import agent, available_tools, final_answer, finish, route_after_tools, route_agent, start_turn


class State(TurnState, total=False):
    """The conversation, the turn's budget and counter, the agent's verdict, and the answer."""

    turn_start: int
    tool_budget: int
    tool_calls_used: Counter
    agent_outcome: str
    fallbacks: list[str]


class Output(AnsweredTurn):
    """What callers get back: the answer (with its sources footer) and the sources the tools returned."""


builder = StateGraph(State, context_schema=AgenticRagContext, input_schema=MessagesInput, output_schema=Output)
builder.add_sequence([start_turn, agent])
builder.add_node("tools", ToolNode(available_tools(), handle_tool_errors=True))
builder.add_node(final_answer)
builder.add_node(finish)
builder.add_edge(START, "start_turn")
builder.add_conditional_edges("agent", route_agent, ["tools", "finish", "final_answer"])
builder.add_conditional_edges("tools", route_after_tools, ["agent", "final_answer"])
builder.add_edge("final_answer", END)
builder.add_edge("finish", END)

graph = builder.compile(name="agentic_rag")
