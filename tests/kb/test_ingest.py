"""Ingestion: loaders, splitting, signatures, globs, incremental re-ingest, git sources, bad input, CLI, stats.

Real Chroma, real MiniLM embeddings, real git; nothing mocked. Corpora are tiny so the whole file runs quickly.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import pytest

from graphs.ingest import IngestContext, builder, graph
from xmrt.errors import UserError
from xmrt.kb.index import KnowledgeIndex
from xmrt.kb.sources import Git, GitSourceError, public_url
from xmrt.kb.splitting import sha256_text
from xmrt.kb.stats import kb_stats

REQUIRED_META = {
    "source": str, "source_root": str, "file_type": str, "kind": str, "language": str, "chunk_index": int,
    "start_line": int, "content_hash": str, "file_hash": str, "signatures": str, "ingested_at": str,
}


def make_pdf(pages: list[str]) -> bytes:
    """A small valid PDF with one line of Helvetica text per page."""
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: f"<< /Type /Pages /Kids [{' '.join(f'{4 + 2 * i} 0 R' for i in range(len(pages)))}] "
           f"/Count {len(pages)} >>".encode(),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    for i, text in enumerate(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects[4 + 2 * i] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects[5 + 2 * i] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
    out = b"%PDF-1.4\n"
    offsets = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += f"{num} 0 obj\n".encode() + objects[num] + b"\nendobj\n"
    xref = len(out)
    size = max(objects) + 1
    out += f"xref\n0 {size}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offsets[n]:010d} 00000 n \n".encode() for n in range(1, size))
    out += f"trailer\n<< /Size {size} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


CODE_FILES = {
    "src/geometry.py": (
        "import math\n\n\nclass Circle(Shape):\n    \"\"\"A circle with a radius.\"\"\"\n\n"
        "    def area(self, precision: int = 2) -> float:\n        \"\"\"Area of the circle.\"\"\"\n"
        "        return round(math.pi * self.r ** 2, precision)\n\n\n"
        "async def fetch_shapes(url: str) -> list[Circle]:\n    return []\n"
    ),
    "web/app.js": "export class Router {\n  constructor(routes) { this.routes = routes; }\n}\n\n"
                  "export function navigate(path) {\n  return path;\n}\n",
    "web/types.ts": "export interface Shape {\n  area(): number;\n}\n\n"
                    "export const scale = (s: Shape, k: number): number => s.area() * k;\n",
    "svc/server.go": "package svc\n\ntype Server struct {\n\tport int\n}\n\n"
                     "func (s *Server) ListenAndServe(addr string) error {\n\treturn nil\n}\n",
    "core/lib.rs": "pub struct Ledger {\n    total: u64,\n}\n\nimpl Ledger {\n"
                   "    pub fn deposit(&mut self, amount: u64) -> u64 {\n        self.total += amount;\n"
                   "        self.total\n    }\n}\n",
    "java/Wallet.java": "package x;\n\npublic class Wallet {\n"
                        "    public long balance(String owner) {\n        return 0L;\n    }\n}\n",
    "native/hash.c": "#include <stdint.h>\n\nuint32_t fnv1a_hash(const char *data, int len)\n{\n"
                     "    return 0;\n}\n",
    "native/miner.cpp": "#include <vector>\n\nclass Miner : public Worker {\npublic:\n    void run();\n};\n\n"
                        "int Miner::hashrate(int threads) const {\n    return threads;\n}\n",
}
TEXT_FILES = {
    "docs/guide.md": "# Mining guide\n\nXMRT miners contribute hash power to the DAO.\n\n"
                     "## Setup\n\nInstall the miner and point it at the pool.\n",
    "docs/notes.txt": "Plain notes about governance proposals and voting periods.\n",
    "docs/manual.rst": "Manual\n======\n\nThe treasury holds the DAO's reserves.\n",
    "docs/page.html": "<html><head><title>Staking</title><style>body{color:red}</style></head>"
                      "<body><h1>Staking rewards</h1><p>Rewards &amp; penalties are paid weekly.</p>"
                      "<script>var secret = 1;</script></body></html>",
    "config/settings.json": '{"pool": "xmrt.example", "threads": 4}\n',
    "config/deploy.yaml": "service: xmrt-agents\nreplicas: 2\n",
}


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def run(config, source, **kwargs):
    payload = {"source": str(source)}
    for key in ("branch", "working_tree"):
        if key in kwargs:
            payload[key] = kwargs.pop(key)
    kwargs.setdefault("progress", False)
    return graph.invoke(payload, context=IngestContext(**kwargs))["summary"]


def all_chunks(config, collection="default", where=None):
    index = KnowledgeIndex(config, collection)
    try:
        return index.get(where=where)
    finally:
        index.close()


@pytest.fixture
def corpus(tmp_path) -> Path:
    root = write_tree(tmp_path / "corpus", {**CODE_FILES, **TEXT_FILES, "docs/report.pdf": make_pdf(
        ["Quarterly treasury report", "Second page about liquidity pools"])})
    write_tree(root, {"node_modules/dep/index.js": "export function ignored() {}\n",
                      ".venv/lib/site.py": "def ignored():\n    pass\n",
                      "build/out.txt": "build output\n", "src/__pycache__/x.txt": "cache\n"})
    return root


def bad_files(root: Path) -> dict[str, str]:
    """Write one file of each bad kind; returns rel path -> expected reason fragment."""
    write_tree(root, {
        "bad/blob.dat": b"\x00\x01\x02binary\x00data",
        "bad/image.png": b"\x89PNG\r\n\x1a\n\x00\x00",
        "bad/empty.md": b"",
        "bad/blank.txt": b"   \n\n",
        "bad/latin1.txt": "café crème".encode("latin-1"),
        "bad/broken.pdf": b"%PDF-1.4\nthis is not really a pdf\n",
    })
    (root / "bad" / "dangling.txt").symlink_to(root / "bad" / "missing-target.txt")
    return {"bad/blob.dat": "binary", "bad/image.png": "binary", "bad/empty.md": "empty",
            "bad/blank.txt": "empty", "bad/latin1.txt": "UTF-8", "bad/broken.pdf": "corrupt PDF",
            "bad/dangling.txt": "unreadable"}


def test_graph_exports_builder_and_graph_without_checkpointer():
    assert graph.checkpointer is None
    assert builder.context_schema is IngestContext
    assert {"resolve_source", "scan_files", "plan_changes", "index_files", "remove_files", "finish"} <= set(
        graph.get_graph().nodes)


def test_folder_ingest_types_metadata_and_signatures(config, corpus):
    summary = run(config, corpus)
    expected_files = len(CODE_FILES) + len(TEXT_FILES) + 1
    assert summary["files"] == {"added": expected_files, "updated": 0, "unchanged": 0, "removed": 0, "skipped": 0}
    assert summary["source_root"] == str(corpus.resolve())
    got = all_chunks(config)
    sources = {m["source"] for m in got["metadatas"]}
    assert sources == set(CODE_FILES) | set(TEXT_FILES) | {"docs/report.pdf"}  # ignore list honoured
    assert summary["chunks_embedded"] == len(got["ids"]) == summary["chunks_in_collection"]

    for cid, text, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
        for key, kind in REQUIRED_META.items():
            assert isinstance(meta[key], kind), (key, meta)
        assert meta["content_hash"] == sha256_text(text)
        assert meta["kind"] in ("text", "code", "signature")
        assert meta["file_type"] == Path(meta["source"]).suffix[1:]
        raw = (corpus / meta["source"]).read_bytes()
        import hashlib

        assert meta["file_hash"] == hashlib.sha256(raw).hexdigest()

    by_source = {}
    for text, meta in zip(got["documents"], got["metadatas"], strict=True):
        by_source.setdefault(meta["source"], []).append((text, meta))
    # HTML: tags, script and style stripped; entities decoded
    html = " ".join(t for t, m in by_source["docs/page.html"])
    assert "Staking rewards" in html and "Rewards & penalties" in html
    assert "<" not in html and "secret" not in html and "color:red" not in html
    # PDF: text of both pages, with page numbers
    pdf = by_source["docs/report.pdf"]
    assert "Quarterly treasury report" in pdf[0][0] and "liquidity pools" in " ".join(t for t, _ in pdf)
    assert pdf[0][1]["page"] == 1
    # code: kind, language and signatures per language, both in chunk metadata and as signature chunks
    expected_symbols = {
        "src/geometry.py": {"Circle", "Circle.area", "fetch_shapes"},
        "web/app.js": {"Router", "navigate"},
        "web/types.ts": {"Shape", "scale"},
        "svc/server.go": {"Server", "ListenAndServe"},
        "core/lib.rs": {"Ledger", "deposit"},
        "java/Wallet.java": {"Wallet", "balance"},
        "native/hash.c": {"fnv1a_hash"},
        "native/miner.cpp": {"Miner", "Miner::hashrate"},
    }
    for source, symbols in expected_symbols.items():
        chunks = by_source[source]
        code = [m for _, m in chunks if m["kind"] == "code"]
        sigs = [m for _, m in chunks if m["kind"] == "signature"]
        assert code and code[0]["chunk_index"] == 0 and code[0]["start_line"] == 1
        assert symbols <= {m["symbol"] for m in sigs}, (source, [m["symbol"] for m in sigs])
        assert code[0]["signatures"], source
    py_meta = [m for _, m in by_source["src/geometry.py"] if m["kind"] == "code"][0]
    assert py_meta["language"] == "python"
    assert "class Circle(Shape):" in py_meta["signatures"]
    assert "def area(self, precision: int=2) -> float:" in py_meta["signatures"]
    area = [(t, m) for t, m in by_source["src/geometry.py"] if m.get("symbol") == "Circle.area"][0]
    assert area[1]["start_line"] == 7 and "Area of the circle." in area[0]
    for source in TEXT_FILES:
        assert all(m["kind"] == "text" for _, m in by_source[source])

    # signatures are searchable on their own
    index = KnowledgeIndex(config)
    hits = index.search("deposit amount into the ledger", k=3, kind="signature")
    assert hits[0].metadata["symbol"] == "deposit" and hits[0].metadata["source"] == "core/lib.rs"
    index.close()


def test_bad_files_are_skipped_with_a_warning_each(config, corpus, caplog):
    expected = bad_files(corpus)
    with caplog.at_level(logging.WARNING, logger="xmrt.kb"):
        summary = run(config, corpus)
    skipped = {s["source"]: s["reason"] for s in summary["skipped"]}
    assert set(skipped) == set(expected)
    for source, fragment in expected.items():
        assert fragment in skipped[source], (source, skipped[source])
        assert any(source in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING), source
    assert summary["files"]["skipped"] == len(expected)
    assert summary["files"]["added"] == len(CODE_FILES) + len(TEXT_FILES) + 1  # the good files all made it
    sources = {m["source"] for m in all_chunks(config)["metadatas"]}
    assert not sources & set(expected)


def test_progress_bar_on_stderr(config, tmp_path, capsys):
    root = write_tree(tmp_path / "p", {"a.md": "# A\n\nprogress bar test\n"})
    run(config, root, progress=True)
    assert "chunk" in capsys.readouterr().err


def test_include_exclude_globs(config, corpus):
    summary = run(config, corpus, collection="globs", include=["*.py", "docs/*"], exclude=["docs/*.html"])
    sources = {m["source"] for m in all_chunks(config, "globs")["metadatas"]}
    assert sources == {"src/geometry.py", "docs/guide.md", "docs/notes.txt", "docs/manual.rst", "docs/report.pdf"}
    assert summary["files"]["added"] == 5
    run(config, corpus, collection="globs2", exclude=["native", "web/**/*.ts"])
    sources = {m["source"] for m in all_chunks(config, "globs2")["metadatas"]}
    assert not any(s.startswith("native/") for s in sources) and "web/types.ts" not in sources
    assert "web/app.js" in sources


def test_chunk_size_overlap_and_positions(config, tmp_path):
    lines = [f"Line {i}: the XMRT treasury allocates funds to proposal number {i}." for i in range(1, 121)]
    root = write_tree(tmp_path / "big", {"long.txt": "\n".join(lines) + "\n"})
    run(config, root, collection="small", chunk_size=300, chunk_overlap=150)
    run(config, root, collection="large", chunk_size=2000, chunk_overlap=0)
    small, large = all_chunks(config, "small"), all_chunks(config, "large")
    assert len(small["ids"]) > 2 * len(large["ids"])
    assert all(len(t) <= 300 for t in small["documents"])
    ordered = sorted(zip(small["documents"], small["metadatas"], strict=True), key=lambda p: p[1]["chunk_index"])
    assert [m["chunk_index"] for _, m in ordered] == list(range(len(ordered)))
    for text, meta in ordered:  # start_line points at the chunk's first line in the file
        assert lines[meta["start_line"] - 1].startswith(text.split("\n", 1)[0])
    first, second = ordered[0][0].split("\n"), ordered[1][0].split("\n")
    assert second[0] in first[1:]  # neighbours overlap
    with pytest.raises(UserError, match="overlap"):
        run(config, root, collection="bad", chunk_size=100, chunk_overlap=100)
    with pytest.raises(UserError, match="chunk size"):
        run(config, root, collection="bad", chunk_size=10, chunk_overlap=0)


def test_incremental_reingest(config, tmp_path):
    files = {f"doc{i}.md": f"# Document {i}\n\nTopic number {i}: mining pools and DAO treasury.\n" for i in range(6)}
    files["code.py"] = "def stable():\n    return 1\n"
    root = write_tree(tmp_path / "inc", files)
    first = run(config, root)
    assert first["files"]["added"] == 7 and first["chunks_embedded"] > 0
    ids_before = set(all_chunks(config)["ids"])

    # unchanged: no embedding, the graph goes from the plan straight to the report
    nodes = [list(u)[0] for u in graph.stream({"source": str(root)}, context=IngestContext(progress=False),
                                               stream_mode="updates")]
    assert "index_files" not in nodes and "remove_files" not in nodes and nodes[-1] == "finish"
    again = run(config, root)
    assert again["files"] == {"added": 0, "updated": 0, "unchanged": 7, "removed": 0, "skipped": 0}
    assert again["chunks_embedded"] == 0 and again["chunks_removed"] == 0
    assert set(all_chunks(config)["ids"]) == ids_before  # idempotent ids

    # one changed, one deleted, one new
    (root / "doc1.md").write_text("# Document 1\n\nRewritten: validators and staking rewards.\n", encoding="utf-8")
    (root / "doc2.md").unlink()
    (root / "doc9.md").write_text("# Document 9\n\nA brand new page about governance votes.\n", encoding="utf-8")
    third = run(config, root)
    assert third["files"] == {"added": 1, "updated": 1, "unchanged": 5, "removed": 1, "skipped": 0}
    got = all_chunks(config)
    by_source: dict[str, list[str]] = {}
    for text, meta in zip(got["documents"], got["metadatas"], strict=True):
        by_source.setdefault(meta["source"], []).append(text)
    assert "doc2.md" not in by_source
    assert by_source["doc1.md"] == ["# Document 1\n\nRewritten: validators and staking rewards."]
    assert "doc9.md" in by_source
    assert third["chunks_embedded"] == 2 and third["chunks_removed"] == 2
    assert third["chunks_in_collection"] == len(got["ids"])

    # only deletions: routed to remove_files without loading or embedding anything
    (root / "doc3.md").unlink()
    fourth = run(config, root)
    assert fourth["files"]["removed"] == 1 and fourth["chunks_embedded"] == 0 and fourth["chunks_removed"] == 1

    # a file that turns bad loses its old chunks and is reported
    (root / "doc4.md").write_bytes(b"\xff\xfe\x00\x00broken")
    fifth = run(config, root)
    assert [s["source"] for s in fifth["skipped"]] == ["doc4.md"]
    assert "doc4.md" not in {m["source"] for m in all_chunks(config)["metadatas"]}

    # other chunk settings re-split every file
    sixth = run(config, root, chunk_size=500, chunk_overlap=50)
    assert sixth["files"]["updated"] == 5 and sixth["files"]["unchanged"] == 0

    # a different source root in the same collection is independent
    other = write_tree(tmp_path / "other", {"doc0.md": "# Other root\n\nSame name, other folder.\n"})
    run(config, other)
    seventh = run(config, root, chunk_size=500, chunk_overlap=50)
    assert seventh["files"]["unchanged"] == 5 and seventh["files"]["removed"] == 0


def test_ingest_path_runs_the_same_steps_without_the_graph(config, tmp_path):
    from xmrt.kb.ingest import ingest_path

    root = write_tree(tmp_path / "plain", {"a.md": "# A\n\nalpha\n", "b.txt": "beta\n", "c.bin": b"\x00"})
    first = ingest_path(config, str(root), collection="plain", progress=False)
    assert first["files"] == {"added": 2, "updated": 0, "unchanged": 0, "removed": 0, "skipped": 1}
    assert (first["added"], first["updated"], first["unchanged"], first["removed"]) == (2, 0, 0, 0)
    (root / "b.txt").unlink()
    graph_summary = run(config, root, collection="plain")  # the graph sees what ingest_path wrote
    assert graph_summary["files"] == {"added": 0, "updated": 0, "unchanged": 1, "removed": 1, "skipped": 1}
    assert ingest_path(config, str(root), collection="plain", progress=False)["unchanged"] == 1


def test_single_file_source(config, tmp_path):
    path = write_tree(tmp_path / "one", {"single.md": "# Single\n\nJust one file.\n"}) / "single.md"
    summary = run(config, path, collection="onefile")
    assert summary["files"]["added"] == 1 and summary["source_kind"] == "file"
    assert {m["source"] for m in all_chunks(config, "onefile")["metadatas"]} == {"single.md"}


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path) -> Path:
    """A local repository whose default branch is 'trunk' (not main), with a second branch 'feature'."""
    root = write_tree(tmp_path / "repo", {"app.py": "class Pool:\n    def join(self, miner):\n        return miner\n",
                                          "README.md": "# Pool\n\nA mining pool service.\n"})
    _git(root, "init", "-q", "-b", "trunk")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "init")
    _git(root, "checkout", "-qb", "feature")
    write_tree(root, {"feature.md": "# Feature\n\nOnly on the feature branch.\n"})
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "feature")
    _git(root, "checkout", "-q", "trunk")
    (root / "uncommitted.md").write_text("# Draft\n\nnot committed\n", encoding="utf-8")
    return root


def test_git_repository_by_path_and_file_url(config, repo):
    url = repo.resolve().as_uri()
    summary = run(config, repo, collection="git")
    assert summary["source_kind"] == "git" and summary["branch"] == "trunk"
    assert summary["commit"] == _git(repo, "rev-parse", "trunk").strip()
    assert summary["files"]["added"] == 2
    metas = all_chunks(config, "git")["metadatas"]
    assert {m["source"] for m in metas} == {f"{url}/app.py", f"{url}/README.md"}  # committed files only
    assert {m["source_root"] for m in metas} == {url}
    assert {m["git_branch"] for m in metas} == {"trunk"}
    assert any(m.get("symbol") == "Pool.join" for m in metas)
    cache = config.data_dir / "kb" / "git"
    clone = next(cache.iterdir())
    assert _git(clone, "rev-parse", "--is-shallow-repository").strip() == "true"

    again = run(config, url, collection="git")  # the same repository by file:// URL: nothing to do
    assert again["files"] == {"added": 0, "updated": 0, "unchanged": 2, "removed": 0, "skipped": 0}
    assert again["chunks_embedded"] == 0

    feature = run(config, url, collection="git", branch="feature")
    assert feature["branch"] == "feature" and feature["files"]["added"] == 1 and feature["files"]["unchanged"] == 2

    with pytest.raises(GitSourceError, match="branch 'nope' does not exist"):
        run(config, repo, collection="git", branch="nope")

    tree = run(config, repo, collection="worktree", working_tree=True)  # the files on disk instead
    assert tree["source_kind"] == "folder" and tree["files"]["added"] == 3


def test_unreachable_git_url_is_one_clear_error(config, tmp_path):
    with pytest.raises(GitSourceError, match="cannot reach git repository") as info:
        run(config, (tmp_path / "nothing-here").as_uri() + ".git", collection="git")
    assert "\n" not in str(info.value)
    token_config = config.with_overrides(github_token="ghp_SECRETTOKEN123")
    with pytest.raises(GitSourceError) as info:
        run(token_config, "https://someone:hunter2pw@127.0.0.1:9/owner/repo.git", collection="git")
    message = str(info.value)
    assert "cannot reach git repository https://127.0.0.1:9/owner/repo.git" in message
    assert "hunter2pw" not in message and "SECRETTOKEN" not in message
    assert KnowledgeIndex.list_collections(config) == []  # nothing created


def test_github_token_goes_into_git_environment_only():
    git = Git("https://github.com/owner/repo.git", "ghp_SECRETTOKEN123")
    headers = [v for k, v in git.env.items() if k.startswith("GIT_CONFIG_VALUE_")]
    assert any(h.startswith("AUTHORIZATION: basic ") for h in headers)
    assert git.env["GIT_TERMINAL_PROMPT"] == "0"
    assert "SECRETTOKEN" not in git.public
    assert public_url("https://x-access-token:ghp_SECRET@github.com/o/r.git/") == "https://github.com/o/r.git"
    other = Git("https://gitlab.example/owner/repo.git", "ghp_SECRETTOKEN123")  # never sent to other hosts
    assert not any("AUTHORIZATION" in v for k, v in other.env.items() if k.startswith("GIT_CONFIG_VALUE_"))


def test_missing_path_is_a_user_error(config, tmp_path):
    with pytest.raises(UserError, match="no such file or directory"):
        run(config, tmp_path / "absent")
    with pytest.raises(UserError, match="--branch"):
        run(config, tmp_path, branch="dev")


def test_stats_after_ingest(config, tmp_path):
    empty = kb_stats(config)
    assert empty["available"] and empty["collections"] == 0 and empty["last_ingest"] is None
    root = write_tree(tmp_path / "s", {"a.md": "# A\n\nalpha\n", "b.py": "def beta():\n    return 2\n"})
    summary = run(config, root, collection="stats")
    stats = kb_stats(config)
    assert stats["collections"] == 1 and stats["documents"] == 2 and stats["sources"] == 1
    assert stats["chunks"] == summary["chunks_in_collection"] == 3  # a.md, b.py and the signature of beta
    assert stats["embedding_model"] == "huggingface:all-MiniLM-L6-v2+onnx-int8"
    assert stats["last_ingest"] == summary["ingested_at"]
    per = stats["per_collection"][0]
    assert per["name"] == "stats" and per["file_types"] == {"md": 1, "py": 1}
    assert per["sources"] == [str(root.resolve())]


@pytest.fixture
def cli_env(config, monkeypatch):
    monkeypatch.setenv("XMRT_DATA_DIR", str(config.data_dir))
    for name in ("RAGLIGHT_VECTOR_STORE", "CHROMA_HOST", "RAGLIGHT_EMBEDDING_MODEL", "RAGLIGHT_EMBEDDING_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(config.data_dir.parent)  # no .env file here
    return config


def test_cli_ingest(cli_env, tmp_path, capsys):
    from xmrt.cli import main

    root = write_tree(tmp_path / "cli", {"a.md": "# A\n\nalpha\n", "b.bin": b"\x00\x00"})
    assert main(["ingest", str(root), "--collection", "clicol", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["files"]["added"] == 1 and summary["skipped"] == [{"source": "b.bin", "reason": "binary file"}]
    assert main(["ingest", str(root), "--collection", "clicol", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "0 added, 0 updated, 1 unchanged, 0 removed, 1 skipped" in out and "b.bin: binary file" in out
    assert main(["ingest", "file:///nonexistent/repo.git"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xmrt: error: cannot reach git repository") and "\n" not in err
    assert main(["ingest", str(root), "--collection", "x"]) == 2  # invalid collection name
    assert "collection name" in capsys.readouterr().err


def test_graph_runs_without_a_context_on_the_defaults(app_config, tmp_path):
    """``graph.invoke({"source": ...})`` with no ``context=`` ingests into the default collection."""
    root = write_tree(tmp_path / "plain", {"notes.md": "# Notes\n\nThe treasury holds XMR.\n"})
    summary = graph.invoke({"source": str(root)})["summary"]
    assert summary["files"]["added"] == 1
    assert all_chunks(app_config, "default")["ids"]
