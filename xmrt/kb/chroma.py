"""The Chroma client: embedded (persistent, on disk) by default, a Chroma server when ``CHROMA_HOST`` is set.

``chroma_client(config)`` is cached on the settings that select the client, so every caller in a
process shares one client per store. Chroma's anonymized telemetry is always disabled: the
knowledge base runs offline.

**A read-only store.** The embedded Chroma writes to its SQLite file as it opens, so it cannot open a store on
a read-only disk or mount: :class:`ChromaReadOnly` says so in one line. :func:`snapshot_client` opens a copy
of the store's SQLite file instead (collections, counts and metadata; not the vector segments), which is all
``xmrt kb list`` and ``xmrt kb stats`` need, so they keep working on a read-only store.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xmrt.config import Config
from xmrt.errors import XmrtError


class ChromaSetupError(XmrtError):
    """The configured Chroma store cannot be opened or reached."""


class ChromaReadOnly(ChromaSetupError):
    """The embedded Chroma store is on a read-only disk or mount (or its files are not writable)."""


SQLITE_FILE = "chroma.sqlite3"
_READ_ONLY_SIGNS = ("readonly database", "read-only file system", "permission denied", "operation not permitted")


def _read_only(path: str, exc: BaseException) -> ChromaReadOnly | None:
    if not any(sign in str(exc).lower() for sign in _READ_ONLY_SIGNS):
        return None
    return ChromaReadOnly(f"the knowledge base at {path} is read-only ({exc}): the embedded Chroma needs write "
                          "access to open it, for searching as for ingesting; xmrt kb list and xmrt kb stats still "
                          "work (to query it, copy it somewhere writable or serve it with `chroma run` and set "
                          "CHROMA_HOST)")


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
    except Exception as exc:  # chromadb raises InternalError (SQLite "readonly database"), OSError, ...
        if (read_only := _read_only(path, exc)) is not None:
            raise read_only from None
        if isinstance(exc, OSError):
            raise ChromaSetupError(f"cannot open the Chroma store at {path}: {exc}") from exc
        raise


@contextlib.contextmanager
def snapshot_client(config: Config) -> Iterator[Any]:
    """A client on a temporary copy of the store's SQLite file: read-only figures of a store that cannot be opened.

    Raises:
        ChromaSetupError: There is no store at the configured path.
    """
    import chromadb

    source = Path(config.vector_store_dir).expanduser().resolve() / SQLITE_FILE
    if not source.is_file():
        raise ChromaSetupError(f"there is no knowledge base at {source.parent}")
    with tempfile.TemporaryDirectory(prefix="xmrt-kb-snapshot-") as tmp:
        shutil.copy2(source, Path(tmp) / SQLITE_FILE)
        client = chromadb.PersistentClient(path=tmp, settings=_settings())
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.clear_system_cache()


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
