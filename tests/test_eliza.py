import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.proposals import generate
from graphs.eliza import builder as eliza_builder
from graphs.self_improve import builder as improve_builder
from nodes.models import scripted_model
from nodes.verdicts import parse_verdict
from tests.conftest import ROOT, subprocess_env
from tests.fakes import ScriptedChat
from xmrt.eliza import DecisionLedger, DecisionModel, proposal_from_dict
from xmrt.eliza.memory import AgentMemory
from xmrt.redis.persistence import redis_graph

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
    kept = out["decisions"][0]  # both probabilities are kept, for reflection's own record
    assert kept["model_score"] == entry["score_before"] > 0.5 > kept["reflected_score"] == entry["score_after"]
    off = cycle(eliza, [proposal("new2", community_support=0.75, hype=0.9)], "reflective", use_llm=False, learn=False)
    assert off["reflections"] == [] and off["decisions"][0]["decision"] == "approve"


def test_reflection_applies_only_while_its_own_record_beats_the_model():
    from nodes.eliza import MIN_VALIDATION, _track_record

    def judged(n: int, model: float, reflected: float, success: bool, plain: int = 0) -> list[dict]:
        reflected_on = [{"model_score": model, "reflected_score": reflected, "outcome": {"success": success}}] * n
        return reflected_on + [{"score": 0.9, "outcome": {"success": True}}] * plain

    assert _track_record(judged(MIN_VALIDATION - 1, 0.6, 0.4, False), 100.0) is None  # too few: the trial decides
    helped, note = _track_record(judged(30, 0.6, 0.4, False), 100.0)
    assert helped and "log-loss" in note
    assert not _track_record(judged(30, 0.6, 0.4, True), 100.0)[0]
    # Recent outcomes weigh most: it helped long ago, then stopped helping, so it stops applying; and back again.
    assert not _track_record(judged(60, 0.6, 0.4, False) + judged(30, 0.6, 0.4, True), 20.0)[0]
    assert _track_record(judged(60, 0.6, 0.4, True) + judged(30, 0.6, 0.4, False), 20.0)[0]
    # Decisions it did not reflect on have no say, but count as time passing.
    assert not _track_record(judged(30, 0.6, 0.4, False) + judged(30, 0.6, 0.4, True, plain=200), 50.0)[0]


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

    from xmrt.redis.persistence import async_store

    async def scenario():
        async with async_store(app_config) as store:
            graph = eliza_builder.compile(store=store)
            runs = [graph.ainvoke({"proposals": [proposal(f"conc-{i}", alignment=0.9)]},
                                  context={"agent_id": f"conc-{i % 3}", "knowledge_k": 0, "use_llm": False})
                    for i in range(16)]
            return await asyncio.wait_for(asyncio.gather(*runs), timeout=120)

    outs = asyncio.run(scenario())
    assert [o["decisions"][0]["id"] for o in outs] == [f"conc-{i}" for i in range(16)]


# --------------------------------------------------------------------------- every signal, learned (issue 17)
def test_new_features_start_neutral_and_unseen_categories_stay_neutral():
    from xmrt.eliza import Example

    model = DecisionModel()
    bare = Example({"community_support": 0.8, "technical_risk": 0.3})
    full = Example({"community_support": 0.8, "technical_risk": 0.3}, amount=900.0, category="marketing",
                   words=("billboard", "campaign"))
    # Nothing learned yet: the amount, the category and the words do not move the prior rule.
    assert model.probability(full) == pytest.approx(model.probability(bare))
    assert set(model.contributions(full)) == {"community_support", "technical_risk"}
    stream = generate(200, rule="category", seed=5)
    model.train([(Example.of(p), ok) for p, ok in stream], learning_rate=0.01, epochs=200)
    assert "category:marketing" in model.weights and model.weights["category:marketing"] < -0.5
    # A category never seen in an outcome has no feature: it decides as if the category were unknown.
    unseen = Example({"community_support": 0.8}, amount=50.0, category="never-seen-before")
    known_none = Example({"community_support": 0.8}, amount=50.0, category=None)
    assert model.probability(unseen) == pytest.approx(model.probability(known_none))


def test_amount_is_scaled_robustly_and_learned_from_outcomes():
    from xmrt.eliza import Example, FeatureSpace

    space = FeatureSpace.fit([Example({}, amount=a) for a in (1, 5, 20, 40, 80, 100, 300, 1e9)])
    huge, small = space.main(Example({}, amount=1e9)), space.main(Example({}, amount=1))
    assert abs(huge["amount:log"]) < 15 and small["amount:log"] < 0 < huge["amount:log"]  # log, then median/IQR
    stream = generate(300, rule="amount", seed=11)
    model = DecisionModel()
    model.train([(Example.of(p), ok) for p, ok in stream], learning_rate=0.01, epochs=200)
    cheap = Example({"team_track_record": 0.5, "technical_risk": 0.5}, amount=20.0)
    dear = Example({"team_track_record": 0.5, "technical_risk": 0.5}, amount=1500.0)
    assert model.probability(dear) < 0.35 < 0.6 < model.probability(cheap)


def test_learning_rate_is_the_initial_sgd_step():
    from xmrt.eliza import PRIOR_WEIGHTS, Example

    stream = [(Example.of(p), ok) for p, ok in generate(150, rule="linear", seed=2)]
    moved = {}
    for rate in (0.001, 0.1):
        model = DecisionModel()
        model.train(stream, learning_rate=rate, epochs=1)  # one pass: the step size alone sets how far it goes
        moved[rate] = abs(model.weights["team_track_record"] - PRIOR_WEIGHTS.get("team_track_record", 0.0))
    assert moved[0.1] > 5 * moved[0.001] > 0


def test_old_format_models_migrate_on_load(app_config, redis_client):
    ledger = DecisionLedger(app_config, "legacy")
    old = {"weights": {"community_support": 1.7, "technical_risk": -2.0, "llm_verdict": 0.3}, "bias": 0.2,
           "version": 7, "examples_seen": 120, "updated_at": 1.0}
    redis_client.set(ledger.k_model, json.dumps(old))
    model = ledger.load_model()
    assert model.version == 7 and model.weights["community_support"] == 1.7 and model.bias == 0.2
    assert set(model.experts) >= {"main", "main_recent", "by_category", "pairs", "text"}
    assert all(e.weights["technical_risk"] == -2.0 for e in model.experts.values())
    # It decides as the old model did (the new features start at 0), and round-trips in the new format.
    p = model.probability({"community_support": 0.9, "technical_risk": 0.2})
    assert p == pytest.approx(1 / (1 + math.exp(-(0.2 + 1.7 * 0.4 + 2.0 * 0.3))))
    assert DecisionModel.from_dict(model.to_dict()).to_dict() == model.to_dict()
    out = cycle(redis_graph(eliza_builder), [proposal("after", community_support=0.9)], "legacy", use_llm=False)
    assert out["decisions"][0]["model_version"] == 7


def test_metrics_report_calibration_and_a_learning_curve():
    from xmrt.eliza import metrics_of

    def rec(score, decision, success):
        return {"score": score, "decision": decision, "outcome": {"success": success}}

    decisions = [rec(0.9, "approve", True), rec(0.8, "approve", False), rec(0.1, "reject", False),
                 rec(0.3, "reject", True), rec(0.5, "defer", True), {"score": 0.7, "decision": "approve"}]
    m = metrics_of(decisions, window=2)
    assert m["with_outcome"] == 5 and m["decision_accuracy"] == pytest.approx(2 / 5)
    assert m["brier_score"] == pytest.approx((0.01 + 0.64 + 0.01 + 0.49 + 0.25) / 5)
    assert [(p["from"], p["to"], p["accuracy"]) for p in m["learning_curve"]] == [(1, 2, 0.5), (3, 4, 0.5),
                                                                                 (5, 5, 0.0)]
    bins = {row["bin"]: row for row in m["reliability"]}
    assert bins["0.8-1.0"]["n"] == 2 and bins["0.8-1.0"]["observed"] == 0.5
    assert bins["0.0-0.2"] == {"bin": "0.0-0.2", "n": 1, "mean_score": 0.1, "observed": 0.0}


def test_the_llm_is_asked_only_where_it_can_change_the_decision_and_cached(app_config):
    graph = redis_graph(eliza_builder)
    strong = proposal("s1", community_support=0.95, alignment=0.95, technical_risk=0.05)
    weak = proposal("w1", community_support=0.05, alignment=0.05, technical_risk=0.95)
    close = proposal("c1", community_support=0.55, alignment=0.5, technical_risk=0.5)
    llm = ScriptedChat(replies=['{"verdict": "reject", "reason": "too vague"}'])
    with scripted_model(llm):
        out = cycle(graph, [strong, weak, close], "gated")
    assert len(llm.calls) == 1 and "c1" in llm.calls[0][1].content
    by_id = {d["id"]: d for d in out["decisions"]}
    assert "could not change the decision" in by_id["s1"]["llm"]["skipped"]
    assert "LLM not asked" in by_id["s1"]["rationale"]
    assert by_id["c1"]["features"]["llm_verdict"] == 0.0 and "LLM verdict reject" in by_id["c1"]["rationale"]
    # The same proposal again (new id, same text and signals): the verdict comes from the cache, no call.
    again = {**close, "id": "c1"}
    with scripted_model(llm):
        cycle(graph, [again], "gated-2")
    assert len(llm.calls) == 2  # another agent: its own cache
    with scripted_model(llm):
        out = cycle(graph, [{**close, "id": "c1"}], "gated-2")
    assert len(llm.calls) == 2 and out["decisions"][0]["llm"]["cached"] is True
    # Bounded: at most max_llm_calls close calls per cycle, the closest first.
    many = [proposal(f"m{i}", community_support=0.5 + i / 1000) for i in range(6)]
    with scripted_model(llm):
        out = cycle(graph, many, "gated-3", max_llm_calls=2)
    assert len(llm.calls) == 4
    assert sum(1 for d in out["decisions"] if (d["llm"] or {}).get("verdict")) == 2


def test_rationale_names_what_moved_the_decision_and_how_sure_it_is(app_config):
    eliza, improve = redis_graph(eliza_builder), redis_graph(improve_builder)
    stream = generate(100, rule="amount", seed=4)
    cycle(eliza, [p for p, _ in stream], "why", use_llm=False)
    improve.invoke({"outcomes": [{"id": p["id"], "success": ok} for p, ok in stream]},
                   {"configurable": {"thread_id": "why"}}, context={"agent_id": "why", "prompt_optimizer": "off"})
    big = {**proposal("big", team_track_record=0.5, technical_risk=0.5), "amount_xmr": 1800}
    out = cycle(eliza, [big], "why", use_llm=False)
    d = out["decisions"][0]
    assert "learned from 100 outcomes" in d["rationale"] and "moved most by:" in d["rationale"]
    assert "amount" in d["rationale"].split("moved most by:")[1]
    assert d["confidence"]["outcomes_learned"] == 100 and d["signals"]["amount_xmr"] == 1800
    assert set(d["experts"]) == {"main", "main_recent", "by_category", "by_category_recent", "pairs", "text", "trees",
                                 "criteria"}


def test_learns_an_amount_by_category_rule_through_the_graphs(app_config):
    """Decide in batches, feed back, self-improve: the last 100 beat the first 100 on a rule it was never told."""
    from benchmarks.proposals import generate_with_oracle
    from xmrt.eliza import is_correct

    eliza, improve = redis_graph(eliza_builder), redis_graph(improve_builder)
    stream = generate_with_oracle(400, rule="category_amount", seed=21)
    right = []
    for b in range(0, 400, 50):
        batch = stream[b : b + 50]
        out = cycle(eliza, [p for p, _, _ in batch], "learner-ca", use_llm=False)
        truth = {p["id"]: ok for p, ok, _ in batch}
        right += [is_correct(d["decision"], truth[d["id"]]) for d in out["decisions"]]
        improve.invoke({"outcomes": [{"id": k, "success": v} for k, v in truth.items()]},
                       {"configurable": {"thread_id": f"ca-{b}"}},
                       context={"agent_id": "learner-ca", "prompt_optimizer": "off"})
    first, last = sum(right[:100]) / 100, sum(right[-100:]) / 100
    oracle = sum(o == ok for _, ok, o in stream[-100:]) / 100
    assert last >= first + 0.1 and last >= oracle - 0.12, (first, last, oracle)
    metrics = DecisionLedger(app_config, "learner-ca").metrics()
    assert len(metrics["learning_curve"]) == 8 and metrics["brier_score"] < 0.25
    from xmrt.server.http import eliza_part

    part = eliza_part(app_config, "learner-ca", history=20)  # what the dashboard draws
    assert [p["to"] for p in part["metrics"]["learning_curve"]] == [50 * i for i in range(1, 9)]
    assert part["model"]["examples_seen"] == 400 and abs(sum(part["model"]["mixture"].values()) - 1) < 1e-3
    status = subprocess.run([*XMRT, "eliza", "status", "--agent", "learner-ca"], capture_output=True, text=True,
                            env=subprocess_env(app_config), cwd=ROOT, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "learning curve" in status.stdout and "reliability" in status.stdout and "Brier" in status.stdout


@pytest.mark.slow
def test_local_model_scores_verdicts_in_one_forward_pass(app_config):
    """The real local model: verdict probabilities without generation, batched, and a cycle with it on."""
    from langchain_core.messages import HumanMessage, SystemMessage

    from graphs.context import ELIZA_INSTRUCTIONS
    from nodes.models import chat_model
    from nodes.verdicts import score_verdicts

    model = chat_model()
    conversations = [[SystemMessage(ELIZA_INSTRUCTIONS), HumanMessage(f"Proposal {t}\nJSON:")]
                     for t in ("Fund a mining pool audit", "Buy a yacht for the founders", "Translate the docs")]
    results = score_verdicts(model, conversations, batch_size=2)
    assert len(results) == 3
    for r in results:
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
        assert r["verdict"] in ("approve", "reject", "defer") and 0 <= r["value"] <= 1
    # Batching (left padding) does not change a prompt's scores.
    alone = score_verdicts(model, conversations[1:2], batch_size=1)[0]
    assert alone["probabilities"] == pytest.approx(results[1]["probabilities"], abs=2e-3)
    out = cycle(redis_graph(eliza_builder), [proposal("llm-1", community_support=0.52)], "local-llm")
    assert out["decisions"][0]["llm"]["method"] == "scored"


def test_bench_model_only_learns_a_category_rule_in_process():
    from benchmarks.eliza_model_only import model_only
    from benchmarks.proposals import generate_with_oracle

    run = model_only(generate_with_oracle(300, rule="category", seed=5), batch=50)
    assert run["last"] >= run["first"] + 0.1 and run["last"] >= run["oracle"] - 0.1, run
    assert abs(sum(run["mixture"].values()) - 1) < 0.05


def test_trees_expert_learns_a_threshold_explains_it_and_round_trips():
    from xmrt.eliza import Example

    model = DecisionModel()
    assert model.experts["trees"].trees == []  # neutral at start: the prior rule, like every expert
    stream = [(Example.of(p), ok) for p, ok in generate(300, rule="amount", seed=11)]
    model.train(stream, learning_rate=0.01, epochs=200)
    trees = model.experts["trees"]
    assert trees.trees and not any(n.startswith("amount:over") for n in trees.weights)
    split_on = {f for t in trees.trees for f in t["feature"] if f}
    assert "amount:log" in split_on
    cheap = Example({"team_track_record": 0.5, "technical_risk": 0.5}, amount=20.0)
    dear = Example({"team_track_record": 0.5, "technical_risk": 0.5}, amount=1500.0)
    probs = model.expert_probabilities
    assert probs(dear)["trees"] < 0.35 < 0.6 < probs(cheap)["trees"]
    # The rationale's contributions split the trees' leaves by feature: the amount is what moved a large spend.
    model.mixture = {n: float(n == "trees") for n in model.experts}
    assert next(iter(model.contributions(dear))).startswith("amount") and model.contributions(dear)["amount:log"] < 0
    again = DecisionModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again.probability(dear) == pytest.approx(model.probability(dear))
    assert again.to_dict() == model.to_dict()


def test_the_forgetting_expert_relearns_a_changed_rule_on_few_features():
    """``main_recent`` is L1: after the rule changes it keeps the few features the recent outcomes support."""
    from benchmarks.proposals import generate_with_oracle
    from xmrt.eliza import Example

    model = DecisionModel()
    stream = generate_with_oracle(400, "drift", noise=0.02, seed=21, sharpness=4.0)  # changes at proposal 200
    model.train([(Example.of(p), ok) for p, ok, _ in stream], learning_rate=0.01, epochs=200)
    recent, main = model.experts["main_recent"].weights, model.experts["main"].weights
    learned = [n for n in recent if n != "llm_verdict"]
    assert len(learned) >= 12 and not any(main[n] == 0.0 for n in learned)  # L2: every feature keeps a weight
    assert sum(recent[n] == 0.0 for n in learned) >= len(learned) // 2  # L1: most are exactly 0
    assert set(sorted(learned, key=lambda n: -abs(recent[n]))[:2]) == {"amount:log", "market_timing"}  # the new rule
    # What an expert is comes from the code, what it learned from storage: one stored while it was L2 becomes L1.
    raw = json.loads(json.dumps(model.to_dict()))
    raw["experts"]["main_recent"]["groups"] = []
    again = DecisionModel.from_dict(raw)
    assert again.experts["main_recent"].groups == ("sparse",) and again.experts["main_recent"].weights == recent


def test_every_proposal_is_decided_by_default_and_a_close_call_says_so(app_config):
    """Default defer margin 0: a coin flip is decided, and its rationale calls it a close call; a margin defers it."""
    graph = redis_graph(eliza_builder)
    flip = proposal("flip", community_support=0.5, alignment=0.5, technical_risk=0.5)
    clear = proposal("clear", community_support=0.95, alignment=0.95, technical_risk=0.05)
    out = cycle(graph, [flip, clear], "close", use_llm=False)
    by_id = {d["id"]: d for d in out["decisions"]}
    assert by_id["flip"]["decision"] in ("approve", "reject")
    assert "a close call" in by_id["flip"]["rationale"] and by_id["flip"]["confidence"]["level"] == "close call"
    assert "close call" not in by_id["clear"]["rationale"] and by_id["clear"]["decision"] == "approve"
    assert "low confidence" in by_id["clear"]["rationale"]  # nothing learned yet
    again = cycle(graph, [{**flip, "id": "flip2"}], "close-review", use_llm=False, defer_margin=0.1)
    d = again["decisions"][0]
    assert d["decision"] == "defer" and "left to people" in d["rationale"]


def test_sharper_streams_keep_their_proposals_and_raise_the_oracle():
    from benchmarks.proposals import generate_with_oracle

    noisy = generate_with_oracle(2000, rule="linear", seed=3)
    clean = generate_with_oracle(2000, rule="linear", seed=3, noise=0.02, sharpness=4.0)
    assert [p for p, _, _ in noisy] == [p for p, _, _ in clean]
    oracle = [sum(ok == o for _, ok, o in s) / len(s) for s in (noisy, clean)]
    assert 0.74 < oracle[0] < 0.82 and 0.86 < oracle[1] < 0.94, oracle


def test_a_stream_through_the_cli_matches_the_model_alone_on_its_first_batch(app_config, tmp_path):
    """The replica of issue 17's check: decide and feedback as new processes; the first batch is the prior's."""
    from benchmarks.eliza_cli import run_stream, summarise
    from benchmarks.eliza_model_only import model_only
    from benchmarks.proposals import generate_with_oracle

    stream = generate_with_oracle(100, rule="amount", seed=5)
    run = run_stream(stream, agent="via-cli", batch=50, workdir=tmp_path, env=subprocess_env(app_config))
    assert [b["recorded"] for b in run["batches"]] == [50, 50]
    assert all(b["undecided"] == 0 and b["deferred"] == 0 for b in run["batches"])
    alone = model_only(stream, 50, tail=50)
    assert summarise(run, 50)["first"] == alone["first"]
    assert DecisionLedger(app_config, "via-cli").load_model().examples_seen == 100
