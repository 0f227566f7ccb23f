"""Custom HTTP routes of the served API, mounted by ``langgraph.json`` (``"app": "./xmrt/server/http.py:app"``).

* ``GET /health``: cheap liveness of the server and Redis: 200 ``{"status": "ok"}``, or 503 when Redis is down.
  Open without an API key.
* ``GET /status``: the system status (the seed's shape): ``timestamp``; ``eliza_agent`` with ``is_active``,
  ``metrics`` and ``redis {connected, stats {used_memory, connected_clients, keyspace_hits}}``; ``raglight``
  with ``initialized`` and ``stats {total_documents, embedding_model, llm_provider}``; ``enhanced_features``;
  ``orchestrator`` with its registry and node latencies; ``components``. Always 200 and never hangs: a part
  that fails or is slow reports ``connected: false`` / an ``error`` instead.
* ``GET /dashboard``: the monitoring page (static HTML, JS and CSS from ``xmrt/server/static``, no CDN), which polls
  ``GET /dashboard/data`` (JSON: Redis, knowledge base, agent metrics history, recent decisions with their
  rationale, node latencies, the latest audit entries).

Every blocking call (Redis, Chroma, files) runs in a worker thread under a timeout: ``langgraph dev`` raises
on blocking calls inside the event loop, and a slow dependency must not hang a status request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from graphs.context import SelfImproveContext
from xmrt.config import get_config
from xmrt.redis.clients import redis_client
from xmrt.server.gate import ApiGate
from xmrt.server.status_parts import (  # noqa: F401 - the status parts are imported from here too
    DEFAULT_AGENT,
    PROJECT_ROOT,
    _cache,
    _safe_url,
    agents,
    audit_part,
    eliza_part,
    kb_part,
    llm_part,
    orchestrator_part,
    principal_of,
    redis_part,
    registered_graphs,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Largest request body accepted by the whole server (graph API included): 1 MiB.
MAX_BODY_BYTES = 1024 * 1024


async def _off_loop(fn: Callable[..., Any], *args: Any, timeout: float, default: Any) -> Any:
    """Run ``fn`` in a thread; ``default(exc)`` on error or timeout (never raises, never hangs)."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout)
    except Exception as exc:  # a status page reports failures, it does not propagate them
        reason = f"timed out after {timeout:.0f}s" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        log.warning("status part %s failed: %s", getattr(fn, "__name__", fn), reason)
        return default(reason)


# ------------------------------------------------------------------------------ routes
#: /health's own threads: under many concurrent runs the event loop's default executor has a queue, and a PING
#: waiting in it for 2 s made a healthy server answer 503 (seen with 16 runs of each of four graphs on 2 cores).
_HEALTH_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="xmrt-health")


async def health(request: Request) -> JSONResponse:
    """200 when Redis answers PING within 2 seconds, else 503. Open without an API key."""
    config = get_config()
    started = time.perf_counter()
    try:
        ping = asyncio.get_running_loop().run_in_executor(_HEALTH_POOL, redis_client(config, fail_fast=True).ping)
        await asyncio.wait_for(ping, 2.0)
    except Exception as exc:  # any failure means unhealthy
        reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        return JSONResponse({"status": "unavailable", "redis": False, "error": reason}, status_code=503)
    return JSONResponse({"status": "ok", "redis": True, "ms": round((time.perf_counter() - started) * 1000, 2)})


async def status(request: Request) -> JSONResponse:
    """The system status in the seed's shape, with live values. Always 200; never hangs."""
    config = get_config()
    principal = principal_of(request, config)

    def down(reason: str) -> dict[str, Any]:
        return {"connected": False, "error": reason, "stats": {}}

    def failed(reason: str) -> dict[str, Any]:
        return {"error": reason}

    graphs, redis_info = await asyncio.gather(
        _off_loop(registered_graphs, timeout=2, default=lambda r: []),
        _off_loop(redis_part, config, timeout=3, default=down),
    )
    connected = redis_info["connected"]
    no_redis = {"error": "Redis is not connected"}
    eliza, kb, llm, orch = await asyncio.gather(
        _off_loop(eliza_part, config, DEFAULT_AGENT, 0, 0, principal, timeout=4, default=failed) if connected
        else _const(no_redis),
        _off_loop(kb_part, config, timeout=8, default=lambda r: {"available": False, "error": r}),
        _off_loop(llm_part, config, timeout=3, default=failed),
        _off_loop(orchestrator_part, config, timeout=4, default=failed) if connected else _const(no_redis),
    )
    stats = redis_info.get("stats") or {}
    raglight = {
        "initialized": bool(kb.get("available")),
        "stats": {
            "total_documents": kb.get("documents", 0),
            "total_chunks": kb.get("chunks", 0),
            "collections": kb.get("collections", 0),
            "embedding_model": kb.get("embedding_model") or config.embedding_model,
            "llm_provider": config.llm_provider,
            "llm_model": llm.get("model"),
            "last_ingest": kb.get("last_ingest"),
        },
        **({"error": kb["error"]} if kb.get("error") else {}),
    }
    metrics = eliza.get("metrics") or {}
    body = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "eliza_agent": {
            # The seed's fields: is_active, redis {connected, stats}, raglight {initialized, stats},
            # decision_accuracy and learning_rate; ours beside them.
            "is_active": bool(connected and "eliza" in graphs),
            "redis": {
                "connected": connected,
                "stats": {k: stats.get(k) for k in ("used_memory", "connected_clients", "keyspace_hits")},
                **({"error": redis_info["error"]} if "error" in redis_info else {}),
            },
            "raglight": raglight,
            "decision_accuracy": metrics.get("decision_accuracy"),
            "learning_rate": SelfImproveContext().learning_rate,
            "agent_id": DEFAULT_AGENT,
            "user": principal.user,
            "metrics": eliza.get("metrics"),
            "model_version": eliza.get("model_version"),
            **({"error": eliza["error"]} if "error" in eliza else {}),
        },
        "raglight": raglight,
        "enhanced_features": {
            "redis_checkpointer": connected,
            "long_term_memory_store": connected,
            "knowledge_base": bool(kb.get("available")),
            "rag": "rag" in graphs,
            "rat": "rat" in graphs,
            "agentic_rag": "agentic_rag" in graphs,
            "self_improvement": "self_improve" in graphs,
            "api_key_auth": bool(config.api_keys),
            "audit_log": connected,
            "dashboard": True,
        },
        "orchestrator": {
            "active": bool(connected and "orchestrator" in graphs),
            "registry": orch.get("registry", {}),
            "node_latencies": orch.get("latencies"),
            **({"error": orch["error"]} if "error" in orch else {}),
        },
        "components": {
            "redis": {"status": "up" if connected else "down", "url": redis_info.get("url") or _safe_url(config),
                      "version": stats.get("version"), "modules": stats.get("modules")},
            "checkpointer": {"backend": "redis", "status": "up" if connected else "down"},
            "store": {"backend": "redis", "status": "up" if connected else "down"},
            "knowledge_base": {"backend": "chroma", "status": "up" if kb.get("available") else "down",
                               "location": config.chroma_host or str(config.vector_store_dir)},
            "llm": llm,
            "graphs": graphs,
        },
    }
    return JSONResponse(body)


async def _const(value: Any) -> Any:
    return value


async def dashboard_page(request: Request) -> FileResponse:
    """The dashboard shell (static; it loads its data from /dashboard/data)."""
    return FileResponse(STATIC_DIR / "dashboard.html", media_type="text/html")


async def dashboard_data(request: Request) -> JSONResponse:
    """Everything the dashboard shows, as JSON. ``?agent=ID`` picks the agent (default eliza)."""
    config = get_config()
    principal = principal_of(request, config)
    agent = request.query_params.get("agent") or DEFAULT_AGENT
    try:
        from xmrt.eliza import validate_agent_id

        validate_agent_id(agent)
    except Exception as exc:  # a bad query parameter is the caller's error
        return JSONResponse({"error": str(exc)}, status_code=400)

    def down(reason: str) -> dict[str, Any]:
        return {"connected": False, "error": reason, "stats": {}}

    redis_info = await _off_loop(redis_part, config, timeout=3, default=down)
    connected = redis_info["connected"]
    no_redis = {"error": "Redis is not connected"}

    def failed(reason: str) -> dict[str, Any]:
        return {"error": reason}

    eliza, kb, orch, known, audit = await asyncio.gather(
        _off_loop(eliza_part, config, agent, 200, 15, principal, timeout=5, default=failed) if connected
        else _const(no_redis),
        _off_loop(kb_part, config, timeout=8, default=lambda r: {"available": False, "error": r}),
        _off_loop(orchestrator_part, config, timeout=4, default=failed) if connected else _const(no_redis),
        _off_loop(agents, config, principal, timeout=3, default=lambda r: []) if connected else _const([]),
        _off_loop(audit_part, config, 10, principal, timeout=3, default=lambda r: []) if connected else _const([]),
    )
    return JSONResponse({
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "redis": {"connected": connected, "error": redis_info.get("error"), **(redis_info.get("stats") or {})},
        "kb": {k: kb.get(k) for k in ("available", "documents", "chunks", "collections", "sources",
                                      "embedding_model", "last_ingest", "error")},
        "agent": agent,
        "agents": known,
        "metrics": eliza.get("metrics"),
        "model": eliza.get("model"),
        "history": eliza.get("history", []),
        "decisions": eliza.get("decisions", []),
        "agent_error": eliza.get("error"),
        "registry": orch.get("registry", {}),
        "latencies": orch.get("latencies"),
        "audit": audit,
    })


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 before the API reads them (pure ASGI middleware).

    A declared ``content-length`` over the limit is refused at once; a chunked body is buffered up to the limit.
    """

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        """Pass the request on, or answer 413 when its body is too large."""
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self.limit:
                await self._drain(receive, int(declared))
                await self._too_large(send)
                return
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._too_large(send)
                return
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _drain(self, receive: Callable, declared: int) -> None:
        # Read (and drop) a moderately large body before answering: a client still uploading when the server
        # answers and closes sees a connection reset instead of the 413. Huge bodies are not read.
        if declared > 16 * self.limit:
            return
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                return

    async def _too_large(self, send: Callable) -> None:
        detail = json.dumps({"detail": f"request body is larger than {self.limit // 1024} KiB; nothing was stored"})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": detail.encode()})


@contextlib.asynccontextmanager
async def lifespan(_app: Starlette):
    """Nothing to start or stop here: the runtime's lifespan (``langgraph dev`` or ``xmrt serve``) wraps this one."""
    yield


app = Starlette(lifespan=lifespan, middleware=[Middleware(ApiGate), Middleware(BodyLimit)], routes=[
    Route("/health", health, methods=["GET"]),
    Route("/status", status, methods=["GET"]),
    Route("/dashboard", dashboard_page, methods=["GET"]),
    Route("/dashboard/data", dashboard_data, methods=["GET"]),
    Mount("/dashboard/static", app=StaticFiles(directory=STATIC_DIR), name="dashboard-static"),
])
