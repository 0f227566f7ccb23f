"""The one access policy: who is asking, whose data they reach, and which files they may make the system read.

Every entry point goes through here: the served API's gate and auth handlers (:mod:`xmrt.server.gate`,
:mod:`xmrt.server.auth`), the graphs' nodes and tools (through the run's config), and the knowledge base's
source resolver (:func:`xmrt.kb.sources.resolve_source`).

**Principal.** A run or request is made by a :class:`Principal`:

* ``LOCAL``: the CLI and Python callers. Unrestricted, and unscoped: their agents and memories are
  the ones the project always had (``eliza``, ``("memories", "eliza")``).
* A remote principal: a request over the served API. The server puts the authenticated user in every
  run's ``configurable`` (``langgraph_auth_user_id``, ``langgraph_auth_permissions``), after the
  client's values, so a client cannot choose it. With ``XMRT_API_KEYS`` set, each user is a *tenant*:
  their long-term memories, Eliza agents (ledger, model, lessons, outcomes, metrics), DAO records and
  the audit entries shown to them are theirs alone. Without keys the server's one caller is the local
  user (not a tenant), but requests still came over the network, so ingestion stays confined.

**Scoping** is by construction, not by filtering: a tenant's data live under keys and namespaces that
carry their user name first (:meth:`Principal.redis_root`, :meth:`Principal.namespace`), the same way
the served store already prefixes every namespace with the user; the local user's memories start with
``local``, a name no API key may carry. An agent id is never enough to reach another tenant's agent.

**Ingestion.** Requests from the API may read local paths only under ``XMRT_INGEST_ROOTS`` (symlinks
and ``..`` resolved first); ``file://`` and other local git transports count as local paths; git
transports that run commands (``ext::``, ``fd::``) and anything starting with ``-`` are refused. Remote
git URLs (``https://``, ``ssh://``, ``git://``, ``user@host:path``) are allowed. The CLI and Python stay
unrestricted. The check runs where a source is resolved, so it holds for every graph, assistant, tool
and action that ingests.

A run inside the served process that carries no authenticated user is refused (fail closed).
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from xmrt.config import RESERVED_USERS, Config
from xmrt.errors import UserError

LOCAL_USER = "local"


class PolicyError(UserError):
    """A request the policy refuses. ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Principal:
    """Who makes a request or run.

    Attributes:
        user: The user name (``local`` for the CLI, Python and a server without keys).
        remote: The request came over the served API (ingestion is then confined to the roots).
        tenant: The user whose data this principal is confined to; None means unscoped (the local user).
    """

    user: str = LOCAL_USER
    remote: bool = False
    tenant: str | None = None

    @property
    def owner(self) -> str:
        """The first label of this principal's store namespaces: the tenant's user name, else ``local``."""
        return self.tenant or LOCAL_USER

    def namespace(self, *labels: str) -> tuple[str, ...]:
        """A store namespace of this principal's own data: ``(owner, *labels)``."""
        return (self.owner, *labels)

    def redis_root(self, config: Config) -> str:
        """The Redis key root of this principal's own data (agents, DAO records)."""
        return f"{config.key_prefix}:tenant:{self.tenant}" if self.tenant else config.key_prefix

    @property
    def who(self) -> str:
        """The name written in audit entries."""
        return self.user


LOCAL = Principal()


def key_user(config: Config, key: str | None) -> str | None:
    """The user an API key belongs to, or None (constant-time comparison against every configured key)."""
    if not key:
        return None
    found = None
    for candidate, user in config.api_keys:
        if hmac.compare_digest(candidate.encode(), key.encode()):
            found = user
    return found


def key_from_headers(headers: Mapping[bytes, bytes]) -> str | None:
    """The API key a request carries: ``x-api-key: KEY`` or ``Authorization: Bearer KEY``."""
    key = headers.get(b"x-api-key")
    if key:
        return key.decode(errors="replace").strip()
    authorization = headers.get(b"authorization", b"").decode(errors="replace").strip()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def served_process() -> bool:
    """True inside the served graph API (langgraph-api sets ``LANGSERVE_GRAPHS`` in every server process)."""
    return bool(os.environ.get("LANGSERVE_GRAPHS"))


def principal_from_config(config: Mapping[str, Any] | None) -> Principal:
    """The principal of a run, from its config (``configurable.langgraph_auth_*``, set by the server).

    Raises:
        PolicyError: A run inside the served process without an authenticated user (fail closed).
    """
    configurable = (config or {}).get("configurable") or {}
    if "langgraph_auth_user_id" in configurable:
        user = configurable.get("langgraph_auth_user_id")
        permissions = configurable.get("langgraph_auth_permissions") or []
        if LOCAL_USER in permissions or (user == LOCAL_USER and not _keys_configured()):
            return Principal(user=LOCAL_USER, remote=True, tenant=None)  # a server without keys: its one user
        if isinstance(user, str) and user and user not in RESERVED_USERS:
            return Principal(user=user, remote=True, tenant=user)
        raise PolicyError("this run carries no authenticated user; it was refused", status=401)
    if served_process():
        raise PolicyError("this run carries no authenticated user; it was refused", status=401)
    return LOCAL


def _keys_configured() -> bool:
    from xmrt.config import get_config

    return bool(get_config().api_keys)


def current_principal(config: Mapping[str, Any] | None = None) -> Principal:
    """The principal of the graph run this code executes in (``LOCAL`` outside any run, e.g. the CLI).

    Args:
        config: The run's config when the caller has it (a node's ``config`` argument); otherwise the one
            LangGraph keeps for the running node or tool (``langgraph.config.get_config``).
    """
    if config is None:
        from langgraph.config import get_config as run_config

        try:
            config = run_config()
        except RuntimeError:  # not inside a runnable: the CLI or a plain Python call
            config = None
    return principal_from_config(config)


def request_principal(config: Config, user: str | None) -> Principal:
    """The principal of an HTTP request to the served API, from the user the gate authenticated."""
    if not config.api_keys:
        return Principal(user=LOCAL_USER, remote=True, tenant=None)
    if not user or user in RESERVED_USERS:
        raise PolicyError("this request carries no authenticated user", status=401)
    return Principal(user=user, remote=True, tenant=user)


# ----------------------------------------------------------------------------------------------- ingestion
_REMOTE_GIT = re.compile(r"^(?:https?|git|ssh|git\+ssh|ssh\+git)://", re.IGNORECASE)
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:(?!//)")
_TRANSPORT = re.compile(r"^([a-z][a-z0-9+.-]*)::", re.IGNORECASE)
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)


def local_path_of(source: str) -> str | None:
    """The local path a source names (a plain path or a ``file://`` URL), or None for a remote git URL.

    Raises:
        PolicyError: A transport that runs commands or reads descriptors, an unknown scheme, or an option.
    """
    text = source.strip()
    if text.startswith("-"):
        raise PolicyError(f"ingest source {source!r} starts with '-': it would be read as a git option", 400)
    if (match := _TRANSPORT.match(text)) is not None:
        raise PolicyError(f"ingest source {source!r}: the git transport {match.group(1)!r}:: is not allowed", 400)
    if _REMOTE_GIT.match(text) or _SCP_LIKE.match(text):
        return None
    if (match := _SCHEME.match(text)) is not None:
        if match.group(1).lower() != "file":
            raise PolicyError(f"ingest source {source!r}: the scheme {match.group(1)!r} is not supported", 400)
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise PolicyError(f"ingest source {source!r}: file:// URLs must name a local path", 400)
        return unquote(parts.path)
    return text


def check_ingest_source(config: Config, source: Any, principal: Principal | None = None) -> None:
    """Refuse a source this principal may not make the system read.

    Remote principals (the API) may read remote git URLs, and local paths (``file://`` included) only inside
    ``XMRT_INGEST_ROOTS``; relative paths are taken relative to the first root; ``..`` and symlinks are
    resolved before the check. The local principal (CLI, Python) may read anything.

    Raises:
        PolicyError: 400 naming the source and the allowed roots.
    """
    principal = principal if principal is not None else current_principal()
    if not isinstance(source, str) or not source.strip():
        raise PolicyError("ingest input needs a non-empty 'source' (a path or git URL)", 400)
    path_text = local_path_of(source)
    if path_text is None or not principal.remote:
        return
    roots = config.ingest_roots
    path = Path(path_text).expanduser()
    resolved = (path if path.is_absolute() else roots[0] / path).resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise PolicyError(
            f"ingest source {source!r} is outside the allowed roots ({', '.join(str(r) for r in roots)}); "
            "set XMRT_INGEST_ROOTS to allow more",
            400,
        )
