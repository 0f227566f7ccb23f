"""The Chroma client: embedded (persistent, on disk) by default, a Chroma server when ``CHROMA_HOST`` is set.

``chroma_client(config)`` is cached on the settings that select the client, so every caller in a
process shares one client per store. Chroma's anonymized telemetry is always disabled: the
knowledge base runs offline.
"""

from __future__ import annotations

import functools
from pathlib import Path

from xmrt.config import Config
from xmrt.errors import XmrtError


class ChromaSetupError(XmrtError):
    """The configured Chroma store cannot be opened or reached."""


def chroma_client(config: Config):
    """The Chroma client for ``config``: ``HttpClient`` when ``CHROMA_HOST`` is set, else ``PersistentClient``.

    Args:
        config: The runtime configuration (``vector_store_dir``, ``chroma_host``, ``chroma_port``).

    Returns:
        A ``chromadb`` client, shared by every caller with the same settings.

    Raises:
        ChromaSetupError: The store directory cannot be created, or the server cannot be reached.
    """
    if config.chroma_host:
        return _http_client(config.chroma_host, config.chroma_port)
    return _persistent_client(str(Path(config.vector_store_dir).expanduser().resolve()))


def _settings():
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False)


@functools.lru_cache(maxsize=8)
def _persistent_client(path: str):
    import chromadb

    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=path, settings=_settings())
    except OSError as exc:
        raise ChromaSetupError(f"cannot open the Chroma store at {path}: {exc}") from exc


@functools.lru_cache(maxsize=8)
def _http_client(host: str, port: int):
    import chromadb

    try:
        return chromadb.HttpClient(host=host, port=port, settings=_settings())
    except Exception as exc:  # chromadb raises plain ValueError/ConnectionError subclasses here
        raise ChromaSetupError(f"cannot reach the Chroma server at {host}:{port} (CHROMA_HOST): {exc}") from exc


def clear_client_cache() -> None:
    """Forget the cached clients (tests that delete a store directory call this)."""
    _persistent_client.cache_clear()
    _http_client.cache_clear()
