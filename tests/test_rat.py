"""RAT graph: draft, per-step retrieval and revision, bounded loop with early stop, computed confidence, garbage.

Real Chroma and MiniLM embeddings (retrieval, change detection, confidence) and real Redis; only the chat model
is scripted.
"""

from __future__ import annotations

import pytest

from graphs import rat
from graphs.context import RatContext
from nodes.models import scripted_model
from nodes.rat import route_after_revision
from tests.fakes import ScriptedChat
from tests.reasoning_corpus import DOCS, fill, ingest, local_llm  # noqa: F401 - fixture
from xmrt.redis.persistence import redis_graph

QUESTION = "How much XMR does the DAO treasury hold and who approves spending from it?"
DRAFT = "1. The treasury holds some XMR.\n2. Spending from the treasury needs an approval."
REV1 = "The XMRT DAO treasury holds 1,200 XMR [1]."
REV2 = "Spending from the treasury needs a 3-of-5 multisig approval by the council [1]."
SUPPORTED = "The treasury holds 1,200 XMR [1]. Spending needs a 3-of-5 multisig approval by the council [1]."
UNSUPPORTED = "The treasury is stored on the moon. A dragon signs every payment. Bananas are the currency."


@pytest.fixture
def kb(config):
    return config, fill(config)


def ctx(kb, **kw) -> RatContext:
    config, collection = kb
    return RatContext(collection=collection, **kw)


def run(kb, replies, question=QUESTION, config=None, **kw):
    model = ScriptedChat(replies=replies)
    with scripted_model(model):
        graph = rat.graph if config is None else rat.graph.with_config(config)
        out = graph.invoke({"question": question}, context=ctx(kb, **kw))
    return out, model


def test_module_exports_builder_and_graph_without_checkpointer():
    assert rat.graph.checkpointer is None and rat.graph.name == "rat"
    assert set(rat.graph.get_input_jsonschema()["properties"]) == {"question"}
    assert set(rat.graph.get_output_jsonschema()["properties"]) == {
        "final_response", "reflections", "confidence", "sources"}


def test_revises_each_step_against_retrieval_and_stops_when_a_pass_changes_nothing(kb):
    # Pass 1 changes both steps; pass 2 returns them unchanged -> early stop before the budget (3 passes = 6).
    out, model = run(kb, [DRAFT, REV1, REV2, REV1, REV2, SUPPORTED], reflection_steps=3)
    assert len(model.calls) == 6  # draft + 4 revisions + answer
    refl = out["reflections"]
    assert [(r["round"], r["step"], r["changed"]) for r in refl] == [
        (1, 1, True), (1, 2, True), (2, 1, False), (2, 2, False)]
    assert refl[0]["before"] == "The treasury holds some XMR." and refl[0]["after"] == REV1
    assert refl[0]["query"] == f"{QUESTION} The treasury holds some XMR."
    assert refl[2]["query"] == f"{QUESTION} {REV1}"  # pass 2 searches with the revised step
    assert refl[0]["sources"][0]["path"] == "docs/treasury.md"
    # The revision prompt carried the retrieved passage and the step.
    revise_prompt = model.calls[1][1].content
    assert "(docs/treasury.md:1) The XMRT DAO treasury holds 1,200 XMR." in revise_prompt
    assert "Step 1: The treasury holds some XMR." in revise_prompt
    # The answer prompt carried the revised steps.
    assert f"1. {REV1}\n2. {REV2}" in model.calls[-1][1].content
    assert out["final_response"].startswith(SUPPORTED)
    assert "Sources:\n[1] docs/treasury.md:1" in out["final_response"]
    assert out["sources"][0]["path"] == "docs/treasury.md" and out["sources"][0]["cited"]
    assert out["confidence"] == 1.0


def test_loop_is_bounded_by_reflection_steps(kb):
    # Every revision changes the step, so only the budget stops the loop: passes x steps reflections.
    scripts = {1: [DRAFT, REV2, REV1, SUPPORTED], 2: [DRAFT, REV2, REV1, REV1, REV2, SUPPORTED]}
    for passes, replies in scripts.items():
        out, model = run(kb, replies, reflection_steps=passes)
        assert len(out["reflections"]) == 2 * passes
        assert all(r["changed"] for r in out["reflections"])
        assert len(model.calls) == 2 + 2 * passes


def test_recursion_limit_caps_the_loop_instead_of_failing(kb):
    out, _ = run(kb, [DRAFT, REV2, REV1, REV2, REV1, REV2, REV1, SUPPORTED], config={"recursion_limit": 9},
                 reflection_steps=3)
    assert len(out["reflections"]) == 2  # (9 - 4) // 2
    assert out["final_response"]


def test_route_after_revision_is_pure():
    base = {"steps": ["a", "b"], "max_reflections": 6}
    changed = {"changed": True}
    same = {"changed": False}
    assert route_after_revision({**base, "reflection_count": 1, "reflections": [changed]}) == "retrieve_for_step"
    assert route_after_revision({**base, "reflection_count": 2, "reflections": [changed, same]}) == \
        "retrieve_for_step"
    assert route_after_revision({**base, "reflection_count": 4, "reflections": [changed, same, same, same]}) == \
        "answer"
    assert route_after_revision({**base, "reflection_count": 6, "reflections": [changed] * 6}) == "answer"


def test_confidence_is_computed_from_support(kb):
    supported, _ = run(kb, [DRAFT, REV1, REV2, REV1, REV2, SUPPORTED])
    unsupported, _ = run(kb, [DRAFT, REV1, REV2, REV1, REV2, UNSUPPORTED])
    half, _ = run(kb, [DRAFT, REV1, REV2, REV1, REV2,
                       "The treasury holds 1,200 XMR [1]. A dragon signs every payment."])
    assert supported["confidence"] == 1.0
    assert unsupported["confidence"] == 0.0
    assert half["confidence"] == 0.5
    # A stricter threshold lowers it: the score is computed, not a constant.
    strict, _ = run(kb, [DRAFT, REV1, REV2, REV1, REV2, SUPPORTED], support_threshold=0.99)
    assert strict["confidence"] < 1.0


def test_garbage_replies_fall_back_deterministically(kb):
    replies = [
        "",                                              # draft: empty
        "The treasury matters. Approval matters too.",   # draft: prose, not a list -> its sentences
        '{"revised": "The treasury',                    # broken JSON
        "   ",                                           # empty -> step 1 kept
        '{"revised_step": "Spending needs a 3-of-5 multisig approval [2]."}',  # JSON wrapper accepted
        "",                                              # answer: empty
        "",                                              # answer: empty -> composed from the steps
    ]
    out, model = run(kb, replies, reflection_steps=1, max_attempts=2)
    assert len(model.calls) == 7
    refl = out["reflections"]
    assert [r["changed"] for r in refl] == [False, True]
    assert refl[0]["after"] == "The treasury matters." and refl[0]["note"] == "revision unusable, step kept"
    assert refl[1]["after"].startswith("Spending needs a 3-of-5 multisig approval")
    answer = out["final_response"]
    # No final answer: the revised steps are grounded instead; only the supported one is shown.
    assert answer.startswith("Spending needs a 3-of-5 multisig approval [1].")
    assert "The treasury matters." not in answer
    assert out["confidence"] < 1.0  # the unsupported step counts against it
    assert 0.0 <= out["confidence"] < 1.0


def test_no_reply_at_all_still_answers(kb):
    out, model = run(kb, [""], reflection_steps=1, max_attempts=2)
    assert out["reflections"][0]["before"] == QUESTION  # the question became the one step
    assert out["final_response"].startswith("The knowledge base says: “")  # the question is no answer: quotes
    assert "1,200 XMR" in out["final_response"]
    assert len(model.calls) == 2 + 2 + 2


def test_each_question_on_a_thread_starts_a_fresh_loop(kb):
    graph = redis_graph(rat.builder, kb[0])
    cfg = {"configurable": {"thread_id": "rat-thread"}}
    model = ScriptedChat(replies=[DRAFT, REV1, REV2, SUPPORTED, DRAFT, REV1, REV2, SUPPORTED])
    with scripted_model(model):
        first = graph.invoke({"question": QUESTION}, cfg, context=ctx(kb, reflection_steps=1))
        second = graph.invoke({"question": QUESTION}, cfg, context=ctx(kb, reflection_steps=1))
    assert len(first["reflections"]) == len(second["reflections"]) == 2
    state = graph.get_state(cfg).values
    assert state["reflection_count"] == 2 and state["max_reflections"] == 2


# ------------------------------------------------------------------------------------ real local model (slow)
@pytest.mark.slow
@pytest.mark.usefixtures("local_llm")
def test_real_local_model_drafts_revises_and_scores(config, tmp_path):
    """SmolLM2 on an ingested corpus, one pass over a two-step draft: structure, not wording."""
    collection = ingest(config, tmp_path / "corpus")
    out = rat.graph.invoke({"question": "How much XMR does the treasury hold?"}, context=RatContext(
        collection=collection, max_new_tokens=40, reflection_steps=1, max_steps=2))
    assert out["final_response"].strip()
    assert 1 <= len(out["reflections"]) <= 2
    for r in out["reflections"]:
        assert r["query"].startswith("How much XMR does the treasury hold?")
        assert r["before"] and r["after"] and isinstance(r["changed"], bool)
        assert all(s["path"] in DOCS for s in r["sources"])
    assert out["sources"] and out["sources"][0]["path"] in DOCS
    assert 0.0 <= out["confidence"] <= 1.0
