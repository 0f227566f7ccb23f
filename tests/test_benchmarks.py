"""benchmarks/: outside the runtime package, reached by ``xmrt bench``; evaluation sets only through XMRT_EVAL_DIR."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks import eval_dir
from tests.conftest import ROOT, subprocess_env
from xmrt.errors import UserError


def test_eval_dir_needs_the_variable_or_an_argument(monkeypatch, tmp_path):
    monkeypatch.delenv("XMRT_EVAL_DIR", raising=False)
    with pytest.raises(UserError, match="set XMRT_EVAL_DIR"):
        eval_dir("msmarco")
    monkeypatch.setenv("XMRT_EVAL_DIR", str(tmp_path))
    with pytest.raises(UserError, match="must hold msmarco/"):
        eval_dir("msmarco")
    (tmp_path / "msmarco").mkdir()
    assert eval_dir("msmarco") == tmp_path / "msmarco"


def test_xmrt_bench_runs_from_benchmarks_and_says_what_is_missing(config):
    env = subprocess_env(config)
    listed = subprocess.run([sys.executable, "-m", "xmrt.cli", "bench", "--help"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    for name in ("eliza", "ingest", "checkpoint", "search", "fusion", "api"):
        assert name in listed.stdout
    out = subprocess.run([sys.executable, "-m", "xmrt.cli", "bench", "fusion"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "XMRT_EVAL_DIR" in out.stderr and "--dataset" in out.stderr


def test_the_runtime_package_holds_no_benchmark():
    assert not (ROOT / "xmrt" / "bench").exists()
    for file in (ROOT / "xmrt").rglob("*.py"):
        text = file.read_text()
        assert '"shared"' not in text and "parents[2].parent" not in text, file
