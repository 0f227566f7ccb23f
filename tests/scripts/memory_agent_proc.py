"""A separate process for the resume-after-kill test: ``python memory_agent_proc.py first|resume THREAD``.

``first`` answers one question, then asks a second and hangs inside the model (the test kills it there).
``resume`` opens the same thread in a new process and continues it from its last checkpoint.
Configuration (Redis port, data dir, key prefix) comes from the environment.
"""

import json
import sys

from graphs.memory_agent import builder
from nodes.models import scripted_model
from tests.fakes import ScriptedChat, sleep_on
from xmrt.redis.persistence import redis_graph

mode, thread = sys.argv[1], sys.argv[2]
graph = redis_graph(builder)
config = {"configurable": {"thread_id": thread}}
context = {"agent_id": "resume-agent", "grounded": False}  # the model's own words, as scripted

if mode == "first":
    model = ScriptedChat(replies=["The treasury holds 1200 XMR.", "never sent"], on_call=sleep_on(2, 600))
    with scripted_model(model):
        graph.invoke({"messages": [("user", "How big is the treasury?")]}, config, context=context)
        print("TURN1_DONE", flush=True)
        graph.invoke({"messages": [("user", "And who controls it?")]}, config, context=context)
    sys.exit("the second turn should have been killed")

before = graph.get_state(config)
with scripted_model(ScriptedChat(replies=["A 3-of-5 multisig controls it."])):
    graph.invoke(None, config, context=context)
after = graph.get_state(config)
print(json.dumps({
    "next_before": list(before.next),
    "messages_before": [[m.type, m.content] for m in before.values["messages"]],
    "messages_after": [[m.type, m.content] for m in after.values["messages"]],
    "next_after": list(after.next),
}))
