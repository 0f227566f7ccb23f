"""Export/import: lossless round trip, refusal of foreign-model, truncated and corrupt files, kb CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.kb.test_ingest import run, write_tree
from xmrt.errors import UserError
from xmrt.kb.index import KnowledgeIndex
from xmrt.kb.transfer import export_collection, import_collection

FILES = {
    "docs/pools.md": "# Mining pools\n\nA pool combines the hash power of many miners and shares the rewards.\n",
    "docs/treasury.md": "# Treasury\n\nThe DAO treasury funds proposals that pass a governance vote.\n",
    "docs/staking.txt": "Staking locks tokens for a period in exchange for voting weight and rewards.\n",
    "src/wallet.py": "class Wallet:\n    \"\"\"Holds keys.\"\"\"\n\n    def sign(self, payload: bytes) -> bytes:\n"
                     "        return payload\n\n\ndef transfer(src, dst, amount):\n    return amount\n",
}
QUERIES = ["how are mining rewards shared", "treasury governance vote", "sign a payload with a wallet", "staking"]


def snapshot(index: KnowledgeIndex) -> dict:
    got = index.get(include_embeddings=True)
    return {cid: (text, meta, emb) for cid, text, meta, emb in
            zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True)}


def assert_same_store(got: dict, expected: dict) -> None:
    """Ids, texts and metadata exactly; vectors to within float32 rounding (Chroma re-normalises on write)."""
    assert set(got) == set(expected)
    for cid, (text, meta, emb) in expected.items():
        assert got[cid][0] == text and got[cid][1] == meta
        assert np.allclose(got[cid][2], emb, rtol=0, atol=1e-6)


def results(index: KnowledgeIndex) -> list:
    out = []
    for query in QUERIES:
        for mode in ("semantic", "bm25", "hybrid"):
            out.append([(h.id, h.score) for h in index.search(query, k=5, mode=mode)])
        out.append([(h.id, h.score) for h in index.search(query, k=3, kind="signature")])
    return out


def assert_same_results(got: list, expected: list) -> None:
    assert len(got) == len(expected)
    for hits, want in zip(got, expected, strict=True):
        assert [i for i, _ in hits] == [i for i, _ in want]  # same hits, same order
        assert np.allclose([s for _, s in hits], [s for _, s in want], rtol=0, atol=1e-5)


@pytest.fixture
def exported(config, tmp_path) -> tuple[Path, dict, list]:
    run(config, write_tree(tmp_path / "src", FILES), collection="source-kb")
    index = KnowledgeIndex(config, "source-kb")
    snap, res = snapshot(index), results(index)
    index.close()
    path = tmp_path / "export" / "kb.jsonl"
    header = export_collection(config, path, "source-kb")
    assert header["count"] == len(snap) and header["embedding_model"] == "huggingface:all-MiniLM-L6-v2+onnx-int8"
    return path, snap, res


def fresh(config, tmp_path, name: str):
    return config.with_overrides(data_dir=tmp_path / name, vector_store_dir=tmp_path / name / "chroma")


def test_export_file_layout(exported):
    path, snap, _ = exported
    lines = path.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "xmrt-kb-export" and header["version"] == 1
    assert header["collection"] == "source-kb" and header["dims"] == 384 and header["count"] == len(lines) - 1
    assert header["checksum"].startswith("sha256:")
    record = json.loads(lines[1])
    assert set(record) == {"id", "text", "metadata", "content_hash", "embedding"}
    assert record["metadata"]["content_hash"] == record["content_hash"] and len(record["embedding"]) == 384


def test_round_trip_into_an_empty_store_is_lossless(config, tmp_path, exported):
    path, snap, res = exported
    other = fresh(config, tmp_path, "other")
    assert KnowledgeIndex.list_collections(other) == []
    result = import_collection(other, path)
    assert result == {"collection": "source-kb", "imported": len(snap),
                      "embedding_model": "huggingface:all-MiniLM-L6-v2+onnx-int8", "chunks": len(snap)}
    index = KnowledgeIndex(other, "source-kb")
    assert_same_store(snapshot(index), snap)
    assert_same_results(results(index), res)  # identical search results in every mode
    index.close()
    again = import_collection(other, path, "renamed-kb")  # into another collection name
    assert again["collection"] == "renamed-kb" and again["chunks"] == len(snap)


def _target_with_data(config, tmp_path) -> tuple:
    run(config, write_tree(tmp_path / "existing", {"keep.md": "# Keep me\n\nexisting content\n"}), collection="target")
    index = KnowledgeIndex(config, "target")
    before = snapshot(index)
    index.close()
    return before


def _assert_untouched(config, before):
    index = KnowledgeIndex(config, "target")
    assert snapshot(index) == before
    index.close()


def test_other_embedding_model_is_refused(config, tmp_path, exported):
    path, _, _ = exported
    before = _target_with_data(config, tmp_path)
    lines = path.read_text(encoding="utf-8").split("\n")
    header = json.loads(lines[0])
    header["embedding_model"] = "openai:text-embedding-3-small"
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text("\n".join([json.dumps(header)] + lines[1:]), encoding="utf-8")
    with pytest.raises(UserError, match="exported with embedding model 'openai:text-embedding-3-small'"):
        import_collection(config, foreign, "target")
    _assert_untouched(config, before)


@pytest.mark.parametrize("damage", ["cut-mid-line", "cut-last-record", "bad-json", "text-changed", "vector-changed",
                                    "extra-record", "empty", "not-export"])
def test_truncated_or_corrupt_files_leave_the_collection_intact(config, tmp_path, exported, damage):
    path, _, _ = exported
    before = _target_with_data(config, tmp_path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    if damage == "cut-mid-line":
        data = data[: len(data) - 500]
    elif damage == "cut-last-record":
        data = b"\n".join(lines[:-2]) + b"\n"
    elif damage == "bad-json":
        lines[2] = lines[2][:40] + b"}{" + lines[2][40:]
        data = b"\n".join(lines)
    elif damage == "text-changed":
        rec = json.loads(lines[1])
        rec["text"] += " tampered"
        lines[1] = json.dumps(rec).encode()
        data = b"\n".join(lines)
    elif damage == "vector-changed":  # keeps valid JSON and content hash: only the checksum catches it
        rec = json.loads(lines[1])
        rec["embedding"][0] = 0.5
        lines[1] = json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode()
        data = b"\n".join(lines)
    elif damage == "extra-record":
        data = data + lines[1] + b"\n"
    elif damage == "empty":
        data = b""
    elif damage == "not-export":
        data = b"hello\nworld\n"
    bad = tmp_path / f"{damage}.jsonl"
    bad.write_bytes(data)
    with pytest.raises(UserError) as info:
        import_collection(config, bad, "target")
    assert "\n" not in str(info.value)
    _assert_untouched(config, before)
    fresh_config = fresh(config, tmp_path, "untouched")
    with pytest.raises(UserError):
        import_collection(fresh_config, bad)
    assert KnowledgeIndex.list_collections(fresh_config) == []  # not even an empty collection was created


def test_export_of_unknown_collection(config, tmp_path):
    with pytest.raises(UserError, match="no collection named 'missing'"):
        export_collection(config, tmp_path / "x.jsonl", "missing")
    assert not (tmp_path / "x.jsonl").exists()


def test_kb_cli_commands(config, tmp_path, monkeypatch, capsys):
    from xmrt.cli import main

    monkeypatch.setenv("XMRT_DATA_DIR", str(config.data_dir))
    for name in ("RAGLIGHT_VECTOR_STORE", "CHROMA_HOST", "RAGLIGHT_EMBEDDING_MODEL", "RAGLIGHT_EMBEDDING_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    root = write_tree(tmp_path / "c", FILES)
    assert main(["ingest", str(root), "--collection", "cli-kb", "--json"]) == 0
    capsys.readouterr()
    out_file = tmp_path / "cli.jsonl"
    assert main(["kb", "export", str(out_file), "--collection", "cli-kb"]) == 0
    assert "exported" in capsys.readouterr().out
    assert main(["kb", "import", str(out_file), "--collection", "cli-copy"]) == 0
    assert "imported" in capsys.readouterr().out
    assert main(["kb", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"cli-kb", "cli-copy"} and rows["cli-kb"]["chunks"] == rows["cli-copy"]["chunks"]
    assert main(["kb", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["collections"] == 2 and stats["documents"] == 8 and stats["last_ingest"]
    assert main(["kb", "stats"]) == 0
    assert "collections: 2" in capsys.readouterr().out
    assert main(["kb", "drop", "cli-copy"]) == 0
    assert KnowledgeIndex.list_collections(config) == ["cli-kb"]
    capsys.readouterr()
    assert main(["kb", "drop", "cli-copy"]) == 2
    assert "no collection named 'cli-copy'" in capsys.readouterr().err
    out_file.write_bytes(out_file.read_bytes()[:-100])
    assert main(["kb", "import", str(out_file)]) == 2
    assert "truncated" in capsys.readouterr().err
