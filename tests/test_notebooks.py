"""The notebooks run top to bottom against the test Redis (nbclient, the venv's ipykernel)."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT
from tests.served import LangGraphServer, server_env

NOTEBOOKS = ROOT / "notebooks"


def _execute(name: str, out_dir) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, out_dir / name)  # the executed copy, with outputs, for inspection
    return nb


def _text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.slow
def test_quickstart_notebook_runs(app_config, monkeypatch, tmp_path):
    monkeypatch.setenv("XMRT_LLM_MAX_NEW_TOKENS", "48")
    nb = _execute("quickstart.ipynb", tmp_path)
    text = _text(nb)
    assert "Redis:" in text and "redis connected: True" in text
    assert "documents: 3" in text
    assert "qs-1: reject" in text or "qs-1: defer" in text
    assert "recorded 3" in text


@pytest.mark.slow
def test_remote_notebook_runs_against_the_served_api(config, monkeypatch, tmp_path):
    keys = "nb-key-00001:notebook"
    server = LangGraphServer({**server_env(config), "XMRT_API_KEYS": keys}, tmp_path / "langgraph-dev.log").start()
    try:
        monkeypatch.setenv("XMRT_API_URL", server.url)
        monkeypatch.setenv("XMRT_API_KEY", "nb-key-00001")
        for name in list(os.environ):
            if name.startswith(("LANGGRAPH_API_KEY", "LANGSMITH_API_KEY", "LANGCHAIN_API_KEY")):
                monkeypatch.delenv(name)
        nb = _execute("remote.ipynb", tmp_path)
    except Exception:
        print(server.tail())
        raise
    finally:
        server.stop()
    text = _text(nb)
    assert "'eliza'" in text and "nodes streamed:" in text and "remote-2" in text
    assert "the same thread, now with" in text and "api_key_auth': True" in text
