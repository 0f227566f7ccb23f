"""The orchestrator: routing by type (explicit and classified), error results, registry, locks, monitoring."""

import pytest

from graphs.context import OrchestratorContext
from graphs.orchestrator import builder
from nodes.models import scripted_model
from nodes.orchestrator import classify_request, question_route
from tests.fakes import ScriptedChat
from xmrt.eliza import DecisionLedger
from xmrt.redis.coordination import AgentLock
from xmrt.redis.monitoring import read_node_latencies
from xmrt.redis.persistence import redis_graph
from xmrt.redis.registry import read_registry


def proposal(pid, **criteria):
    return {"id": pid, "title": f"Proposal {pid}", "description": "Fund something.", "criteria": criteria}


def run(graph, inputs, thread="orch", **ctx):
    return graph.invoke(inputs, {"configurable": {"thread_id": thread}},
                        context=OrchestratorContext(use_llm=False, **ctx))


def test_classification_is_deterministic_and_explicit_type_wins():
    ctx = OrchestratorContext()
    assert classify_request({"type": "question", "question": "What is XMRT?", "mode": "rag"}, ctx)[0] == "rag"
    assert classify_request({"question": "Why did the treasury shrink?"}, ctx)[0] == "rat"
    assert classify_request({"question": "Which function records a deposit?"}, ctx)[0] == "agentic_rag"
    assert classify_request({"question": "What is the DAO fee?"}, ctx)[0] == "rag"
    assert classify_request({"id": "p1", "success": True}, ctx)[0] == "self_improve"
    assert classify_request({"source": "docs/"}, ctx)[0] == "ingest"
    assert classify_request({"title": "Fund audits", "criteria": {}}, ctx)[0] == "eliza"
    assert classify_request({"type": "event", "event": {"id": "e"}}, ctx)[0] == "eliza"
    # Explicit type wins over the fields: a "feedback" with a question field is feedback.
    feedback = {"type": "feedback", "question": "x", "id": "a", "success": False}
    assert classify_request(feedback, ctx)[0] == "self_improve"
    route, why = classify_request({"type": "gossip"}, ctx)
    assert route == "reject" and "unknown request type 'gossip'" in why
    route, why = classify_request({"colour": "blue"}, ctx)
    assert route == "reject" and "cannot tell the request type" in why
    assert classify_request("not an object", ctx)[0] == "reject"
    assert classify_request({"type": "question", "question": "x", "mode": "oracle"}, ctx)[0] == "reject"
    assert question_route("Explain step by step how payouts work") == "rat"


def test_each_request_type_takes_its_route_and_the_registry_records_it(app_config, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "treasury.md").write_text("# Treasury\n\nSpending above 100 XMR needs a DAO vote.\n")
    graph = redis_graph(builder)
    requests = [
        {"type": "ingest", "source": str(docs), "collection": "orch-docs"},
        {"type": "question", "question": "Who approves spending?", "mode": "rag", "collection": "orch-docs"},
        {"type": "question", "question": "Why is the treasury audited?", "mode": "rat", "collection": "orch-docs"},
        {"type": "question", "question": "What do you remember?", "mode": "agentic", "collection": "orch-docs"},
        {"type": "proposal", "id": "p1", "title": "Fund audits", "criteria": {"community_support": 0.9,
                                                                             "alignment": 0.9}},
        {"type": "event", "event": proposal("e1", technical_risk=0.95, community_support=0.1)},
        {"type": "feedback", "id": "p1", "success": True},
        {"type": "gossip", "text": "hello"},
    ]
    llm = ScriptedChat(replies=["1. Audits find payout errors.\n2. The DAO votes on spending."])
    with scripted_model(llm):
        out = run(graph, {"requests": requests}, agent_id="orch-agent")
    results = out["results"]
    assert [r["index"] for r in results] == list(range(len(requests)))
    assert [r["route"] for r in results] == ["ingest", "rag", "rat", "agentic_rag", "eliza", "eliza",
                                             "self_improve", "reject"]
    ingest, rag, rat, agentic, p1, e1, feedback, unknown = results
    assert ingest["ok"] and ingest["summary"]["added"] == 1 and ingest["summary"]["collection"] == "orch-docs"
    assert rag["ok"] and rag["answer"] and rat["ok"] and rat["answer"] and agentic["ok"]
    # The proposal and the event were decided together in one Eliza cycle of the agent.
    assert p1["decisions"][0]["id"] == "p1" and p1["decisions"][0]["decision"] == "approve"
    assert e1["decisions"][0]["id"] == "e1" and e1["decisions"][0]["decision"] == "reject"
    assert feedback["recorded"] == [{"id": "p1", "success": True, "correct": True}]
    assert not unknown["ok"] and "unknown request type 'gossip'" in unknown["error"]
    assert out["summary"]["failed"] == 1 and out["summary"]["by_route"]["eliza"] == 2
    assert DecisionLedger(app_config, "orch-agent").get("p1")["outcome"]["success"] is True

    registry = read_registry(app_config)
    assert set(registry) >= {"rag", "rat", "agentic_rag", "eliza", "ingest", "self_improve"}
    for name in ("rag", "rat", "agentic_rag", "eliza", "ingest", "self_improve"):
        assert registry[name]["status"] == "ok" and registry[name]["runs"] == 1, (name, registry[name])
        assert registry[name]["avg_ms"] > 0 and registry[name]["last_run_at"] > 0
    # The graphs it ran recorded their node latencies (the orchestrator adds the monitor itself).
    nodes = read_node_latencies(app_config)["nodes"]
    assert {"eliza.decide", "self_improve.update_weights", "rag.retrieve", "rat.draft", "ingest.finish"} <= set(nodes)


def test_single_request_unclassifiable_input_and_failures_give_error_results(app_config):
    graph = redis_graph(builder)
    out = run(graph, {"request": {"colour": "blue"}}, thread="single")
    assert out["results"] == [{"index": 0, "type": None, "route": "reject", "ok": False,
                               "error": out["results"][0]["error"]}]
    assert "set 'type'" in out["results"][0]["error"]
    out = run(graph, {"requests": []}, thread="empty")
    assert out["results"] == [] and "no requests given" in out["summary"]["note"]
    # A handler that fails (a missing source) gives an error result and the registry says so.
    out = run(graph, {"requests": [{"type": "ingest", "source": "/no/such/dir"},
                                   {"type": "proposal", "id": "bad", "title": "x", "criteria": {"risk": 3}}]},
              thread="failing")
    bad_ingest, bad_proposal = out["results"]
    assert not bad_ingest["ok"] and bad_ingest["error"]
    assert not bad_proposal["ok"] and "outside [0,1]" in bad_proposal["error"]
    registry = read_registry(app_config)
    assert registry["ingest"]["status"] == "error" and registry["ingest"]["last_error"]
    # A refused proposal is the request's error, not the component's: Eliza ran fine.
    assert registry["eliza"]["status"] == "ok" and registry["eliza"]["errors"] == 0


def test_requests_beyond_the_caps_get_error_results(app_config):
    graph = redis_graph(builder)
    requests = [{"type": "gossip"} for _ in range(5)]
    out = run(graph, {"requests": requests}, thread="capped", max_requests=3)
    assert [r["ok"] for r in out["results"]] == [False] * 5
    assert "at most 3 requests" in out["results"][4]["error"]
    out = graph.invoke({"requests": requests}, {"configurable": {"thread_id": "limited"}, "recursion_limit": 7},
                       context=OrchestratorContext())
    assert len(out["results"]) == 5 and "recursion_limit" in out["results"][-1]["error"]


def test_a_busy_agent_gives_an_error_result_not_a_crash(app_config, redis_client):
    lock = AgentLock(app_config, "busy-agent", ttl=30)
    assert lock.try_acquire("another cycle")
    try:
        out = run(redis_graph(builder), {"request": proposal("b1", alignment=0.9)}, thread="busy",
                  agent_id="busy-agent", lock_wait=0.3)
    finally:
        lock.release()
    (result,) = out["results"]
    assert result["route"] == "eliza" and not result["ok"]
    assert "agent 'busy-agent' is busy" in result["error"] and "(another cycle)" in result["error"]
    assert read_registry(app_config)["eliza"]["status"] == "error"


@pytest.mark.parametrize("name", ["orchestrator"])
def test_the_exported_graph_has_no_checkpointer(name):
    from graphs.orchestrator import graph

    assert graph.checkpointer is None and graph.name == name


def test_the_served_graph_runs_async_without_a_checkpointer(app_config):
    """As the served API runs it: the exported graph, no checkpointer or store, async."""
    import asyncio

    from graphs.orchestrator import graph

    requests = [{"type": "proposal", "id": "a1", "title": "Fund docs", "criteria": {"alignment": 0.9}},
                {"type": "nonsense"}]
    out = asyncio.run(graph.ainvoke({"requests": requests}, context={"use_llm": False, "agent_id": "served"}))
    assert [r["route"] for r in out["results"]] == ["eliza", "reject"]
    assert out["results"][0]["decisions"][0]["decision"] == "approve"


def test_served_ingest_requests_obey_the_apis_ingest_roots(app_config, tmp_path, monkeypatch):
    """Through the orchestrator, an API caller cannot ingest a local path the ingest graph's API policy refuses."""
    monkeypatch.setenv("LANGSERVE_GRAPHS", '{"orchestrator": "x"}')  # what langgraph-api sets when serving
    outside = tmp_path / "private"
    outside.mkdir()
    served = {"thread_id": "served-ingest", "langgraph_auth_user_id": "bob",  # what the server puts in every run
              "langgraph_auth_permissions": ["user"]}
    out = redis_graph(builder).invoke({"request": {"type": "ingest", "source": str(outside)}},
                                      {"configurable": served}, context=OrchestratorContext(use_llm=False))
    (result,) = out["results"]
    assert result["route"] == "ingest" and not result["ok"]
    assert "outside the allowed roots" in result["error"]
    # A run inside the server that carries no authenticated user is refused outright (fail closed).
    out = run(redis_graph(builder), {"request": {"type": "ingest", "source": str(outside)}}, thread="anon-ingest")
    assert "no authenticated user" in out["results"][0]["error"]
