"""One lexical truth across machines, coordinated writers and crash consistency, with real processes.

"Machines" are separate data directories (each its own BM25 cache) on one ``chroma run`` server, and separate
processes where a crash or concurrency is under test. Nothing is mocked: the crash is a real SIGKILL.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_config
from tests.kb.test_chroma_server import chroma_server  # noqa: F401 - the fixture
from xmrt.kb.coordination import ChromaLease
from xmrt.kb.index import KnowledgeIndex
from xmrt.kb.ingest import ingest_path

ROOT = Path(__file__).resolve().parents[2]

WORKER = r"""
import json, sys, time
from xmrt.config import create_config
from xmrt.kb import index as kbindex
from xmrt.kb.ingest import ingest_path

env, source, collection = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
batch, pause = int(sys.argv[4]), float(sys.argv[5])
original = kbindex.KnowledgeIndex.upsert

def upsert(self, ids, *args, **kwargs):
    original(self, ids, *args, **kwargs)
    print("UPSERT", len(ids), flush=True)
    time.sleep(pause)

kbindex.KnowledgeIndex.upsert = upsert
summary = ingest_path(create_config(env, env_file=None), source, collection=collection, batch_chunks=batch,
                      progress=False)
print("SUMMARY " + json.dumps(summary), flush=True)
"""


def _env(data_dir: Path, redis_port: int, roots: Path, **extra: str) -> dict:
    return {"XMRT_DATA_DIR": str(data_dir), "XMRT_REDIS_PORT": str(redis_port), "XMRT_INGEST_ROOTS": str(roots),
            **extra}


def _worker(env: dict, source: Path, collection: str, batch: int = 4, pause: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(env), str(source), collection, str(batch),
                             str(pause)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def _summary(proc: subprocess.Popen, timeout: float = 300) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    line = [x for x in out.splitlines() if x.startswith("SUMMARY ")]
    assert line, out
    return json.loads(line[-1][len("SUMMARY "):])


def _wait_for_upserts(proc: subprocess.Popen, n: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    seen = 0
    while seen < n:
        assert time.time() < deadline, "the worker wrote nothing in time"
        line = proc.stdout.readline()
        assert line, "the worker exited before writing"
        seen += line.startswith("UPSERT")


def _corpus(folder: Path, files: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        paras = [f"Section {j} of report {i}: the treasury of guild {i} pays member {j} in token {i * 7 + j}."
                 for j in range(40)]
        (folder / f"report{i:02d}.md").write_text("\n\n".join(paras))
    return folder


def _expected_ids(config, folder: Path, collection: str) -> set[str]:
    """The chunk ids an uninterrupted ingest produces, from a throw-away local store."""
    summary = ingest_path(config, str(folder), collection=collection, progress=False)
    index = KnowledgeIndex(config, collection)
    try:
        ids = set(index.get()["ids"])
        assert len(ids) == summary["chunks_in_collection"]
        return ids
    finally:
        index.drop()


def _consistent(index: KnowledgeIndex, expected: set[str]) -> None:
    index.refresh_lexical(check_counts=True)
    got = index.get()
    assert set(got["ids"]) == expected and len(got["ids"]) == len(expected)
    assert set(index.bm25.ids()) == expected
    per_file: dict[str, list[int]] = {}
    for meta in got["metadatas"]:
        per_file.setdefault(meta["source"], []).append(meta.get("file_chunks"))
    for source, counts in per_file.items():  # every file complete
        assert len(counts) == counts[0], source


def test_two_data_directories_see_every_ingest_at_once(chroma_server, redis_server, tmp_path):  # noqa: F811
    host = {"CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": str(chroma_server)}
    a = make_config(tmp_path / "machine-a", redis_server.port, **host)
    b = make_config(tmp_path / "machine-b", redis_server.port, **host)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "treasury.md").write_text("Spending above 100 XMR needs a governance vote of token holders.")
    (docs / "mining.md").write_text("Mining rewards are pooled and paid out weekly to members.")
    ingest_path(a, str(docs), collection="shared-kb", progress=False)
    on_b = KnowledgeIndex(b, "shared-kb")  # opened once, kept open: it must follow every later ingest
    assert on_b.bm25.path != KnowledgeIndex(a, "shared-kb").bm25.path
    assert on_b.search("governance vote", k=1, mode="bm25")[0].metadata["source"] == "treasury.md"

    # the same chunk count, new words: the case a chunk-count check cannot see
    (docs / "mining.md").write_text("Mining rewards are pooled and paid out monthly to the zebrafish committee.")
    assert ingest_path(a, str(docs), collection="shared-kb", progress=False)["updated"] == 1
    hits = on_b.search("zebrafish committee", k=1, mode="bm25")
    assert hits and hits[0].metadata["source"] == "mining.md"
    assert not on_b.search("weekly", k=3, mode="bm25")
    assert on_b.search("zebrafish", k=1, mode="hybrid")[0].metadata["source"] == "mining.md"

    # a removed file disappears from B's lexical search; B's BM25 holds exactly Chroma's chunks
    (docs / "treasury.md").unlink()
    assert ingest_path(a, str(docs), collection="shared-kb", progress=False)["removed"] == 1
    assert not on_b.search("governance vote", k=3, mode="bm25")
    assert set(on_b.bm25.ids()) == set(on_b.get()["ids"])
    # B writes, A sees it
    (docs / "fees.md").write_text("Withdrawal fees are waived for the quokka sanctuary.")
    ingest_path(b, str(docs), collection="shared-kb", progress=False)
    assert KnowledgeIndex(a, "shared-kb").search("quokka", k=1, mode="bm25")[0].metadata["source"] == "fees.md"
    # each machine's `kb stats` knows the last ingest, wherever it ran (A never ingested from B's log)
    from xmrt.kb.stats import collection_stats

    assert collection_stats(a, "shared-kb")["last_ingest"] == collection_stats(b, "shared-kb")["last_ingest"]
    assert collection_stats(a, "shared-kb")["last_ingest"] is not None


def test_each_vector_store_has_its_own_lexical_index(redis_server, tmp_path):
    one = make_config(tmp_path / "data", redis_server.port)
    two = one.with_overrides(vector_store_dir=tmp_path / "data" / "other-chroma")
    first, second = KnowledgeIndex(one, "same-name"), KnowledgeIndex(two, "same-name")
    first.upsert(["x"], ["the ocelot sleeps"], embeddings=[[1.0] + [0.0] * 383])
    second.upsert(["y"], ["the capybara swims"], embeddings=[[1.0] + [0.0] * 383])
    assert first.bm25.path != second.bm25.path
    assert [h.id for h in first.search("ocelot capybara", k=5, mode="bm25")] == ["x"]
    assert [h.id for h in second.search("ocelot capybara", k=5, mode="bm25")] == ["y"]


def test_concurrent_ingests_embed_each_chunk_once(chroma_server, redis_server, tmp_path):  # noqa: F811
    folder = _corpus(tmp_path / "docs", files=8)
    host = {"CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": str(chroma_server)}
    workers = [_worker(_env(tmp_path / f"machine-{m}", redis_server.port, tmp_path, **host), folder, "together")
               for m in range(3)]
    summaries = [_summary(w) for w in workers]
    config = make_config(tmp_path / "machine-0", redis_server.port, **host)
    index = KnowledgeIndex(config, "together")
    total = index.count()
    assert sum(s["chunks_embedded"] for s in summaries) == total > 0
    assert sum(s["added"] for s in summaries) == 8
    local = make_config(tmp_path / "reference", redis_server.port, XMRT_INGEST_ROOTS=str(tmp_path))
    _consistent(index, _expected_ids(local, folder, "reference"))


def test_kill_9_mid_ingest_then_reingest_is_consistent(redis_server, tmp_path):
    folder = _corpus(tmp_path / "docs")
    env = _env(tmp_path / "data", redis_server.port, tmp_path)
    proc = _worker(env, folder, "crashy", batch=5, pause=0.3)
    _wait_for_upserts(proc, 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    config = make_config(tmp_path / "data", redis_server.port, XMRT_INGEST_ROOTS=str(tmp_path))
    partial = KnowledgeIndex(config, "crashy")
    assert 0 < partial.count()  # something was written before the kill
    partial.close()
    summary = ingest_path(config, str(folder), collection="crashy", progress=False)
    assert summary["added"] + summary["updated"] + summary["unchanged"] == 12
    reference = make_config(tmp_path / "reference", redis_server.port, XMRT_INGEST_ROOTS=str(tmp_path))
    _consistent(KnowledgeIndex(config, "crashy"), _expected_ids(reference, folder, "reference"))
    assert ingest_path(config, str(folder), collection="crashy", progress=False)["chunks_embedded"] == 0


def test_crash_while_two_machines_ingest(chroma_server, redis_server, tmp_path):  # noqa: F811
    folder = _corpus(tmp_path / "docs")
    host = {"CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": str(chroma_server)}
    first = _worker(_env(tmp_path / "machine-a", redis_server.port, tmp_path, **host), folder, "crash-two",
                    batch=5, pause=0.3)
    _wait_for_upserts(first, 2)  # A holds the write lease and has written part of the folder
    second = _worker(_env(tmp_path / "machine-b", redis_server.port, tmp_path, **host), folder, "crash-two")
    time.sleep(1.0)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    summary = _summary(second)  # B takes the dead holder's lease over and finishes the folder
    assert summary["added"] + summary["updated"] + summary["unchanged"] == 12
    b = KnowledgeIndex(make_config(tmp_path / "machine-b", redis_server.port, **host), "crash-two")
    a = KnowledgeIndex(make_config(tmp_path / "machine-a", redis_server.port, **host), "crash-two")
    reference = make_config(tmp_path / "reference", redis_server.port, XMRT_INGEST_ROOTS=str(tmp_path))
    expected = _expected_ids(reference, folder, "reference")
    _consistent(b, expected)
    _consistent(a, expected)  # A's BM25 cache, written up to the kill, follows too
    assert b.search("guild 3 pays member 17", k=1, mode="bm25")[0].metadata["source"] == "report03.md"


def test_lease_is_exclusive_expires_and_is_taken_over(redis_server, tmp_path):
    from xmrt.kb.chroma import chroma_client

    client = chroma_client(make_config(tmp_path / "data", redis_server.port))
    one, two = ChromaLease(client, "write:test", ttl=1.0), ChromaLease(client, "write:test", ttl=1.0)
    assert one.try_acquire("first") and one.try_acquire("again")  # re-entrant
    assert not two.try_acquire("second")
    assert two.held_by_other()["purpose"] == "first"
    one._stop_renewal()  # a holder that stops renewing (a frozen process) loses the lease after its ttl
    time.sleep(1.2)
    assert two.try_acquire("second")
    assert one.held_by_other()["purpose"] == "second"
    two.release()
    assert ChromaLease(client, "write:test").try_acquire("third")


@pytest.mark.parametrize("name", ["xmrt--tombstones", "xmrt--mine"])
def test_reserved_collection_names_are_refused(name):
    from xmrt.errors import UserError
    from xmrt.kb.index import validate_collection_name

    with pytest.raises(UserError, match="reserved"):
        validate_collection_name(name)
