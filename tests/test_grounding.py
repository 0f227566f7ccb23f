"""The grounding check that decides what of a generated answer may be shown (nodes.grounding)."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage

import graphs.rag as rag
from nodes.evidence import Unit, content_words, numbers
from nodes.grounding import ground, unique_sentences
from nodes.models import scripted_model
from tests.fakes import ScriptedChat
from tests.reasoning_corpus import fill

QUESTION = "How much XMR does the treasury hold?"


@pytest.fixture(scope="module")
def embed():
    from xmrt.config import create_config
    from xmrt.llm.embeddings import get_embeddings

    return get_embeddings(create_config({}, env_file=None)).embed_documents


@pytest.fixture
def units():
    return [Unit("The XMRT DAO treasury holds 1,200 XMR.", "[1]"),
            Unit("Spending from the treasury needs a 3-of-5 multisig approval by the council.", "[1]"),
            Unit("Governance proposals are voted on for seven days.", "[2]")]


def test_words_and_numbers():
    assert content_words("The Votes of token holders, please!") == {"vot", "token", "holder"}
    assert content_words("raise raised raises raising") == {"rais"}
    assert numbers("It holds 1,200 XMR and 3.5 BTC.") == {"1200", "3.5"}
    assert unique_sentences("One thing. one THING! Another thing.") == ["One thing.", "Another thing."]


def test_a_supported_answer_is_kept_with_citations(units, embed):
    result = ground("The treasury holds 1,200 XMR.", QUESTION, units, embed)
    assert result.mode == "generated" and result.answer == "The treasury holds 1,200 XMR [1]." and result.cited == [1]


def test_an_unsupported_answer_becomes_quotes_of_the_evidence(units, embed):
    result = ground("The XMRT DAO is a decentralized, transparent financial system run by a government.", QUESTION,
                    units, embed)
    assert result.mode == "extractive" and result.answer.startswith("The knowledge base says: “The XMRT DAO "
                                                                    "treasury holds 1,200 XMR.” [1]")
    assert result.support[0]["supported"] is False


def test_a_wrong_number_is_never_shown(units, embed):
    result = ground("The treasury holds 5,000 XMR.", QUESTION, units, embed)
    assert result.mode == "extractive" and "5,000" not in result.answer
    assert "numbers not in the evidence: 5000" in result.support[0]["why"]


def test_a_partly_supported_answer_keeps_only_its_supported_sentences(units, embed):
    result = ground("The treasury holds 1,200 XMR. A dragon guards the treasury every night.", QUESTION, units, embed)
    assert result.mode == "generated" and result.answer == "The treasury holds 1,200 XMR [1]."
    assert [s["supported"] for s in result.support] == [True, False]


def test_a_name_its_source_does_not_use_is_never_shown(embed):
    units = [Unit('In a generator function, the "return" statement indicates that the generator is done and will '
                  'cause "StopIteration" to be raised.', "[1]"),
             Unit("An exception is raised when an error is detected.", "[2]")]
    question = "In a generator function, what exception does the return statement cause to be raised?"
    wrong = ground("The return statement causes the `Exception` type to be raised by the generator function.",
                   question, units, embed)
    assert wrong.mode == "extractive" and "StopIteration" in wrong.answer
    assert wrong.support[0]["why"] == "names not in its source: exception"
    right = ground('The return statement causes "StopIteration" to be raised in a generator function.', question,
                   units, embed)
    assert right.mode == "generated" and right.cited == [1]


def test_a_question_or_template_tokens_are_never_an_answer(units, embed):
    leaked = ground("How much XMR does the treasury hold 1,200 XMR?<|im_start|>user [1].", QUESTION, units, embed)
    assert leaked.mode == "extractive" and "<|" not in leaked.answer


def test_a_sentence_must_hold_to_one_source(embed):
    units = [Unit("The treasury holds 1,200 XMR.", "[1]"), Unit("The council meets in Lisbon.", "[2]")]
    mixed = ground("The treasury council holds 1,200 XMR in Lisbon.", "How much XMR does the treasury hold?", units,
                   embed)
    assert mixed.mode == "extractive" and mixed.support[0]["coverage"] < 0.75


def test_a_looping_answer_says_each_thing_once(units, embed):
    looping = " ".join(["The treasury holds 1,200 XMR."] * 6 + ["the treasury holds 1,200 xmr"])
    result = ground(looping, QUESTION, units, embed)
    assert result.answer == "The treasury holds 1,200 XMR [1]." and len(result.support) == 1


def test_restating_the_question_is_no_answer(units, embed):
    result = ground("How much XMR does the treasury hold? The treasury holds XMR.", QUESTION, units, embed)
    assert result.mode == "extractive"


def test_a_short_answer_held_by_one_passage_is_kept(units, embed):
    result = ground("Seven days.", "How long is voting on proposals?", units, embed)
    assert result.answer == "Seven days [2]."


def test_no_evidence_means_i_dont_know(embed):
    assert ground("The treasury holds 1,200 XMR.", QUESTION, [], embed).answer.startswith("I don't know")


@pytest.mark.parametrize("reply, expected", [
    ("The treasury holds 1,200 XMR [1].", "The treasury holds 1,200 XMR [1]."),
    ("The treasury holds 1,200 XMR [1]. The council owns a yacht.", "The treasury holds 1,200 XMR [1]."),
    ("The XMRT DAO is a decentralized system. The XMRT DAO is a decentralized system.",
     "The knowledge base says: “The XMRT DAO treasury holds 1,200 XMR.” [1]"),
])
def test_rag_shows_only_what_its_passages_support(config, reply, expected):
    collection = fill(config)
    with scripted_model(ScriptedChat(replies=[AIMessage(reply)])):
        out = rag.graph.invoke({"messages": [("user", QUESTION)]},
                               context=rag.RagContext(collection=collection))
    assert out["final_response"].split("\n\nSources:")[0] == expected
    assert out["grounding"]["mode"] == ("extractive" if expected.startswith("The knowledge base") else "generated")


def _words(text: str):
    """Yield ``text`` a word at a time, as a streaming model does."""
    import re

    yield from re.findall(r"\S+\s*", text)


def test_a_streamed_answer_shows_each_supported_sentence_as_soon_as_it_is_complete(units, embed):
    from nodes.grounding import Checker, ground_stream

    shown: list[tuple[str, int]] = []
    consumed = {"n": 0}

    def pieces():
        for word in _words("The treasury holds 1,200 XMR. Governance proposals are voted on for seven days. "):
            consumed["n"] += 1
            yield word

    checker = Checker(QUESTION, units, embed)
    ground_stream(pieces(), checker, lambda s: shown.append((s, consumed["n"])))
    assert [s for s, _ in shown] == ["The treasury holds 1,200 XMR [1].",
                                     "Governance proposals are voted on for seven days [2]."]
    assert shown[0][1] < 10, "the first sentence was shown before the rest of the reply was read"
    assert checker.result().answer.startswith("The treasury holds 1,200 XMR [1].")


def test_a_rambling_model_is_stopped_after_max_unsupported_sentences(units, embed):
    from nodes.grounding import Checker, ground_stream

    state = {"read": 0, "closed": False}

    def endless():
        try:
            while True:
                state["read"] += 1
                yield f"A dragon number {state['read']} guards the castle at night. "
        finally:
            state["closed"] = True

    checker = Checker(QUESTION, units, embed)
    ground_stream(endless(), checker, lambda s: None, max_unsupported=2)
    assert state["closed"] and state["read"] <= 3  # stopped (and the stream closed) after two failed sentences
    assert [s["supported"] for s in checker.support] == [False, False]
    assert checker.result().mode == "extractive"


def test_a_looping_stream_is_stopped_at_the_first_repeat(units, embed):
    from nodes.grounding import Checker, ground_stream

    shown: list[str] = []

    def looping():
        yield "Governance proposals are voted on for seven days. "
        while True:
            yield "The treasury holds 1,200 XMR. The treasury holds 1,200 XMR. "

    checker = Checker(QUESTION, units, embed)
    ground_stream(looping(), checker, shown.append)
    # A piece holding a new sentence and its repeat: the new one is shown, then the model is stopped.
    assert shown == ["Governance proposals are voted on for seven days [2].", "The treasury holds 1,200 XMR [1]."]
    assert checker.result().answer == " ".join(shown)
