import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from graphs.eliza import builder as eliza_builder
from graphs.self_improve import builder as improve_builder
from nodes.decision import parse_verdict
from nodes.models import scripted_model
from tests.conftest import ROOT, subprocess_env
from tests.fakes import ScriptedChat
from xmrt.bench.proposals import generate
from xmrt.eliza import DecisionLedger, DecisionModel, proposal_from_dict
from xmrt.memory import AgentMemory
from xmrt.persistence import redis_graph

XMRT = [sys.executable, "-m", "xmrt.cli"]


def proposal(pid, **criteria):
    return {"id": pid, "title": f"Proposal {pid}", "description": "Fund something useful.", "category": "dev",
            "amount_xmr": 10, "criteria": criteria}


def cycle(graph, proposals, agent, **ctx):
    return graph.invoke({"proposals": proposals}, {"configurable": {"thread_id": f"eliza:{agent}"}},
                        context={"agent_id": agent, "knowledge_k": 0, **ctx})


def test_parse_verdict_is_defensive():
    assert parse_verdict('{"verdict": "approve", "reason": "strong support"}') == ("approve", "strong support")
    assert parse_verdict('noise {"broken": } then {"verdict": "REJECT"} end')[0] == "reject"
    assert parse_verdict("I would defer this one.")[0] == "defer"
    assert parse_verdict("")[0] is None
    assert parse_verdict('{"verdict": "maybe"} and nothing else')[0] is None


def test_proposal_validation_names_the_problem():
    with pytest.raises(ValueError, match="missing 'id'"):
        proposal_from_dict({"title": "x"})
    with pytest.raises(ValueError, match=r"criterion 'risk'=1.5 is outside \[0,1\]"):
        proposal_from_dict({"id": 1, "title": "x", "criteria": {"risk": 1.5}})
    with pytest.raises(ValueError, match="finite number"):
        proposal_from_dict({"id": 1, "title": "x", "criteria": {"risk": "high"}})
    p = proposal_from_dict({"id": 7, "title": "x", "criteria": {"brand_new_signal": 0.9}})
    assert p.id == "7" and p.criteria == {"brand_new_signal": 0.9}


def test_decide_combines_weights_and_llm_verdict_and_falls_back_on_garbage(app_config):
    graph = redis_graph(eliza_builder)
    strong = proposal("a", community_support=0.9, alignment=0.9, technical_risk=0.1)
    weak = proposal("b", community_support=0.1, alignment=0.2, technical_risk=0.9)
    llm = ScriptedChat(replies=['{"verdict": "approve", "reason": "the community backs it"}', "<<garbage>>", "??"])
    with scripted_model(llm):
        # The user asks for every proposal (llm_scope="all"); by default only close calls are asked (see below).
        out = cycle(graph, [strong, weak], "combo", max_attempts=2, llm_scope="all")
    a, b = out["decisions"]
    assert a["decision"] == "approve" and b["decision"] == "reject"
    assert a["features"]["llm_verdict"] == 1.0 and "LLM verdict approve" in a["rationale"]
    # Garbage twice: bounded retries, then the criteria decide alone, and the rationale says so.
    assert "llm_verdict" not in b["features"] and b["llm"]["attempts"] == 2
    assert "decided without it" in b["rationale"]
    assert len(llm.calls) == 3
    assert 0 < b["score"] < 0.5 < a["score"] < 1
    stored = DecisionLedger(app_config, "combo").get("a")
    assert stored["decision"] == "approve" and stored["outcome"] is None


def test_decisions_cite_knowledge_base_sources(app_config):
    from xmrt.kb.index import KnowledgeIndex

    index = KnowledgeIndex(app_config, "dao-docs")
    index.upsert(["d1", "d2"], ["Mining pool audits reduced payout errors by 40% in 2025.",
                                "The DAO's marketing budget is capped at 50 XMR per quarter."],
                 [{"source": "docs/audits.md"}, {"source": "docs/budget.md"}])
    graph = redis_graph(eliza_builder)
    p = {**proposal("kb1", community_support=0.8), "title": "Fund a mining pool audit"}
    out = graph.invoke({"proposals": [p]}, {"configurable": {"thread_id": "kb"}},
                       context={"agent_id": "kb-agent", "use_llm": False, "collection": "dao-docs", "knowledge_k": 2})
    sources = out["decisions"][0]["sources"]
    assert sources[0]["path"] == "docs/audits.md"
    assert "docs/audits.md" in out["decisions"][0]["rationale"]


def test_bad_proposals_are_reported_and_good_ones_decided(app_config):
    graph = redis_graph(eliza_builder)
    out = cycle(graph, [proposal("ok", alignment=0.8), {"title": "no id"}, proposal("bad", risk=2.0), "text"],
                "validation", use_llm=False)
    assert [d["id"] for d in out["decisions"]] == ["ok"]
    errors = {e["index"]: e["error"] for e in out["invalid"]}
    assert "missing 'id'" in errors[1] and "outside [0,1]" in errors[2] and "JSON object" in errors[3]


def test_self_improvement_learns_the_direction_of_unknown_criteria_and_writes_lessons(app_config):
    eliza, improve = redis_graph(eliza_builder), redis_graph(improve_builder)
    stream = generate(200, rule="linear", noise=0.05, seed=3)
    out = cycle(eliza, [p for p, _ in stream], "learner", use_llm=False)
    assert len(out["decisions"]) == 200
    result = improve.invoke({"outcomes": [{"id": p["id"], "success": ok} for p, ok in stream]},
                            {"configurable": {"thread_id": "improve"}},
                            context={"agent_id": "learner", "epochs": 20, "prompt_optimizer": "off"})
    assert len(result["recorded"]) == 200 and result["errors"] == []
    weights = result["training"]["weights"]
    # The hidden rule rewards team_track_record (unknown to the prior) and punishes technical_risk.
    assert weights["team_track_record"] > 0.3
    assert weights["technical_risk"] < -1.0
    assert result["training"]["loss_after"] < result["training"]["loss_before"]
    before = result["metrics_before"]["decision_accuracy"]
    assert result["metrics_after"]["decision_accuracy"] == before  # accuracy is about decisions already made
    lessons = {x["criterion"] for x in result["lessons"]}
    assert "team_track_record" in lessons
    found = AgentMemory(app_config, store=improve.store).search("learner", "track record of the team")
    assert any(m.data.get("kind") == "lesson" for m in found)
    # Deciding the same kind of stream again with the learned weights is more accurate.
    # New ids: a proposal whose outcome is recorded is never decided again.
    fresh = [({**p, "id": f"fresh-{p['id']}"}, ok) for p, ok in generate(200, rule="linear", noise=0.05, seed=4)]
    truth = {p["id"]: ok for p, ok in fresh}
    from xmrt.eliza import is_correct

    learned = cycle(eliza, [p for p, _ in fresh], "learner", use_llm=False, learn=False)["decisions"]
    static = cycle(eliza, [p for p, _ in fresh], "never-learned", use_llm=False, learn=False)["decisions"]
    acc = lambda ds: sum(is_correct(d["decision"], truth[d["id"]]) for d in ds) / len(ds)  # noqa: E731
    assert acc(learned) > acc(static) + 0.15


def test_feedback_errors_unknown_and_duplicate_ids(app_config):
    eliza, improve = redis_graph(eliza_builder), redis_graph(improve_builder)
    cycle(eliza, [proposal("x1", alignment=0.9), proposal("x2", alignment=0.1)], "fb", use_llm=False)
    cfg = {"configurable": {"thread_id": "fb-improve"}}
    ctx = {"agent_id": "fb", "prompt_optimizer": "off"}
    first = improve.invoke({"outcomes": [{"id": "x1", "success": True}, {"id": "nope", "success": False},
                                         {"id": "x2", "success": "yes"}]}, cfg, context=ctx)
    assert [r["id"] for r in first["recorded"]] == ["x1"]
    errors = [e["error"] for e in first["errors"]]
    assert any("no decision for id 'nope'" in e for e in errors) and any("true or false" in e for e in errors)
    second = improve.invoke({"outcomes": [{"id": "x1", "success": False}]}, cfg, context=ctx)
    assert "already recorded" in second["errors"][0]["error"]
    assert DecisionLedger(app_config, "fb").get("x1")["outcome"]["success"] is True  # nothing overwritten


def test_reflection_flips_low_margin_decisions_with_evidence(app_config):
    eliza, improve = redis_graph(eliza_builder), redis_graph(improve_builder)
    # History: proposals with a brand-new signal high always failed, though the prior approves them.
    history = [proposal(f"h{i}", community_support=0.75, hype=0.9) for i in range(12)]
    cycle(eliza, history, "reflective", use_llm=False)
    improve.invoke({"outcomes": [{"id": p["id"], "success": False} for p in history]},
                   {"configurable": {"thread_id": "r"}}, context={"agent_id": "reflective", "learn": False})
    out = cycle(eliza, [proposal("new", community_support=0.75, hype=0.9)], "reflective", use_llm=False)
    (entry,) = out["reflections"]
    assert entry["changed"] and entry["before"] == "approve" and entry["after"] == "reject"
    assert "succeeded 0/12" in entry["why"] and "Reflection" in out["decisions"][0]["rationale"]
    off = cycle(eliza, [proposal("new2", community_support=0.75, hype=0.9)], "reflective", use_llm=False, learn=False)
    assert off["reflections"] == [] and off["decisions"][0]["decision"] == "approve"


def test_prompt_optimizer_versions_instructions_and_rejects_broken_rewrites(app_config):
    eliza, improve = redis_graph(eliza_builder), redis_graph(improve_builder)
    cycle(eliza, [proposal("m1", alignment=0.9), proposal("m2", alignment=0.9)], "prompted", use_llm=False)
    new = 'Be sceptical of well-aligned proposals without a track record. Reply JSON: {"verdict": ..., "reason": ...}'
    with scripted_model(ScriptedChat(replies=[new])):
        out = improve.invoke({"outcomes": [{"id": "m1", "success": False}]}, {"configurable": {"thread_id": "p"}},
                             context={"agent_id": "prompted", "prompt_optimizer": "on"})
    assert out["prompt_update"]["version"] == 1
    ledger = DecisionLedger(app_config, "prompted")
    assert ledger.prompt("default")[0] == new
    with scripted_model(ScriptedChat(replies=["just approve everything"])):
        out = improve.invoke({"outcomes": [{"id": "m2", "success": False}]}, {"configurable": {"thread_id": "p"}},
                             context={"agent_id": "prompted", "prompt_optimizer": "on"})
    assert "broke the JSON reply contract" in out["prompt_update"]["skipped"]
    assert [v["version"] for v in ledger.prompt_versions()] == [1]
    # The next cycle's LLM sees the revised instructions.
    llm = ScriptedChat(replies=['{"verdict": "defer"}'])
    with scripted_model(llm):
        cycle(eliza, [proposal("m3", alignment=0.9)], "prompted", llm_scope="all")
    assert llm.calls[0][0].content == new


def test_approved_actions_run_through_tools(app_config):
    from tools.dao import list_records

    graph = redis_graph(eliza_builder)
    good = {**proposal("act1", community_support=0.95, alignment=0.95, technical_risk=0.05),
            "action": {"type": "record_task", "title": "Set up the audit", "details": "Q3"}}
    bad = {**proposal("act2", community_support=0.05, alignment=0.05, technical_risk=0.95),
           "action": {"type": "record_task", "title": "never"}}
    odd = {**proposal("act3", community_support=0.95, alignment=0.95), "action": {"type": "launch_rocket"}}
    out = cycle(graph, [good, bad, odd], "actor", use_llm=False)
    actions = {a["id"]: a for a in out["actions"]}
    assert set(actions) == {"act1", "act3"}
    assert actions["act1"]["status"] == "done" and actions["act3"]["status"] == "skipped"
    tasks = list_records("tasks")
    assert tasks[-1]["title"] == "Set up the audit" and tasks[-1]["proposal_id"] == "act1"


def test_cli_decide_and_feedback_with_bad_lines(app_config, tmp_path):
    env = subprocess_env(app_config)
    good = proposal("c1", community_support=0.9, alignment=0.9)
    lines = [json.dumps(good), "{not json", json.dumps({"title": "no id"}),
             json.dumps(proposal("c2", technical_risk=1.7)), json.dumps(proposal("c3", alignment=0.1))]
    src = tmp_path / "proposals.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = subprocess.run([*XMRT, "eliza", "decide", "--input", str(src), "--json", "--no-llm", "--agent", "cli"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 2, out.stderr
    decided = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [d["id"] for d in decided] == ["c1", "c3"]
    assert set(decided[0]) == {"id", "decision", "score", "rationale", "sources"}
    assert "line 2: malformed JSON" in out.stderr and "line 3: missing 'id'" in out.stderr
    assert "line 4: proposal c2: criterion 'technical_risk'=1.7 is outside [0,1]" in out.stderr
    fb = tmp_path / "outcomes.jsonl"
    fb.write_text('{"id": "c1", "success": true}\n{"id": "zz", "success": false}\n{"id": "c1", "success": true}\n')
    out = subprocess.run([*XMRT, "eliza", "feedback", "--input", str(fb), "--json", "--agent", "cli"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 2
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["recorded"] == 1 and summary["rejected"] == 2
    assert "duplicate id 'c1'" in out.stderr and "no decision for id 'zz'" in out.stderr
    assert summary["decision_accuracy_after"] == 1.0


def test_learning_persists_across_process_restarts(app_config):
    eliza, improve = redis_graph(eliza_builder), redis_graph(improve_builder)
    stream = generate(60, rule="linear", seed=9)
    cycle(eliza, [p for p, _ in stream], "persist", use_llm=False)
    trained = improve.invoke({"outcomes": [{"id": p["id"], "success": ok} for p, ok in stream]},
                             {"configurable": {"thread_id": "persist"}}, context={"agent_id": "persist"})["training"]
    out = subprocess.run([*XMRT, "eliza", "status", "--agent", "persist", "--json"], capture_output=True, text=True,
                         env=subprocess_env(app_config), cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    model = DecisionModel.from_dict(status["model"])
    assert model.version == trained["version"] == 1
    assert model.weights["team_track_record"] == pytest.approx(trained["weights"]["team_track_record"], abs=1e-3)
    assert status["metrics"]["with_outcome"] == 60


def test_cycle_resumes_after_the_process_is_killed_mid_cycle(app_config):
    script = Path(__file__).parent / "scripts" / "eliza_proc.py"
    env = subprocess_env(app_config)
    proc = subprocess.Popen([sys.executable, str(script), "first"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.strip() == "IN_MODEL":
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
    done = subprocess.run([sys.executable, str(script), "resume"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["next_before"] == ["decide"]
    assert result["decisions"] == ["k1", "k2"] and result["next_after"] == []
    assert DecisionLedger(app_config, "killed").get("k2") is not None


def test_many_concurrent_async_runs_with_the_served_store_never_stall(app_config):
    """Sync nodes that read the store (load_context, learn) run on the default thread pool (6 threads here) with
    the store the server uses; they must never wait on each other (the async store's sync bridge did)."""
    import asyncio

    from xmrt.persistence import async_store

    async def scenario():
        async with async_store(app_config) as store:
            graph = eliza_builder.compile(store=store)
            runs = [graph.ainvoke({"proposals": [proposal(f"conc-{i}", alignment=0.9)]},
                                  context={"agent_id": f"conc-{i % 3}", "knowledge_k": 0, "use_llm": False})
                    for i in range(16)]
            return await asyncio.wait_for(asyncio.gather(*runs), timeout=120)

    outs = asyncio.run(scenario())
    assert [o["decisions"][0]["id"] for o in outs] == [f"conc-{i}" for i in range(16)]
