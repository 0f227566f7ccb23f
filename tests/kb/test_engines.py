"""The embedding engines: the locally built int8 ONNX MiniLM (default) against sentence-transformers on torch."""

import random

import numpy as np
import pytest

from xmrt.config import ConfigError, create_config
from xmrt.errors import UserError
from xmrt.kb.calibration import calibrate, pseudo_query
from xmrt.kb.index import KnowledgeIndex
from xmrt.llm.embeddings import embedding_model_id, get_embeddings

TEXTS = [
    "Spending above 100 XMR needs a governance vote of token holders.",
    "Mining rewards are pooled and paid out weekly to members.",
    "def get_embeddings(config):\n    return load_model(config.embedding_model)",
    "The treasury is audited every quarter by an elected committee. " * 30,  # longer than 256 tokens
]


def test_default_engine_is_int8_onnx_and_its_id_says_so(config):
    assert embedding_model_id(config) == "huggingface:all-MiniLM-L6-v2+onnx-int8"
    torch = config.with_overrides(embedding_engine="torch")
    assert embedding_model_id(torch) == "huggingface:all-MiniLM-L6-v2"


def test_bad_engine_is_a_config_error():
    with pytest.raises(ConfigError, match="XMRT_EMBEDDING_ENGINE='gpu' must be one of onnx-int8"):
        create_config({"XMRT_EMBEDDING_ENGINE": "gpu"}, env_file=None)


def test_onnx_vectors_match_torch_vectors(config):
    onnx = np.asarray(get_embeddings(config).embed_documents(TEXTS))
    torch = np.asarray(get_embeddings(config.with_overrides(embedding_engine="torch")).embed_documents(TEXTS))
    assert onnx.shape == torch.shape == (len(TEXTS), 384)
    assert np.allclose(np.linalg.norm(onnx, axis=1), 1.0, atol=1e-4)
    cosines = (onnx * torch).sum(axis=1)
    assert cosines.min() > 0.97, cosines  # int8 weights: close, not equal
    # a query is embedded like a document (same tokenisation and pooling), on the one-thread session
    assert np.dot(get_embeddings(config).embed_query(TEXTS[0]), onnx[0]) > 0.9999


def test_int8_weight_type_avoids_the_saturating_kernel():
    from xmrt.kb.onnx_embed import int8_weight_type

    assert int8_weight_type("flags\t: fpu sse2 fma avx avx2\n") == "u8"  # AVX2 without VNNI: exact u8 x u8
    assert int8_weight_type("flags\t: fpu avx avx2 avx512f avx512_vnni\n") == "s8"
    assert int8_weight_type("flags\t: fpu avx2 avx_vnni\n") == "s8"
    assert int8_weight_type("Features\t: fp asimd asimddp\n") == "s8"  # ARM


def test_fp32_nodes_are_the_five_sensitive_products():
    from xmrt.kb.onnx_embed import fp32_nodes

    names = []
    for i in range(6):
        layer = f"/inner/encoder/layer.{i}"
        names += [f"Attention_{i}", f"{layer}/attention/output/dense/MatMul",
                  f"{layer}/intermediate/dense/MatMul", f"{layer}/output/dense/MatMul"]
    assert fp32_nodes(names, 6) == [names[1], names[3], names[7], names[11], names[21]]


def test_int8_model_is_fused_and_keeps_five_products_fp32(config):
    import collections

    import onnx

    from xmrt.llm.embeddings import build_local_engine

    ops = collections.Counter(n.op_type for n in onnx.load(build_local_engine(config)).graph.node)
    assert ops["QAttention"] == 6 and ops["EmbedLayerNormalization"] == 1, ops
    assert ops["MatMul"] == 5 and ops["MatMulInteger"] == 13, ops


def test_collection_of_one_engine_refuses_an_incompatible_one(config):
    torch = config.with_overrides(embedding_engine="torch")
    built = KnowledgeIndex(torch, "torch-built")
    built.upsert(["a"], ["alpha"], embeddings=[[1.0] + [0.0] * 383])
    with pytest.raises(UserError, match=r"built with embedding model 'huggingface:all-MiniLM-L6-v2'.*"
                                        r"XMRT_EMBEDDING_ENGINE=torch"):
        KnowledgeIndex(config.with_overrides(embedding_engine="onnx-int8"), "torch-built")
    followed = KnowledgeIndex(config, "torch-built")  # engine not configured: query it with its own engine
    assert followed.embedding_model_id == "huggingface:all-MiniLM-L6-v2"
    assert followed.config.embedding_engine == "torch"
    onnx_built = KnowledgeIndex(config, "onnx-built")
    onnx_built.upsert(["b"], ["beta"], embeddings=[[1.0] + [0.0] * 383])
    with pytest.raises(UserError, match="not comparable"):
        KnowledgeIndex(torch, "onnx-built")


def test_pseudo_query_cuts_a_segment_out():
    rng = random.Random(0)
    text = "First sentence is short. The governance vote needs a quorum of holders. Then more words follow here."
    pq = pseudo_query("c1", text, rng)
    assert pq is not None and pq.query in text and pq.query not in pq.rest
    assert pseudo_query("c2", "one line only without any break", rng) is None


def _synthetic(lexical_good: bool):
    """A collection where one retriever finds the cut-out passage and the other returns noise."""
    rng = np.random.default_rng(0)
    chunks = [(f"c{i}", f"Topic k{i} opens here now. Word{i} alpha{i} k{i} gamma{i} delta{i} is the key line. "
               f"Closing words k{i} for this chunk go here.") for i in range(300)]

    def keys(text):  # the words that identify a chunk, as rare terms do for BM25
        return {w.strip(".") for w in text.split() if any(ch.isdigit() for ch in w)}
    vecs = {cid: v / np.linalg.norm(v) for cid, v in ((c, rng.normal(size=16)) for c, _ in chunks)}

    def embed(texts):
        out = []
        for t in texts:
            key = next((c for c, body in chunks if t in body or t.split()[:2] == body.split()[:2]), None)
            base = vecs[key] if (key and not lexical_good) else rng.normal(size=16)
            out.append(base / np.linalg.norm(base))
        return np.asarray(out)

    def dense_search(qv, n):
        scored = sorted(((c, float(v @ qv)) for c, v in vecs.items()), key=lambda x: -x[1])
        return scored[:n]

    def lexical_search(q, n):
        if not lexical_good:
            return [(f"c{j}", 1.0 / (j + 1)) for j in rng.permutation(300)[:n]]
        scored = [(c, float(len(keys(q) & keys(body)))) for c, body in chunks]
        return sorted([x for x in scored if x[1] > 0], key=lambda x: -x[1])[:n]

    def lexical_score(q, text):
        return float(len(keys(q) & keys(text))) if lexical_good else 0.01

    return chunks, dict(embed=embed, dense_search=dense_search, lexical_search=lexical_search,
                        lexical_score=lexical_score, total_chunks=300, samples=60)


@pytest.mark.parametrize("lexical_good", [True, False])
def test_calibration_follows_the_retriever_that_works(lexical_good):
    chunks, fns = _synthetic(lexical_good)
    result = calibrate(chunks, **fns)
    assert result.queries == 60
    best = max(result.mrr, key=result.mrr.get)
    if lexical_good:  # BM25 finds the pseudo-relevant passage: the weight goes to its floor, BM25 = dense
        assert best < 0.5 and result.weight == 0.5, result.mrr
    else:
        assert best > 0.5 and result.weight > 0.7, result.mrr
