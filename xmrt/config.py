"""Configuration: the one place that reads environment variables.

``create_config()`` reads the process environment, plus a ``.env`` file when one exists
(real environment variables win over the file), validates every value and returns an
immutable :class:`Config`. Invalid values raise :class:`ConfigError` naming the variable.

Redis selection:

* ``REDIS_URL`` set: that server is used, nothing is started.
* ``REDIS_HOST`` set: the server at ``REDIS_HOST:REDIS_PORT`` (``REDIS_PASSWORD``) is used.
* neither: the embedded Redis Stack (``xmrt redis start``) on ``127.0.0.1:XMRT_REDIS_PORT``.

``REDIS_DB`` must be 0: RediSearch only indexes database 0, and the checkpointer and the
store both need RediSearch. Use ``XMRT_KEY_PREFIX`` to keep deployments apart instead.

The production server (``xmrt serve``, see xmrt/cli/commands/serve.py) also needs Postgres, for its threads, runs
and task queue:

* ``DATABASE_URI`` set: that server is used (``postgresql://user:password@host:5432/db``), nothing is started.
* unset: the embedded Postgres (``xmrt postgres start``) on ``127.0.0.1:XMRT_POSTGRES_PORT``.

Its heartbeats, wake-ups and run streams go to ``REDIS_URI`` (default: the Redis above, database 1).
``LG_BG_JOB_HEARTBEAT`` (seconds) sets how often a running run proves its process is alive; a run whose process
stops heartbeating for two intervals is handed to another process.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import quote, urlparse

DEFAULT_EMBEDDED_PORT = 6390
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
LLM_PROVIDERS = ("openai", "huggingface")
#: How a local embedding model runs: int8 ONNX (the default), fp32 ONNX, or sentence-transformers on torch.
EMBEDDING_ENGINES = ("onnx-int8", "onnx-fp32", "torch")
DURABILITY_MODES = ("sync", "async", "exit")
#: User names an API key may not carry: the access policy (xmrt.policy) gives them a meaning of their own.
RESERVED_USERS = frozenset({"local", "anonymous", "system"})
DEFAULT_POSTGRES_PORT = 5490
#: Seconds between the heartbeats of a running run (langgraph-runtime-pg's LG_BG_JOB_HEARTBEAT; its own default
#: is 120 s, so a run lost with its process waited 4-8 minutes). A run is handed over after 2-4 intervals.
DEFAULT_RUN_HEARTBEAT = 5.0


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the variable."""


@dataclass(frozen=True)
class Config:
    """Validated runtime settings. Build it with :func:`create_config`."""

    data_dir: Path
    redis_url: str
    redis_external: bool
    embedded_redis_port: int
    redis_password: str | None
    key_prefix: str
    vector_store_dir: Path
    embedding_model: str
    embedding_provider: str
    llm_provider: str
    llm_model: str | None
    openai_api_key: str | None = field(repr=False, default=None)
    openai_base_url: str | None = None
    github_token: str | None = field(repr=False, default=None)
    chroma_host: str | None = None
    chroma_port: int = 8000
    checkpoint_ttl_minutes: float | None = None
    memory_ttl_minutes: float | None = None
    durability: str = "sync"
    llm_temperature: float = 0.2
    llm_max_new_tokens: int = 256
    api_keys: tuple[tuple[str, str], ...] = field(repr=False, default=())
    audit_max_len: int = 100_000
    ingest_roots: tuple[Path, ...] = ()
    database_uri: str | None = field(repr=False, default=None)
    embedded_postgres_port: int = DEFAULT_POSTGRES_PORT
    runtime_redis_url: str | None = field(repr=False, default=None)
    run_heartbeat_seconds: float = DEFAULT_RUN_HEARTBEAT
    #: XMRT_EMBEDDING_ENGINE, one of EMBEDDING_ENGINES; None (unset) means onnx-int8 for new collections, and an
    #: existing collection's own engine when it was built with another one.
    embedding_engine: str | None = None

    @property
    def postgres_external(self) -> bool:
        """True when ``DATABASE_URI`` names the Postgres server to use."""
        return self.database_uri is not None

    @property
    def runtime_redis(self) -> str:
        """The Redis of the production server's runtime (heartbeats, wake-ups, run streams): database 1 by default."""
        if self.runtime_redis_url:
            return self.runtime_redis_url
        parsed = urlparse(self.redis_url)
        return parsed._replace(path="/1").geturl() if parsed.scheme in ("redis", "rediss") else self.redis_url

    def with_overrides(self, **changes) -> Config:
        """Return a copy with some fields replaced (used by tests and the CLI)."""
        return replace(self, **changes)


def _read_env_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    return _number(env, name, default, int, lo, hi)


def _float(env: Mapping[str, str], name: str, default: float | None, lo: float) -> float | None:
    return _number(env, name, default, float, lo)


def _number(env: Mapping[str, str], name: str, default: float | None, kind: type, lo: float,
            hi: float | None = None) -> float | None:
    """Variable ``name`` as a ``kind`` (int or float) of at least ``lo`` (and at most ``hi``); ``default`` if unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}") from None
    if hi is not None and not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range ({lo}..{hi})")
    if value < lo:
        raise ConfigError(f"{name}={value} must be >= {lo}")
    return value


def _api_keys(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """``XMRT_API_KEYS="key:user,key2:user2"`` as ``((key, user), ...)``; empty when unset."""
    raw = env.get("XMRT_API_KEYS", "").strip()
    if not raw:
        return ()
    pairs: dict[str, str] = {}
    for n, item in enumerate(raw.split(","), 1):
        key, sep, user = item.strip().partition(":")
        key, user = key.strip(), user.strip()
        if not sep or not key or not user:
            raise ConfigError(f"XMRT_API_KEYS entry {n} must be KEY:USER (comma-separated pairs)")
        if len(key) < 8:
            raise ConfigError(f"XMRT_API_KEYS entry {n}: the key must have at least 8 characters")
        if len(user) < 2 or len(user) > 64 or not all(c.isalnum() or c == "_" for c in user):
            raise ConfigError(
                f"XMRT_API_KEYS entry {n}: the user {user!r} must be 2-64 letters, digits or '_'"
            )
        if user.lower() in RESERVED_USERS:
            raise ConfigError(f"XMRT_API_KEYS entry {n}: the user name {user!r} is reserved; choose another")
        if key in pairs:
            raise ConfigError(f"XMRT_API_KEYS entry {n}: the key is listed twice")
        pairs[key] = user
    return tuple(pairs.items())


def _opt(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    return raw or None


def _check_db_zero(name: str, db: int) -> None:
    if db != 0:
        raise ConfigError(
            f"{name}={db}: only database 0 is supported, because RediSearch (needed by the "
            "checkpointer and the memory store) indexes database 0 only. To keep deployments "
            "apart on one server, set XMRT_KEY_PREFIX instead."
        )


def _redis_from_url(url: str) -> tuple[str, str | None]:
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"REDIS_URL={url!r} must start with redis://, rediss:// or unix://")
    if parsed.scheme != "unix":
        if not parsed.hostname:
            raise ConfigError(f"REDIS_URL={url!r} has no host")
        try:
            port = parsed.port
        except ValueError:
            raise ConfigError(f"REDIS_URL={url!r} has an invalid port") from None
        if port is not None and not 1 <= port <= 65535:
            raise ConfigError(f"REDIS_URL={url!r} has an invalid port")
        path = parsed.path.strip("/")
        if path:
            if not path.isdigit():
                raise ConfigError(f"REDIS_URL={url!r}: database {path!r} is not a number")
            _check_db_zero("REDIS_URL database", int(path))
    return url, parsed.password


#: What ``langgraph dev`` puts in DATABASE_URI / REDIS_URI for its in-memory runtime: no server, so "unset" here.
_DEV_SERVER_PLACEHOLDERS = (":memory:", "fake")


def _database_uri(env: Mapping[str, str]) -> str | None:
    uri = _opt(env, "DATABASE_URI")
    if uri is None or uri in _DEV_SERVER_PLACEHOLDERS:
        return None
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme.split("+", 1)[0] not in ("postgres", "postgresql"):
        raise ConfigError("DATABASE_URI must start with postgresql:// (or postgres://), e.g. "
                          "postgresql://user:password@db.example.internal:5432/xmrt")
    parsed = urlparse(uri)
    if not parsed.hostname and "host=" not in (parsed.query or ""):
        raise ConfigError("DATABASE_URI has no host")
    try:
        parsed.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError("DATABASE_URI has an invalid port") from None
    return uri


def _runtime_redis(env: Mapping[str, str]) -> str | None:
    uri = _opt(env, "REDIS_URI")
    if uri in _DEV_SERVER_PLACEHOLDERS:
        return None
    if uri is not None and urlparse(uri).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("REDIS_URI must start with redis://, rediss:// or unix://")
    return uri


def create_config(env: Mapping[str, str] | None = None, env_file: str | Path | None = ".env") -> Config:
    """Read and validate the configuration.

    Args:
        env: The variables to read; the process environment when omitted.
        env_file: A dotenv file whose values apply where ``env`` has none. ``None`` skips it.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: A variable has an invalid value; the message names it.
    """
    source: dict[str, str] = {}
    if env_file is not None:
        source.update(_read_env_file(Path(env_file)))
    source.update(os.environ if env is None else env)

    data_dir = Path(source.get("XMRT_DATA_DIR", "").strip() or Path.home() / ".xmrt").expanduser()

    embedded_port = _int(source, "XMRT_REDIS_PORT", DEFAULT_EMBEDDED_PORT, 1, 65535)
    password = _opt(source, "REDIS_PASSWORD")
    if url := _opt(source, "REDIS_URL"):
        redis_url, url_password = _redis_from_url(url)
        password = url_password or password
        external = True
    elif host := _opt(source, "REDIS_HOST"):
        port = _int(source, "REDIS_PORT", 6379, 1, 65535)
        _check_db_zero("REDIS_DB", _int(source, "REDIS_DB", 0, 0, 10_000))
        auth = f":{quote(password, safe='')}@" if password else ""
        redis_url = f"redis://{auth}{host}:{port}/0"
        external = True
    else:
        _check_db_zero("REDIS_DB", _int(source, "REDIS_DB", 0, 0, 10_000))
        auth = f":{quote(password, safe='')}@" if password else ""
        redis_url = f"redis://{auth}127.0.0.1:{embedded_port}/0"
        external = False

    prefix = source.get("XMRT_KEY_PREFIX", "xmrt").strip() or "xmrt"
    if not all(c.isalnum() or c in "_-." for c in prefix):
        raise ConfigError(f"XMRT_KEY_PREFIX={prefix!r} may hold only letters, digits, '_', '-' and '.'")

    api_key = _opt(source, "OPENAI_API_KEY")
    base_url = _opt(source, "OPENAI_BASE_URL")
    if base_url and not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"OPENAI_BASE_URL={base_url!r} must start with http:// or https://")

    provider = (_opt(source, "RAGLIGHT_LLM_PROVIDER") or "").lower()
    if provider and provider not in LLM_PROVIDERS:
        raise ConfigError(f"RAGLIGHT_LLM_PROVIDER={provider!r} must be one of {', '.join(LLM_PROVIDERS)}")
    if not provider:
        provider = "openai" if (api_key or base_url) else "huggingface"

    emb_provider = (_opt(source, "RAGLIGHT_EMBEDDING_PROVIDER") or "huggingface").lower()
    if emb_provider not in ("huggingface", "openai"):
        raise ConfigError(
            f"RAGLIGHT_EMBEDDING_PROVIDER={emb_provider!r} must be 'huggingface' or 'openai'"
        )

    engine = (_opt(source, "XMRT_EMBEDDING_ENGINE") or "").lower() or None
    if engine is not None and engine not in EMBEDDING_ENGINES:
        raise ConfigError(f"XMRT_EMBEDDING_ENGINE={engine!r} must be one of {', '.join(EMBEDDING_ENGINES)}")

    durability = (_opt(source, "XMRT_DURABILITY") or "sync").lower()
    if durability not in DURABILITY_MODES:
        raise ConfigError(f"XMRT_DURABILITY={durability!r} must be one of {', '.join(DURABILITY_MODES)}")

    vector_dir = _opt(source, "RAGLIGHT_VECTOR_STORE")
    return Config(
        data_dir=data_dir,
        redis_url=redis_url,
        redis_external=external,
        embedded_redis_port=embedded_port,
        redis_password=password,
        key_prefix=prefix,
        vector_store_dir=Path(vector_dir).expanduser() if vector_dir else data_dir / "chroma",
        embedding_model=_opt(source, "RAGLIGHT_EMBEDDING_MODEL")
        or (DEFAULT_EMBEDDING_MODEL if emb_provider == "huggingface" else "text-embedding-3-small"),
        embedding_provider=emb_provider,
        llm_provider=provider,
        llm_model=_opt(source, "RAGLIGHT_LLM_MODEL"),
        openai_api_key=api_key,
        openai_base_url=base_url,
        github_token=_opt(source, "GITHUB_TOKEN"),
        chroma_host=_opt(source, "CHROMA_HOST"),
        chroma_port=_int(source, "CHROMA_PORT", 8000, 1, 65535),
        checkpoint_ttl_minutes=_float(source, "XMRT_CHECKPOINT_TTL_MINUTES", None, 0.0),
        memory_ttl_minutes=_float(source, "XMRT_MEMORY_TTL_MINUTES", None, 0.0),
        durability=durability,
        llm_temperature=_float(source, "XMRT_LLM_TEMPERATURE", 0.2, 0.0) or 0.0,
        llm_max_new_tokens=_int(source, "XMRT_LLM_MAX_NEW_TOKENS", 256, 1, 32768),
        api_keys=_api_keys(source),
        audit_max_len=_int(source, "XMRT_AUDIT_MAX_LEN", 100_000, 100, 100_000_000),
        ingest_roots=tuple(Path(p.strip()).expanduser().resolve()
                           for p in (_opt(source, "XMRT_INGEST_ROOTS") or "").split(",") if p.strip())
        or (data_dir.resolve() / "sources",),
        database_uri=_database_uri(source),
        embedded_postgres_port=_int(source, "XMRT_POSTGRES_PORT", DEFAULT_POSTGRES_PORT, 1, 65535),
        runtime_redis_url=_runtime_redis(source),
        run_heartbeat_seconds=_float(source, "LG_BG_JOB_HEARTBEAT", DEFAULT_RUN_HEARTBEAT, 1.0)
        or DEFAULT_RUN_HEARTBEAT,
        embedding_engine=engine,
    )


@functools.lru_cache(maxsize=1)
def get_config() -> Config:
    """The process-wide configuration, read once. Call ``get_config.cache_clear()`` after changing the environment."""
    return create_config()
