"""The retrieval evaluator: metrics, BEIR loading and errors, a real end-to-end run and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from xmrt.errors import UserError
from xmrt.kb.beir import load_beir
from xmrt.kb.evaluate import (
    embedding_cache_path,
    evaluate_retrieval,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    score_run,
)
from xmrt.kb.index import KnowledgeIndex

CORPUS = [
    ("d1", "Photosynthesis", "Plants turn sunlight, water and carbon dioxide into glucose and oxygen."),
    ("d2", "", "The mitochondria is the powerhouse of the cell and produces ATP."),
    ("d3", "Volcanoes", "Magma rising through the crust erupts as lava from a volcano."),
    ("d4", "", "The French Revolution began in 1789 with the storming of the Bastille."),
    ("d5", "", "Chlorophyll in leaves absorbs light energy used to make sugar."),
    ("d6", "", "Basketball was invented by James Naismith in 1891."),
]
QUERIES = [("q1", "how do plants make food from sunlight"), ("q2", "when did the french revolution start"),
           ("q3", "who invented basketball"), ("q4", "a query without judgments")]
QRELS = [("q1", "d1", 2), ("q1", "d5", 1), ("q2", "d4", 1), ("q3", "d6", 1), ("q3", "d2", 0)]


def write_beir(root: Path, header: bool) -> Path:
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as f:
        for doc_id, title, text in CORPUS:
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as f:
        for qid, text in QUERIES:
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    lines = (["query-id\tcorpus-id\tscore"] if header else []) + [f"{q}\t{d}\t{s}" for q, d, s in QRELS]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return root


# -- metrics on a hand-checked example ------------------------------------------------------------------------------


def test_metrics_hand_checked():
    qrels = {"a": 3, "b": 1, "c": 2, "z": 0}
    ranked = ["b", "x", "a"]
    # DCG = (2^1-1)/log2(2) + 0 + (2^3-1)/log2(4) = 1 + 3.5 = 4.5
    # IDCG = 7/log2(2) + 3/log2(3) + 1/log2(4) = 7 + 1.89279 + 0.5
    assert ndcg_at_k(ranked, qrels, 10) == pytest.approx(4.5 / (7 + 3 / math.log2(3) + 0.5))
    assert ndcg_at_k(["a", "c", "b"], qrels) == pytest.approx(1.0)
    assert ndcg_at_k(["x"], {"x": 0}) == 0.0
    assert recall_at_k(ranked, qrels, 10) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, qrels, 1) == pytest.approx(1 / 3)
    assert mrr_at_k(ranked, qrels) == 1.0
    assert mrr_at_k(["x", "z", "c"], qrels) == pytest.approx(1 / 3)
    assert mrr_at_k(["x"] * 10 + ["a"], qrels, 10) == 0.0
    run = score_run({"q": ranked, "r": ["x"]}, {"q": qrels, "r": {"y": 1}})
    assert run["recall@10"] == pytest.approx((2 / 3 + 0) / 2)


# -- BEIR loading -------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [True, False])
def test_load_beir_with_and_without_header(tmp_path, header):
    ds = load_beir(write_beir(tmp_path / "ds", header))
    assert ds.corpus_ids == [d for d, _, _ in CORPUS]
    assert ds.corpus_texts[0].startswith("Photosynthesis Plants turn")
    assert ds.corpus_texts[1].startswith("The mitochondria")
    assert ds.qrels["q1"] == {"d1": 2, "d5": 1}
    assert ds.judged_queries == ["q1", "q2", "q3"]


def test_bad_directories_give_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        load_beir(tmp_path / "nope")
    root = write_beir(tmp_path / "ds", header=False)
    (root / "queries.jsonl").unlink()
    with pytest.raises(UserError, match="missing queries.jsonl"):
        load_beir(root)
    root = write_beir(tmp_path / "ds2", header=True)
    with (root / "corpus.jsonl").open("a") as f:
        f.write("{not json\n")
    with pytest.raises(UserError, match=r"corpus.jsonl:7: not valid JSON"):
        load_beir(root)
    root = write_beir(tmp_path / "ds3", header=True)
    with (root / "queries.jsonl").open("a") as f:
        f.write(json.dumps({"text": "no id"}) + "\n")
    with pytest.raises(UserError, match=r"queries.jsonl:5: missing \"_id\""):
        load_beir(root)
    root = write_beir(tmp_path / "ds4", header=True)
    with (root / "qrels" / "test.tsv").open("a") as f:
        f.write("q1\td1\tvery\n")
    with pytest.raises(UserError, match=r"test.tsv:7: score 'very' is not a number"):
        load_beir(root)
    root = write_beir(tmp_path / "ds5", header=True)
    (root / "qrels" / "test.tsv").write_text("q9\td1\t1\n")
    with pytest.raises(UserError, match="no query"):
        load_beir(root)
    for err in ("no such directory", "missing", "not valid JSON"):
        assert "\n" not in err


# -- end to end -------------------------------------------------------------------------------------


def test_evaluate_end_to_end_with_cache_and_cleanup(config, tmp_path, capfd):
    root = write_beir(tmp_path / "ds", header=False)
    result = evaluate_retrieval(config, root, "all", collection="eval-e2e")
    assert set(result["modes"]) == {"semantic", "bm25", "hybrid"}
    assert result["queries"] == 3 and result["passages"] == 6 and result["embeddings_cached"] is False
    for scores in result["modes"].values():
        assert set(scores) >= {"ndcg@10", "recall@10", "recall@100", "mrr@10"}
        assert scores["recall@100"] == pytest.approx(1.0)  # 6 passages: everything is retrieved
        assert scores["mrr@10"] > 0.5
    assert result["modes"]["semantic"]["ndcg@10"] > 0.8
    assert "eval-e2e" not in KnowledgeIndex.list_collections(config)
    assert "embedding corpus" in capfd.readouterr().err  # the tqdm progress bar, on stderr
    from xmrt.llm.embeddings import embedding_cache_id

    cache = embedding_cache_path(config, embedding_cache_id(config), load_beir(root).corpus_sha256)
    assert cache.is_file()
    again = evaluate_retrieval(config, root, "bm25", limit_queries=2)
    assert again["embeddings_cached"] is True and again["queries"] == 2 and list(again["modes"]) == ["bm25"]


def test_evaluate_drops_collection_on_error(config, tmp_path):
    root = write_beir(tmp_path / "ds", header=True)

    def explode(message: str) -> None:
        if message.startswith("ingested"):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        evaluate_retrieval(config, root, "hybrid", collection="eval-boom", on_status=explode)
    assert "eval-boom" not in KnowledgeIndex.list_collections(config)
    with pytest.raises(UserError, match="mode"):
        evaluate_retrieval(config, root, "fuzzy")


def test_cli_json_last_line_and_errors(config, tmp_path, monkeypatch, capsys):
    from xmrt.cli import main

    monkeypatch.chdir(tmp_path)  # no .env file
    monkeypatch.setenv("XMRT_DATA_DIR", str(config.data_dir))
    root = write_beir(tmp_path / "ds", header=True)
    assert main(["eval", "retrieval", str(root), "--mode", "hybrid", "--json", "--no-progress"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "ndcg@10" in out[1]
    data = json.loads(out[-1])
    assert set(data["modes"]) == {"hybrid"} and 0.0 <= data["modes"]["hybrid"]["ndcg@10"] <= 1.0
    assert main(["eval", "retrieval", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such directory" in err[0]
