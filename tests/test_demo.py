import subprocess
import sys

import pytest

from tests.conftest import ROOT, subprocess_env


@pytest.mark.slow
def test_main_job_runs_end_to_end_and_a_second_run_reuses_what_the_first_stored(app_config):
    """`xmrt demo` (the README's first command) with the real local model, twice."""
    env = subprocess_env(app_config)
    cmd = [sys.executable, "-m", "xmrt.cli", "demo", "--no-llm", "--agent", "demo-test"]
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    for step in ("1. ingest", "2. ask (RAG)", "3. memory", "4. Eliza", "5. status"):
        assert step in out
    assert "added 3," in out and "treasury.md" in out
    assert "APPROVE" in out or "REJECT" in out or "DEFER" in out
    assert "3 with outcomes" in out
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "added 0, updated 0, unchanged 3" in second.stdout and "chunks_embedded 0" in second.stdout
    assert "6 with outcomes" in second.stdout
    assert "recalled 0 memories" not in second.stdout
