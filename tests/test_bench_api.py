"""``xmrt bench api`` end to end: its own server, a short load and every bad-request check."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import subprocess_env


@pytest.mark.slow
def test_bench_api_runs_without_errors_and_every_bad_request_is_refused_cleanly(config, tmp_path):
    out = subprocess.run([sys.executable, "-m", "xmrt.cli", "bench", "api", "--clients", "4", "--duration", "6",
                          "--json"], cwd=tmp_path, env=subprocess_env(config), capture_output=True, text=True,
                         timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    load = report["load"]
    assert load["errors"] == 0 and load["runs"] > 0 and load["runs_per_s"] > 0
    assert load["latency_ms"]["run_wait"]["p99"] is not None
    # Each iteration deletes its thread (concurrent deletes are safe: xmrt.dev_runtime).
    assert load["keep_threads"] is False and load["latency_ms"]["delete_thread"]["count"] == load["runs"]
    checks = {c["check"]: c for c in report["checks"]}
    assert set(checks) == {"malformed JSON", "unknown graph", "unknown thread", "payload over 1 MB",
                           "ingest path traversal", "namespace with RediSearch syntax"}
    for name, c in checks.items():
        assert c["ok"] and c["clean"] and 400 <= c["status"] < 500, (name, c)
    assert checks["payload over 1 MB"]["status"] == 413
    assert "allowed roots" in checks["ingest path traversal"]["message"]
