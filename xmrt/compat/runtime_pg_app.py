"""The production app ``xmrt.compat.runtime_pg_app:app``, what ``xmrt serve`` gives uvicorn.

It is langgraph-api's app with the fixes :mod:`xmrt.compat.runtime_pg` describes: lifespan messages straight to the
router, a 404 for a thread state the caller may not read, ``runs/wait`` answered with the run's final output.
Guarded by the same versions.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

from xmrt.compat.runtime_pg import RuntimeCompatError, check_versions

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- ASGI app
@functools.cache
def _server_app() -> Any:
    check_versions()
    from langgraph_api.server import app as server_app

    if not callable(getattr(server_app, "router", None)):
        raise RuntimeCompatError("langgraph_api.server.app has no router: langgraph-api changed")
    return server_app


#: Routes whose runtime-pg handler answers 200 with an empty state for a thread the caller cannot see (or that does
#: not exist), where langgraph-api's in-memory runtime answers 404.
_STATE_ROUTES = re.compile(r"^/threads/([^/]+)/state(?:/[^/]+)?$")


async def _capture(server_app: Any, scope: dict, receive: Callable) -> tuple[int, list, bytes]:
    """Run one request through the whole app and keep its response: (status, headers, body)."""
    status, headers, chunks = 500, [], []

    async def capture(message: dict) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers") or [])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await server_app(scope, receive, capture)
    return status, headers, b"".join(chunks)


def _empty_state(status: int, body: bytes) -> bool:
    """True for runtime-pg's empty snapshot (no checkpoint): an unknown, foreign, or never-run thread."""
    if status != 200:
        return False
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("checkpoint") is None


async def _thread_probe(server_app: Any, scope: dict, thread_id: str) -> tuple[int, list, bytes]:
    """``GET /threads/{thread_id}`` through the whole app, with the caller's headers."""
    return await _thread_probe_path(server_app, scope, f"/threads/{thread_id}")


async def _state_read(server_app: Any, scope: dict, receive: Callable, send: Callable, thread_id: str) -> None:
    """A state read; an empty state is checked against ``GET /threads/{id}`` for the caller (404 when hidden)."""
    status, headers, body = await _capture(server_app, scope, receive)
    if _empty_state(status, body):
        probe_status, probe_headers, probe_body = await _thread_probe(server_app, scope, thread_id)
        if probe_status in (403, 404, 422):
            status, headers, body = (404 if probe_status == 403 else probe_status), probe_headers, probe_body
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_WAIT_ROUTE = re.compile(r"^/threads/([^/]+)/runs/wait$")
#: langgraph-api derives each graph's default assistant id as uuid5(this namespace, graph_id).
_NAMESPACE_GRAPH = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")
_output_keys_cache: dict[str, list[str] | None] = {}


async def _probe(server_app: Any, scope: dict, path: str) -> tuple[int, Any]:
    """``GET path`` through the whole app with the caller's headers: (status, parsed JSON or None)."""
    status, _, body = await _thread_probe_path(server_app, scope, path)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


async def _thread_probe_path(server_app: Any, scope: dict, path: str) -> tuple[int, list, bytes]:
    probe = {**scope, "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b""}
    probe["headers"] = [(k, v) for k, v in scope.get("headers") or [] if k.lower() not in (b"content-length",
                                                                                             b"content-type")]

    async def no_body() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    return await _capture(server_app, probe, no_body)


async def _output_keys(server_app: Any, scope: dict, assistant: str) -> list[str] | None:
    """The output keys of an assistant's graph (its output JSON schema), cached; None when unknown."""
    try:
        assistant_id = str(uuid.UUID(assistant))
    except ValueError:
        assistant_id = str(uuid.uuid5(_NAMESPACE_GRAPH, assistant))
    if assistant_id not in _output_keys_cache:
        status, schemas = await _probe(server_app, scope, f"/assistants/{assistant_id}/schemas")
        schema = (schemas or {}).get("output_schema") if status == 200 and isinstance(schemas, dict) else None
        props = schema.get("properties") if isinstance(schema, dict) else None
        _output_keys_cache[assistant_id] = sorted(props) if isinstance(props, dict) and props else None
    return _output_keys_cache[assistant_id]


async def _final_output(server_app: Any, scope: dict, body: bytes, request: bytes, thread_id: str) -> bytes:
    """The run's final output when ``body`` (what the wait collected) is an earlier state of it."""
    try:
        out = json.loads(body)
        assistant = json.loads(request).get("assistant_id")
    except (ValueError, AttributeError):
        return body
    if not isinstance(out, dict) or "__error__" in out or not isinstance(assistant, str):
        return body
    status, thread = await _probe(server_app, scope, f"/threads/{thread_id}")
    if status != 200 or not isinstance(thread, dict) or thread.get("status") != "idle":
        return body  # failed, interrupted, or already running the next run: leave the answer alone
    values = thread.get("values")
    if not isinstance(values, dict):
        return body
    keys = await _output_keys(server_app, scope, assistant) or list(out)
    final = {k: values[k] for k in keys if k in values}
    if not final or final == out:
        return body
    log.warning("runs.wait on thread %s collected an earlier state of its run; answered with the final values",
                thread_id)
    return json.dumps(final).encode()


async def _stateful_wait(server_app: Any, scope: dict, receive: Callable, send: Callable, thread_id: str) -> None:
    """``POST /threads/{id}/runs/wait`` with its answer checked against the thread's final values.

    runtime-pg's stream join, after half a second without a message, reads the run's status and stops at a final
    one, even when the run's last messages (from the process that ran it) have not been read yet: the wait then
    answers with an earlier state (seen with two processes under load: rag answers without their answer). The
    keep-alive whitespace still goes out at once; only the final JSON is held and, if it differs from the
    thread's values after the run, replaced by them (the output keys of the graph).
    """
    request = bytearray()
    start: dict | None = None
    held = bytearray()

    async def recording_receive() -> dict:
        message = await receive()
        if message["type"] == "http.request":
            request.extend(message.get("body", b""))
        return message

    async def relay(message: dict) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            await send(message)
            return
        checkable = start is not None and start["status"] == 200 and not any(
            k.lower() == b"content-length" for k, _ in start.get("headers") or [])
        if message["type"] != "http.response.body" or not checkable:
            await send(message)
            return
        chunk = message.get("body", b"")
        if message.get("more_body") and not held and not chunk.strip():
            await send(message)  # keep-alive whitespace
            return
        held.extend(chunk)
        if not message.get("more_body"):
            fixed = await _final_output(server_app, scope, bytes(held), bytes(request), thread_id)
            await send({"type": "http.response.body", "body": fixed, "more_body": False})

    await server_app(scope, recording_receive, relay)


async def app(scope: dict, receive: Callable, send: Callable) -> None:
    """The ASGI application of the production server: langgraph-api's app, with two corrections.

    * Lifespan messages go straight to the app's router (problem 1 above).
    * ``POST /threads/{id}/runs/wait`` answers with the run's final output, never an earlier state of it (see
      :func:`_stateful_wait`).
    * A thread's state (``GET /threads/{id}/state[/{checkpoint}]``, ``POST /threads/{id}/state/checkpoint``):
      runtime-pg answers 200 with an empty state when the thread belongs to another user or does not exist. An
      empty state is therefore checked with ``GET /threads/{id}`` for the same caller, whose 404 is returned
      instead (a state with a checkpoint, the usual case, costs nothing more).
    """
    server_app = _server_app()
    if scope["type"] == "lifespan":
        scope["app"] = server_app  # what Starlette sets before its middleware; the lifespans receive it
        await server_app.router(scope, receive, send)
        return
    if scope["type"] == "http" and scope.get("method") in ("GET", "POST") and (
            match := _STATE_ROUTES.match(scope.get("path", ""))):
        if scope["method"] == "GET" or scope["path"].endswith("/state/checkpoint"):
            await _state_read(server_app, scope, receive, send, match.group(1))
            return
    if scope["type"] == "http" and scope.get("method") == "POST" and (
            match := _WAIT_ROUTE.match(scope.get("path", ""))):
        await _stateful_wait(server_app, scope, receive, send, match.group(1))
        return
    await server_app(scope, receive, send)
