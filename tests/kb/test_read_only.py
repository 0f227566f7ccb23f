"""A read-only knowledge-base directory: one clear line for what needs writing, kb list and kb stats still work.

The directory is made read-only the way a read-only disk or mount is, for the child process only: a private
mount namespace (``unshare --mount``) with a read-only bind mount over the data directory. This needs root,
as the test suite's set-up does (it installs Debian packages).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, subprocess_env

XMRT = [sys.executable, "-m", "xmrt.cli"]


def _read_only(config, *args):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.fail("this test needs root and util-linux's unshare to mount the data directory read-only")
    data = str(config.data_dir)
    inner = " ".join(["mount", "--bind", "-o", "ro", data, data, "&&", "exec", *[f"'{a}'" for a in [*XMRT, *args]]])
    return subprocess.run(["unshare", "--mount", "sh", "-c", inner], cwd=ROOT, env=subprocess_env(config),
                          capture_output=True, text=True, timeout=300)


def test_read_only_store_lists_and_reports_and_refuses_writes_in_one_line(config, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "treasury.md").write_text("# Treasury\nSpending above 100 XMR needs a governance vote.\n")
    env = subprocess_env(config)
    done = subprocess.run([*XMRT, "ingest", str(docs), "--collection", "readonly"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    listed = _read_only(config, "kb", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(r["name"], r["chunks"], r["documents"]) for r in json.loads(listed.stdout)] == [("readonly", 1, 1)]
    assert "read-only" in listed.stderr
    stats = _read_only(config, "kb", "stats")
    assert stats.returncode == 0 and "collections: 1" in stats.stdout and "read-only" in stats.stdout, stats.stderr
    for args in (("ingest", str(docs), "--collection", "another"), ("ask", "who approves spending?", "--mode", "rag",
                                                                      "--collection", "readonly")):
        refused = _read_only(config, *args)
        assert refused.returncode != 0
        lines = [ln for ln in refused.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "read-only" in lines[0] and "Traceback" not in refused.stderr, refused.stderr
    again = subprocess.run([*XMRT, "kb", "list", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert [r["chunks"] for r in json.loads(again.stdout)] == [1]  # nothing was lost
