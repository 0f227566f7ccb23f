"""API-key authentication and per-user ownership for the served graph API (``langgraph.json`` ``auth.path``).

With ``XMRT_API_KEYS="key:user,key2:user2"`` set, every request needs a valid key, sent as
``x-api-key: KEY`` or ``Authorization: Bearer KEY``: the graph API, the store and the custom routes
(``http.enable_custom_route_auth``). ``GET /health`` and the static dashboard shell (which holds no data
and asks for a key in the browser) are open. Failures answer 401 and are written to the audit log.

Ownership:

* Threads (and their runs, state and history), crons and assistants created over the API carry
  ``metadata.owner``; every read, search, update and delete is filtered on it, so another user's thread
  is invisible: 404 on access, absent from searches. Assistants (the graphs of ``langgraph.json`` and any created
  over the API) can be read and run by every user; only their creator may update or delete one.
* Store items live under the caller's own namespace: the server prepends the user to every namespace
  (``("notes",)`` is stored as ``("alice", "notes")``), so users can never see each other's items.

Without keys, every caller is the local user, nothing is filtered, and ``xmrt serve`` binds to 127.0.0.1.

Namespace labels are checked for every caller: RediSearch query syntax (``@ | - * ( ) { }`` and friends),
dots, and one-character labels (which the Redis store cannot find again) are refused with 400.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

from langgraph_sdk import Auth

from xmrt.config import Config, get_config

auth = Auth()

#: langgraph-api derives the id of each graph's default assistant as uuid5(NAMESPACE_GRAPH, graph_id).
NAMESPACE_GRAPH = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")

#: Paths that need no key. The dashboard shell is static and loads its data from the protected /dashboard/data.
PUBLIC_PATHS = frozenset({"/health", "/dashboard", "/dashboard/", "/ok", "/favicon.ico"})
PUBLIC_PREFIXES = ("/dashboard/static/",)
LOCAL_USER = "local"

#: Characters RediSearch treats as query syntax, plus the store's own separator.
_BAD_LABEL = re.compile(r"[@|\-*(){}\[\]\"'~:;$%^&!<>=,./\\\s]")


def _config() -> Config:
    return get_config()


def key_user(config: Config, key: str | None) -> str | None:
    """The user a key belongs to, or None (constant-time comparison against every configured key)."""
    if not key:
        return None
    found = None
    for candidate, user in config.api_keys:
        if hmac.compare_digest(candidate.encode(), key.encode()):
            found = user
    return found


def _key_from_headers(headers: dict[bytes, bytes]) -> str | None:
    key = headers.get(b"x-api-key")
    if key:
        return key.decode(errors="replace").strip()
    authorization = headers.get(b"authorization", b"").decode(errors="replace").strip()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


@auth.authenticate
async def authenticate(path: str, method: str, headers: dict[bytes, bytes]) -> Auth.types.MinimalUserDict:
    """Map the request's API key to a user; 401 (audited) when keys are configured and it is missing or wrong."""
    config = _config()
    if not config.api_keys:
        return {"identity": LOCAL_USER, "is_authenticated": True, "permissions": ["local"]}
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return {"identity": "anonymous", "is_authenticated": False, "permissions": []}
    key = _key_from_headers(headers)
    user = key_user(config, key)
    if user is None:
        from xmrt.audit import arecord

        reason = "missing API key" if not key else "invalid API key"
        await arecord("auth.failure", who="anonymous", outcome="denied", config=config,
                      details={"method": method, "path": path, "reason": reason})
        raise Auth.exceptions.HTTPException(
            status_code=401,
            detail=f"{reason}: send it as the x-api-key header or as Authorization: Bearer KEY",
        )
    return {"identity": user, "is_authenticated": True, "permissions": ["user"]}


def _is_local(ctx: Auth.types.AuthContext) -> bool:
    return "local" in (ctx.permissions or [])


def _owner_filter(ctx: Auth.types.AuthContext) -> dict[str, str] | None:
    return None if _is_local(ctx) else {"owner": ctx.user.identity}


def _stamp_owner(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str] | None:
    filters = _owner_filter(ctx)
    if filters is not None:
        metadata = value.get("metadata")
        if metadata is None:
            metadata = value["metadata"] = {}
        metadata.update(filters)
    return filters


@auth.on.threads.create
async def on_thread_create(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str] | None:
    """New threads belong to their creator."""
    return _stamp_owner(ctx, value)


def graph_of(assistant_id: Any) -> str | None:
    """The graph id of a default assistant (the server derives their ids as uuid5(NAMESPACE_GRAPH, graph_id))."""
    graphs = os.environ.get("LANGSERVE_GRAPHS")
    try:
        names = json.loads(graphs) if graphs else {}
    except ValueError:
        return None
    wanted = str(assistant_id)
    for name in names:
        if wanted in (name, str(uuid.uuid5(NAMESPACE_GRAPH, name))):
            return name
    return None


@auth.on.threads.create_run
async def on_run_create(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str] | None:
    """Runs only on the caller's own threads; every run request is audited.

    The outcome is ``requested``: the ownership filter is applied after this handler, so a run on another
    user's thread is still refused (404) after it was logged.
    """
    from xmrt.audit import arecord

    graph = graph_of(value.get("assistant_id"))
    kwargs = value.get("kwargs") or {}
    if graph == "ingest" and isinstance(kwargs.get("input"), dict):
        try:  # resolving the path touches the file system: off the event loop
            await asyncio.to_thread(check_ingest_source, _config(), kwargs["input"].get("source"))
        except Auth.exceptions.HTTPException as exc:
            await arecord("kb.ingest", who=ctx.user.identity, outcome="denied",
                          details={"source": str(kwargs["input"].get("source"))[:500], "reason": exc.detail})
            raise
    filters = _stamp_owner(ctx, value)
    await arecord("run.create", who=ctx.user.identity, outcome="requested", details={
        "thread_id": str(value.get("thread_id") or ""),
        "assistant_id": str(value.get("assistant_id") or ""),
        "graph": graph,
        "run_id": str(value.get("run_id") or ""),
    })
    return filters


_URL_SOURCE = re.compile(r"^(https?://|git@|ssh://)")


def check_ingest_source(config: Config, source: Any) -> None:
    """An ingest requested over the API may read git URLs, or local paths inside ``XMRT_INGEST_ROOTS`` only.

    Relative paths are taken relative to the first root; ``..`` and symlinks are resolved before the check.

    Raises:
        Auth.exceptions.HTTPException: 400 naming the source and the allowed roots.
    """
    if not isinstance(source, str) or not source.strip():
        raise Auth.exceptions.HTTPException(status_code=400, detail="ingest input needs a non-empty 'source'")
    if _URL_SOURCE.match(source.strip()):
        return
    roots = config.ingest_roots
    path = Path(source).expanduser()
    resolved = (path if path.is_absolute() else roots[0] / path).resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise Auth.exceptions.HTTPException(
            status_code=400,
            detail=f"ingest source {source!r} is outside the allowed roots "
            f"({', '.join(str(r) for r in roots)}); set XMRT_INGEST_ROOTS to allow more",
        )


@auth.on.threads
async def on_threads(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str] | None:
    """Read, search, update and delete: only the caller's own threads."""
    return _owner_filter(ctx)


@auth.on.crons
async def on_crons(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str] | None:
    """Crons belong to their creator."""
    if ctx.action == "create":
        return _stamp_owner(ctx, value)
    return _owner_filter(ctx)


@auth.on.assistants
async def on_assistants(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str] | None:
    """Every user may read (and run) assistants; only the creator may update or delete one made over the API."""
    if ctx.action in ("read", "search"):
        return None
    if ctx.action == "create":
        return _stamp_owner(ctx, value)
    return _owner_filter(ctx)


def check_labels(namespace: tuple[str, ...] | list[str] | None) -> None:
    """Refuse namespace labels the Redis store cannot handle (RediSearch syntax, dots, one character).

    Raises:
        Auth.exceptions.HTTPException: 400 naming the label.
    """
    for label in namespace or ():
        if not isinstance(label, str) or not label:
            raise Auth.exceptions.HTTPException(status_code=400, detail="namespace labels must be non-empty strings")
        if len(label) < 2:
            raise Auth.exceptions.HTTPException(
                status_code=400, detail=f"namespace label {label!r} is too short: labels need 2+ characters")
        if _BAD_LABEL.search(label):
            raise Auth.exceptions.HTTPException(
                status_code=400,
                detail=f"namespace label {label!r} contains a reserved character; "
                "use letters, digits and '_' only (no @ | - * ( ) {{ }} . or spaces)",
            )


@auth.on.store
async def on_store(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> None:
    """Validate labels, then confine the caller to the namespace tree under their own user name."""
    for field in ("namespace", "suffix"):
        if field in value:
            check_labels(value[field])
    if _is_local(ctx):
        return None
    namespace = tuple(value.get("namespace") or ())
    value["namespace"] = (ctx.user.identity, *namespace)
    return None
