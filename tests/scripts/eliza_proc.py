"""A separate process for the Eliza resume test: ``python eliza_proc.py first|resume``.

``first`` starts a decision cycle whose LLM hangs inside ``decide`` (the test kills it there).
``resume`` continues the same thread in a new process from its last checkpoint.
"""

import json
import sys

from graphs.eliza import builder
from nodes.models import scripted_model
from tests.fakes import ScriptedChat, sleep_on
from xmrt.redis.persistence import redis_graph

graph = redis_graph(builder)
config = {"configurable": {"thread_id": "eliza:killed"}}
context = {"agent_id": "killed", "knowledge_k": 0}
proposals = [
    {"id": "k1", "title": "Fund node operators", "criteria": {"community_support": 0.9, "alignment": 0.8}},
    {"id": "k2", "title": "Buy a yacht", "criteria": {"community_support": 0.1, "treasury_impact": 0.9}},
]

if sys.argv[1] == "first":
    with scripted_model(ScriptedChat(replies=['{"verdict": "approve"}'], on_call=sleep_on(1, 600))):
        graph.invoke({"proposals": proposals}, config, context=context)
    sys.exit("the cycle should have been killed")

before = graph.get_state(config)
with scripted_model(ScriptedChat(replies=['{"verdict": "approve", "reason": "resumed"}'])):
    out = graph.invoke(None, config, context=context)
after = graph.get_state(config)
print(json.dumps({"next_before": list(before.next), "decisions": [d["id"] for d in out["decisions"]],
                  "next_after": list(after.next)}))
