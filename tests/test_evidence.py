"""Evidence sentences and the quotes that best answer a question (nodes.evidence), and who words an answer."""

from __future__ import annotations

import numpy as np
import pytest

from nodes.evidence import Unit, best_quotes, named, prose_sentences

PYDOC_ASSERT = '''The simple form, "assert expression", is equivalent to

   if __debug__:
       if not expression: raise AssertionError

These equivalences assume that "__debug__" and "AssertionError" refer
to the built-in variables with those names.
'''

PYDOC_DEBUGGER = '''The typical usage to break into the debugger is to insert:

   import pdb; pdb.set_trace()

Or:

   breakpoint()

at the location you want to break into the debugger, and then run the
program. You can then step through the code.
'''


def test_a_lead_in_keeps_the_short_code_block_it_introduces():
    sentences = prose_sentences(PYDOC_ASSERT)
    assert ('The simple form, "assert expression", is equivalent to if __debug__: if not expression: raise '
            'AssertionError') in sentences
    assert any(s.startswith("These equivalences assume") for s in sentences)


def test_a_lead_in_goes_on_after_its_blocks_and_or_chains_them():
    sentences = prose_sentences(PYDOC_DEBUGGER)
    assert ("The typical usage to break into the debugger is to insert: import pdb; pdb.set_trace() Or: breakpoint() "
            "at the location you want to break into the debugger, and then run the program.") in sentences


def test_a_long_code_block_is_not_glued_to_its_lead_in():
    code = "\n".join(f"   line_{i} = compute({i}, more_arguments, and_more)" for i in range(8))
    sentences = prose_sentences(f"An example follows:\n\n{code}\n\nThat is all.")
    assert not any("line_3" in s for s in sentences)
    assert "That is all." in sentences


def test_a_sentence_that_opens_with_a_pronoun_or_connective_carries_the_one_before():
    text = ("Otherwise, raise evaluates the first expression as the exception object. It must be either a subclass "
            "or an instance of BaseException.\n\nThe Ellipsis Object\n*******************\n\nThis object is commonly "
            "used by slicing. When a thing fails, the program stops. In either case, it prints a traceback.")
    sentences = prose_sentences(text)
    assert ("Otherwise, raise evaluates the first expression as the exception object. It must be either a subclass "
            "or an instance of BaseException.") in sentences
    assert "The Ellipsis Object: This object is commonly used by slicing." in sentences
    assert "When a thing fails, the program stops. In either case, it prints a traceback." in sentences


def test_footnote_marks_do_not_glue_sentences():
    sentences = prose_sentences("It returns zero when called with the object. [1]  Here are most of them:")
    assert sentences[0] == "It returns zero when called with the object."


def test_names_an_answer_is_made_of():
    found = named('Raises "RuntimeError" (see AssertionError), call breakpoint() or pass -O to __debug__; 3.11.')
    assert {"runtimeerror", "assertionerror", "breakpoint()", "-o", "__debug__", "3.11"} <= found


def _vectors(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors equally similar to the question: the choice rests on words and names."""
    return np.ones((n, 2), dtype=np.float32) / np.sqrt(2), np.array([1.0, 0.0], dtype=np.float32)


def test_a_quote_that_contains_a_chosen_one_replaces_it():
    units = [Unit("Leading zeros in a non-zero decimal number are not allowed.", "[1]"),
             Unit("Leading zeros in a non-zero decimal number are not allowed. This is for disambiguation with "
                  "C-style octal literals.", "[1]"),
             Unit("Underscores group digits.", "[2]")]
    unit_v, q_v = _vectors(3)
    chosen = best_quotes("Why are leading zeros not allowed in a decimal number?", units, unit_v, q_v, extract=2)
    assert chosen[0] is units[1]
    assert units[0] not in chosen


def test_function_words_the_evidence_quotes_count_as_the_questions_words():
    units = [Unit('The optional "else" clause of a "try" statement is executed when no exception occurred.', "[1]"),
             Unit('The "while" statement executes the "else" clause when the expression is false.', "[2]")]
    unit_v, q_v = _vectors(2)
    chosen = best_quotes("When is the else clause of a while statement executed?", units, unit_v, q_v, extract=1)
    assert chosen == [units[1]]


def test_a_sentence_that_names_something_new_is_preferred():
    units = [Unit("A failing assert statement stops the program.", "[1]"),
             Unit('A failing assert statement raises "AssertionError".', "[1]")]
    unit_v, q_v = _vectors(2)
    assert best_quotes("What does a failing assert statement raise?", units, unit_v, q_v, extract=1) == [units[1]]


# ------------------------------------------------------------------------------------------ who words the answer
@pytest.mark.parametrize(("style", "scripted", "provider", "expected"), [
    ("generate", False, "huggingface", True), ("quote", True, "openai", False), ("auto", True, "huggingface", True),
    ("auto", False, "huggingface", False), ("auto", False, "openai", True)])
def test_answer_style_decides_who_words_the_answer(monkeypatch, style, scripted, provider, expected):
    from graphs.context import RagContext
    from nodes import models
    from xmrt import services
    from xmrt.config import create_config

    config = create_config({"RAGLIGHT_LLM_PROVIDER": provider, "OPENAI_API_KEY": "sk-test"}, env_file=None)
    monkeypatch.setattr(services, "config", lambda: config)
    ctx = RagContext(answer_style=style)
    if scripted:
        from tests.fakes import ScriptedChat

        with models.scripted_model(ScriptedChat(replies=["x"])):
            assert models.writes_answers(ctx) is expected
    else:
        assert models.writes_answers(ctx) is expected


def test_an_acronym_spelled_out_answers_what_it_stands_for_only():
    units = [Unit("A simple language designed for students.", "[1]"),
             Unit("Beginner's All-purpose Symbolic Instruction Code.", "[1]")]
    unit_v, q_v = _vectors(2)
    assert best_quotes("What does BASIC stand for?", units, unit_v, q_v, extract=1) == [units[1]]
    assert best_quotes("Who designed BASIC for students?", units, unit_v, q_v, extract=1) == [units[0]]


def test_a_markdown_heading_on_the_line_above_its_text_is_a_topic_not_part_of_the_first_sentence():
    from nodes.evidence import evidence_sentences

    pairs = evidence_sentences("# Treasury policy\nThe treasury holds XMR. Spending above 100 XMR needs a vote.")
    assert ("Treasury policy", "The treasury holds XMR.") in pairs
    assert ("Treasury policy", "Spending above 100 XMR needs a vote.") in pairs
    assert ("", "The treasury policy is public.") in evidence_sentences("# Treasury policy\nThe treasury policy is "
                                                                         "public.")  # names its topic
    assert not any(sentence.startswith("#") for _topic, sentence in pairs)
