"""The scale-out path: the knowledge base against a real Chroma server (``chroma run``) via CHROMA_HOST."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, make_config
from xmrt.kb.chroma import clear_client_cache


@pytest.fixture
def chroma_server(tmp_path):
    port = free_port()
    exe = Path(sys.executable).with_name("chroma")
    proc = subprocess.Popen([str(exe), "run", "--path", str(tmp_path / "chroma-server"), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        assert proc.poll() is None, "chroma run exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        pytest.fail("chroma run did not come up")
    yield port
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(20)
    clear_client_cache()


def test_ingest_and_search_against_a_chroma_server(chroma_server, redis_server, tmp_path):
    from xmrt.kb.index import KnowledgeIndex
    from xmrt.kb.ingest import ingest_path

    config = make_config(tmp_path / "data", redis_server.port, CHROMA_HOST="127.0.0.1", CHROMA_PORT=str(chroma_server))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "treasury.md").write_text("Spending above 100 XMR needs a governance vote of token holders.")
    (docs / "mining.md").write_text("Mining rewards are pooled and paid out weekly to members.")
    summary = ingest_path(config, str(docs), collection="server-kb", progress=False)
    assert summary["added"] == 2
    index = KnowledgeIndex(config, "server-kb")
    for mode in ("semantic", "bm25", "hybrid"):
        hits = index.search("who approves large spending?", k=1, mode=mode)
        assert hits[0].metadata["source"] == "treasury.md", mode
    # Nothing was written to the local Chroma directory: the data lives on the server.
    assert not (config.vector_store_dir / "chroma.sqlite3").exists()
    assert "server-kb" in KnowledgeIndex.list_collections(config)
    assert ingest_path(config, str(docs), collection="server-kb", progress=False)["unchanged"] == 2
