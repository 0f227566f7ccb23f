"""API-key authentication, ownership and request checks for the served graph API (``langgraph.json`` ``auth.path``).

The gate (:mod:`xmrt.server.gate`, the custom app's first middleware) already refused every request without a valid
key, except the public ones. The handlers here decide what an authenticated user may touch, through the one
access policy (:mod:`xmrt.policy`):

* Threads (and their runs, state and history), crons and assistants created over the API carry
  ``metadata.owner``; every read, search, update and delete is filtered on it, so another user's thread
  is invisible: 404 on access, absent from searches. The graphs' own assistants (one per graph of
  ``langgraph.json``) can be read and run by every user; an assistant created over the API is its creator's.
* Store items live under the caller's own namespace: the server prepends the user to every namespace
  (``("notes",)`` is stored as ``("alice", "notes")``), so users can never see each other's items. The graphs
  scope their memories the same way (:class:`xmrt.policy.Principal`).
* Every run, cron, assistant and store request is checked against the graph's contract or the store's rules
  before anything happens (:mod:`xmrt.server.api_checks`): a bad field gets 422 naming it.
* An ingest source is checked against ``XMRT_INGEST_ROOTS`` as the run is created (and again where the graph
  resolves it): the ingest graph under any assistant, and ingest requests to the orchestrator.

Without keys, every caller is the local user, nothing is filtered, and ``xmrt serve`` binds to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langgraph_sdk import Auth

from xmrt.config import Config, get_config
from xmrt.policy import (
    LOCAL_USER,
    PolicyError,
    Principal,
    check_ingest_source,
    key_from_headers,
    key_user,
    request_principal,
)

auth = Auth()


def _config() -> Config:
    return get_config()


@auth.authenticate
async def authenticate(path: str, method: str, headers: dict[bytes, bytes]) -> Auth.types.MinimalUserDict:
    """Map the request's API key to a user (the gate has refused missing and wrong keys already)."""
    from xmrt.server.gate import is_public

    config = _config()
    if not config.api_keys:
        return {"identity": LOCAL_USER, "is_authenticated": True, "permissions": [LOCAL_USER]}
    user = key_user(config, key_from_headers(headers))
    if user is not None:
        return {"identity": user, "is_authenticated": True, "permissions": ["user"]}
    if is_public(method, path):  # the public custom routes (health, the dashboard shell) reach no resource
        return {"identity": "anonymous", "is_authenticated": False, "permissions": []}
    raise Auth.exceptions.HTTPException(status_code=401, detail="missing or invalid API key")


def _is_local(ctx: Auth.types.AuthContext) -> bool:
    return LOCAL_USER in (ctx.permissions or [])


def _principal(ctx: Auth.types.AuthContext) -> Principal:
    return request_principal(_config(), None if _is_local(ctx) else ctx.user.identity)


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


def _refused(exc: Exception) -> Auth.exceptions.HTTPException:
    status = getattr(exc, "status", 422)
    return Auth.exceptions.HTTPException(status_code=status, detail=str(exc))


@auth.on.threads.create
async def on_thread_create(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str] | None:
    """New threads belong to their creator."""
    return _stamp_owner(ctx, value)


async def graph_of(assistant_id: Any) -> str | None:
    """The graph an assistant runs: a default assistant by its id, any other by asking the API (loopback)."""
    from xmrt.server.api_checks import graph_of_assistant

    graph = graph_of_assistant(assistant_id)
    if graph is not None or assistant_id is None:
        return graph
    from langgraph_sdk import get_client

    try:  # the SDK's in-process loopback client (no URL): the server answering itself, without auth
        found = await get_client().assistants.get(str(assistant_id))
    except Exception:  # noqa: BLE001 - an unknown assistant: the API answers 404 after this handler
        return None
    return found.get("graph_id")


async def check_run_request(ctx: Auth.types.AuthContext, graph: str | None, kwargs: dict[str, Any]) -> None:
    """Refuse a run (or cron) whose input or context breaks the graph's contract, or that ingests outside the roots.

    Raises:
        Auth.exceptions.HTTPException: 422 naming the field, or 400 naming the refused ingest source.
    """
    from xmrt.redis.audit import arecord
    from xmrt.server.api_checks import RequestRefused, check_run

    try:
        check_run(graph, kwargs)
    except RequestRefused as exc:
        raise _refused(exc) from None
    sources = _ingest_sources(graph, kwargs.get("input"))
    for source in sources:
        try:  # resolving the path touches the file system: off the event loop
            await asyncio.to_thread(check_ingest_source, _config(), source, _principal(ctx))
        except PolicyError as exc:
            await arecord("kb.ingest", who=ctx.user.identity, outcome="denied",
                          details={"source": str(source)[:500], "reason": str(exc), "graph": graph})
            raise _refused(exc) from None


def _ingest_sources(graph: str | None, value: Any) -> list[Any]:
    """The sources a run's input would ingest: the ingest graph's ``source``, the orchestrator's ingest requests."""
    if not isinstance(value, dict):
        return []
    if graph == "ingest":
        return [value.get("source")]
    if graph == "orchestrator":
        requests = list(value.get("requests") or []) + ([value["request"]] if value.get("request") else [])
        return [r.get("source") for r in requests if isinstance(r, dict) and r.get("type") == "ingest"]
    return []


@auth.on.threads.create_run
async def on_run_create(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str] | None:
    """Runs only on the caller's own threads, with valid input and context; every run request is audited.

    The outcome is ``requested``: the ownership filter is applied after this handler, so a run on another
    user's thread is still refused (404) after it was logged.
    """
    from xmrt.redis.audit import arecord

    graph = await graph_of(value.get("assistant_id"))
    await check_run_request(ctx, graph, value.get("kwargs") or {})
    filters = _stamp_owner(ctx, value)
    await arecord("run.create", who=ctx.user.identity, outcome="requested", details={
        "thread_id": str(value.get("thread_id") or ""),
        "assistant_id": str(value.get("assistant_id") or ""),
        "graph": graph,
        "run_id": str(value.get("run_id") or ""),
    })
    return filters


@auth.on.threads
async def on_threads(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str] | None:
    """Read, search, update and delete: only the caller's own threads."""
    return _owner_filter(ctx)


@auth.on.crons
async def on_crons(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str] | None:
    """Crons belong to their creator; a new cron's run is checked like a run."""
    if ctx.action == "create":
        payload = value.get("payload") or {}
        if isinstance(payload, dict):
            graph = await graph_of(payload.get("assistant_id"))
            await check_run_request(ctx, graph, payload)
        return _stamp_owner(ctx, value)
    return _owner_filter(ctx)


@auth.on.assistants
async def on_assistants(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str] | None:
    """Every user may read and run the graphs' own assistants; one made over the API is its creator's alone.

    A new or updated assistant's context and configurable settings are checked against its graph.
    """
    if ctx.action in ("read", "search"):  # the graphs' own assistants, and the caller's
        return None if _is_local(ctx) else {"$or": [{"owner": ctx.user.identity}, {"created_by": "system"}]}
    if ctx.action in ("create", "update"):
        from xmrt.server.api_checks import RequestRefused, check_context

        graph = value.get("graph_id") or await graph_of(value.get("assistant_id"))
        config = value.get("config") or {}
        try:
            check_context(graph, value.get("context"), config.get("configurable") if isinstance(config, dict)
                          else None, strict=True)
        except RequestRefused as exc:
            raise _refused(exc) from None
    if ctx.action == "create":
        return _stamp_owner(ctx, value)
    return _owner_filter(ctx)


@auth.on.store
async def on_store(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> None:
    """Check the request, then confine the caller to the namespace tree under their own user name."""
    from xmrt.server.api_checks import RequestRefused, check_store

    try:
        check_store(ctx.action, value)
    except RequestRefused as exc:
        raise _refused(exc) from None
    if _is_local(ctx):
        return None
    namespace = tuple(value.get("namespace") or ())
    value["namespace"] = (ctx.user.identity, *namespace)
    return None
