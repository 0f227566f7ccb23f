"""Knowledge tools: search, code-signature search and collection listing over a real ingested collection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kb.test_ingest import CODE_FILES, TEXT_FILES, run, write_tree
from tools.knowledge import (
    KNOWLEDGE_TOOLS,
    knowledge_tools,
    list_knowledge_collections,
    search_code_signatures,
    search_knowledge,
)


@pytest.fixture
def kb(config, tmp_path):
    run(config, write_tree(tmp_path / "kb", {**CODE_FILES, **TEXT_FILES}), collection="tools-kb")
    return config


def test_tools_are_named_and_described():
    assert [t.name for t in KNOWLEDGE_TOOLS] == ["search_knowledge", "search_code_signatures",
                                                 "list_knowledge_collections"]
    assert all(t.description for t in KNOWLEDGE_TOOLS)
    assert {"query", "k", "mode", "source_glob", "file_type", "collection"} <= set(search_knowledge.args)


def test_search_knowledge(kb):
    search, signatures, collections = knowledge_tools(kb, "tools-kb")
    hits = json.loads(search.invoke({"query": "hash power of miners", "k": 3}))
    assert len(hits) == 3 and hits[0]["source"] == "docs/guide.md"
    assert set(hits[0]) >= {"source", "score", "kind", "start_line", "text"}
    assert isinstance(hits[0]["score"], float)
    only_md = json.loads(search.invoke({"query": "treasury", "k": 5, "file_type": "md"}))
    assert only_md and {h["source"] for h in only_md} == {"docs/guide.md"}
    web = json.loads(search.invoke({"query": "shape area", "k": 5, "source_glob": "web/*", "mode": "bm25"}))
    assert web and all(h["source"].startswith("web/") for h in web)
    for mode in ("semantic", "bm25", "hybrid"):
        assert json.loads(search.invoke({"query": "staking rewards", "k": 2, "mode": mode}))
    assert search.invoke({"query": "x", "mode": "magic"}).startswith("error: search mode 'magic'")


def test_search_code_signatures(kb):
    _, signatures, _ = knowledge_tools(kb, "tools-kb")
    found = json.loads(signatures.invoke({"query": "deposit", "k": 3}))
    assert found[0]["symbol"] == "deposit" and found[0]["source"] == "core/lib.rs"
    assert found[0]["signature"].startswith("pub fn deposit(&mut self, amount: u64) -> u64")
    assert set(found[0]) == {"symbol", "kind", "signature", "source", "line", "score"}
    py = json.loads(signatures.invoke({"query": "circle area", "k": 5, "source_glob": "*.py"}))
    assert py and all(s["source"] == "src/geometry.py" for s in py)
    assert "Circle.area" in {s["symbol"] for s in py}


def test_list_collections_and_unknown_collection(kb):
    search, _, collections = knowledge_tools(kb)
    listed = json.loads(collections.invoke({}))
    assert [c["name"] for c in listed] == ["tools-kb"] and listed[0]["chunks"] > 0
    assert search.invoke({"query": "anything"}).startswith("error: no knowledge-base collection named 'default'")
    assert json.loads(search.invoke({"query": "pool", "collection": "tools-kb"}))


def test_module_tools_read_the_configuration_lazily(kb, monkeypatch):
    from xmrt.config import get_config

    monkeypatch.setenv("XMRT_DATA_DIR", str(kb.data_dir))
    for name in ("RAGLIGHT_VECTOR_STORE", "CHROMA_HOST", "RAGLIGHT_EMBEDDING_MODEL", "RAGLIGHT_EMBEDDING_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(kb.data_dir.parent)
    get_config.cache_clear()
    try:
        assert json.loads(list_knowledge_collections.invoke({}))[0]["name"] == "tools-kb"
        hits = json.loads(search_knowledge.invoke({"query": "validators and pools", "collection": "tools-kb"}))
        assert hits and all("source" in h and "score" in h for h in hits)
        sigs = json.loads(search_code_signatures.invoke({"query": "Router class", "collection": "tools-kb"}))
        assert "Router" in {s["symbol"] for s in sigs}
    finally:
        get_config.cache_clear()


def test_importing_the_modules_does_no_io(tmp_path):
    data = tmp_path / "never-created"
    code = ("import tools.knowledge, graphs.ingest, nodes.ingest, xmrt.cli.commands.kb, xmrt.kb.stats, "
            "xmrt.kb.transfer")
    env = {"XMRT_DATA_DIR": str(data), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # this checkout, not whichever one is installed
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=str(tmp_path),
                   capture_output=True)
    assert not data.exists()
