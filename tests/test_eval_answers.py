"""``xmrt eval answers`` on a small folder, through the real graph and the real ``openai`` provider path."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, subprocess_env
from tests.fake_openai import FakeOpenAI
from xmrt.cli.commands.eval_answers import is_correct, normalize

XMRT = [sys.executable, "-m", "xmrt.cli"]


def test_matching_ignores_case_accents_separators_and_punctuation():
    assert normalize("Über 1,200 XMR!") == "uber 1200 xmr"
    assert is_correct("The treasury holds 1200 xmr [1].", ["1,200 XMR"])
    assert not is_correct("The treasury holds 11,200 XMR.", ["1,200 XMR"])
    assert is_correct("Call breakpoint() there.", ["breakpoint()"])


@pytest.fixture
def folder(tmp_path):
    docs = tmp_path / "set"
    docs.mkdir()
    (docs / "treasury.md").write_text("# Treasury\nThe treasury holds 1,200 XMR. Spending above 100 XMR needs a "
                                      "governance vote of token holders.\n")
    (docs / "voting.md").write_text("# Voting\nProposals are voted on for seven days.\n")
    (docs / "questions.jsonl").write_text("\n".join(json.dumps(q) for q in [
        {"question": "Who must approve spending above 100 XMR?", "answers": ["token holders"]},
        {"question": "How long are proposals voted on?", "answers": ["seven days"]},
    ]) + "\n")
    return docs


def test_eval_answers_reports_accuracy_grounding_repetition_and_time(config, folder, tmp_path):
    # The scripted model answers the same wrong thing to everything: only grounded (quoted) answers can score.
    with FakeOpenAI("The council decides in three weeks. The council decides in three weeks.") as fake:
        env = {**subprocess_env(config), **fake.env()}
        out = subprocess.run([*XMRT, "eval", "answers", str(folder), "--json", "--out", str(tmp_path / "rows.json")],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["questions"] == 2 and report["exact_match"] == 1.0
    assert report["extractive_share"] == 1.0 and report["generated_share"] == 0.0
    assert report["repetition_share"] == 0.0 and report["seconds"]["p50"] > 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert all("council" not in r["answer"] for r in rows)
    assert all("questions.jsonl" not in json.dumps(r) for r in rows), "the questions file was ingested"


def test_bad_question_files_are_named(config, folder):
    (folder / "questions.jsonl").write_text('{"question": "x", "answers": []}\n')
    out = subprocess.run([*XMRT, "eval", "answers", str(folder)], cwd=ROOT, env=subprocess_env(config),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "questions.jsonl:1" in out.stderr and "'answers'" in out.stderr
    (folder / "questions.jsonl").unlink()
    out = subprocess.run([*XMRT, "eval", "answers", str(folder)], cwd=ROOT, env=subprocess_env(config),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "questions.jsonl is missing" in out.stderr


@pytest.mark.parametrize("name", ["pydoc", "pydoc2"])
def test_the_shipped_answer_sets_build_offline_and_every_question_has_its_answer_in_the_documents(tmp_path, name):
    from benchmarks.answers.build import SETS, build

    out = build(tmp_path / name, name)  # raises when an accepted answer occurs in no document
    questions = [json.loads(line) for line in (out / "questions.jsonl").read_text().splitlines()]
    assert len(questions) >= 20 and all(q["question"].strip() and q["answers"] for q in questions)
    assert sorted(p.name for p in out.glob("*.md")) == sorted(f"{t}.md" for t in SETS[name])
