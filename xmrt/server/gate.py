"""The served API's front door: one ASGI middleware in front of every route the server has.

langgraph-api applies the custom app's middleware (``langgraph.json`` ``http.app``, :mod:`xmrt.server.http`) outside
everything else: the LangGraph API, the development server's own routes (``/internal/*``, ``/deploy``), the
meta routes (``/docs``, ``/openapi.json``, ``/metrics``, ``/info``) and ours. :class:`ApiGate` is the first of
those middlewares, so its decision holds for routes that never call the auth handler.

With ``XMRT_API_KEYS`` set:

* every request needs a valid key (``x-api-key: KEY`` or ``Authorization: Bearer KEY``) unless it is on the
  short public list (:data:`PUBLIC`): ``GET /health``, ``GET /ok`` and the static dashboard shell. A missing or
  wrong key gets 401;
* development-only routes (:data:`DEV_ONLY_PREFIXES`: wiping every thread, reading any thread, starting a
  deploy) are refused with 404, whoever asks (401 first without a key, like every other route);
* the user the key names is put in the request scope (``scope["state"]["xmrt_user"]``) for the custom routes;
* a route that names a thread, cron or assistant by id answers 404 unless the object is the caller's (or one of
  the graphs' own assistants), whatever the route does: one ownership check for every such route.

Without keys the server is a one-user, loopback-only tool: every request is the local user's.

Every refusal (any 4xx answer, from here or from the API behind it) is written to the audit log with the
user, the method and the route: ``auth.failure`` for a missing or wrong key, ``http.refused`` for the rest. The
entry is written before the refusal is answered, so a client that got a 4xx finds it in the log.
In-process loopback requests of the LangGraph SDK (``root_path`` ``/noauth``, which no client can set) pass,
as langgraph-api's own auth middleware lets them pass.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import weakref
from collections.abc import Callable
from typing import Any

from xmrt.config import get_config
from xmrt.policy import LOCAL_USER, key_from_headers, key_user

log = logging.getLogger(__name__)

#: (method, path) pairs that need no key.
PUBLIC = frozenset(
    (method, path)
    for method in ("GET", "HEAD")
    for path in ("/health", "/ok", "/dashboard", "/dashboard/")
)
#: Path prefixes that need no key (GET/HEAD only): the dashboard's static files.
PUBLIC_PREFIXES = ("/dashboard/static/",)
#: Routes of the development server that must never be reachable when keys are configured.
DEV_ONLY_PREFIXES = ("/internal/", "/internal", "/deploy")
#: Statuses that count as refusals in the audit log.
AUDITED = range(400, 500)


def is_public(method: str, path: str) -> bool:
    """Whether a request needs no API key."""
    if (method, path) in PUBLIC:
        return True
    return method in ("GET", "HEAD") and path.startswith(PUBLIC_PREFIXES)


def is_dev_only(path: str) -> bool:
    """Whether ``path`` is one of the development server's own routes (wipe, debug, deploy)."""
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in DEV_ONLY_PREFIXES)


_UUID = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
#: Paths that address one object by id: (pattern, the API path that reads it).
_OWNED = (
    (re.compile(rf"^/threads/({_UUID})(?:/|$)"), "/threads/{}"),
    (re.compile(rf"^/runs/crons/({_UUID})(?:/|$)"), "/runs/crons/{}"),
    (re.compile(rf"^/(?:assistants|a2a)/({_UUID})(?:/|$)"), "/assistants/{}"),
)
_loopback: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _api_client() -> Any:
    """The SDK's in-process loopback client (``get_client()`` without a URL) of the running event loop."""
    loop = asyncio.get_running_loop()
    client = _loopback.get(loop)
    if client is None:
        from langgraph_sdk import get_client

        client = _loopback[loop] = get_client()
    return client


async def _not_owner(path: str, user: str) -> str | None:
    """Why ``user`` may not touch the object ``path`` addresses (another user's thread, cron or assistant), or None.

    Every route that names a thread, cron or assistant by id is checked here, before its handler runs, so no
    route of the API (streams and protocol endpoints included) answers 2xx about another user's object. An object
    that does not exist passes (the handler answers 404, or creates it for the caller); the graphs' own
    assistants belong to everyone.
    """
    for pattern, read_path in _OWNED:
        match = pattern.match(path)
        if match is None:
            continue
        try:
            found = await _api_client().http.get(read_path.format(match.group(1)))
        except Exception:  # noqa: BLE001 - not found (or unreadable): the route's own handler decides
            return None
        metadata = (found or {}).get("metadata") or {}
        if metadata.get("created_by") == "system" or metadata.get("owner") == user:
            return None
        return "not found"
    return None


def _is_preflight(scope: dict, headers: dict[bytes, bytes]) -> bool:
    return scope.get("method") == "OPTIONS" and b"access-control-request-method" in headers


async def _audit(action: str, who: str, method: str, path: str, status: int, reason: str) -> None:
    from xmrt.redis.audit import arecord

    await arecord(action, who=who, outcome="denied",
                  details={"method": method, "path": path, "status": status, "reason": reason[:300]})


async def _answer(scope: dict, send: Callable, status: int, detail: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4000 + status, "reason": detail[:120]})
        return
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class ApiGate:
    """Authenticate every request, refuse development-only routes, audit every refusal (see the module doc)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        """Decide, then pass the request on (or answer it)."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        root_path = scope.get("root_path") or ""
        if root_path == "/noauth" or root_path.startswith("/noauth/"):
            await self.app(scope, receive, send)  # the SDK's in-process loopback: no client can set root_path
            return
        config = get_config()
        method = scope.get("method", "GET")
        path = scope.get("path", "")
        headers = dict(scope.get("headers") or [])
        user: str | None = LOCAL_USER
        if config.api_keys:
            if is_public(method, path) or _is_preflight(scope, headers):
                user = None
            else:
                key = key_from_headers(headers)
                user = key_user(config, key)
                if user is None:
                    reason = "missing API key" if not key else "invalid API key"
                    await _audit("auth.failure", "anonymous", method, path, 401, reason)
                    await _answer(scope, send, 401, f"{reason}: send it as the x-api-key header or as "
                                  "Authorization: Bearer KEY")
                    return
            if is_dev_only(path):
                detail = f"{path} is a development-only route; it is refused while API keys are configured"
                await _audit("http.refused", user or "anonymous", method, path, 404, detail)
                await _answer(scope, send, 404, detail)
                return
        scope.setdefault("state", {})["xmrt_user"] = user
        if config.api_keys and user is not None and (refusal := await _not_owner(path, user)):
            await _audit("http.refused", user, method, path, 404, refusal)
            await _answer(scope, send, 404, refusal)
            return
        held: list[dict] = []  # a refusal's response start, held back until it is in the audit log
        audited: list[bool] = []

        async def watch(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] in AUDITED:
                held.append(message)
                return
            if message["type"] == "http.response.body" and held and not audited:
                reason = bytes(message.get("body") or b"")[:300].decode(errors="replace")
                await _audit("http.refused", user or "anonymous", method, path, held[0]["status"],
                             reason or f"answered {held[0]['status']}")
                audited.append(True)
                await send(held[0])
            await send(message)

        await self.app(scope, receive, watch if scope["type"] == "http" else send)
        if held and not audited:  # the app stopped before its body: still a refusal on record
            await _audit("http.refused", user or "anonymous", method, path, held[0]["status"],
                         f"answered {held[0]['status']}")
