"""Print the real route table of the served app, as ``langgraph dev`` builds it, one JSON object per route.

Usage: ``python tests/scripts/route_table.py LANGGRAPH_JSON``. It runs ``langgraph dev`` the way the CLI does
(the same environment the server process gets), except that instead of serving it imports the app that would
be served (``langgraph_api.server:app``, our custom app merged with every API, meta and development route) and
walks its routes, mounts included. Nothing listens and nothing starts.
"""

from __future__ import annotations

import json
import sys


def walk(routes, prefix: str = "") -> list[dict]:
    """Every (path, methods) under ``routes``, mounts expanded."""
    from starlette.routing import Mount, Route, WebSocketRoute

    out = []
    for route in routes:
        if isinstance(route, Mount):
            inner = getattr(route, "routes", None)
            if inner:
                out += walk(inner, prefix + route.path)
            else:  # a mounted app (static files): any path below it, GET
                out.append({"path": prefix + route.path + "/{path}", "methods": ["GET"], "kind": "mount"})
        elif isinstance(route, WebSocketRoute):
            out.append({"path": prefix + route.path, "methods": ["WEBSOCKET"], "kind": "websocket"})
        elif isinstance(route, Route):
            methods = sorted((route.methods or {"GET"}) - {"HEAD", "OPTIONS"})
            out.append({"path": prefix + route.path, "methods": methods, "kind": "route"})
    return out


def main() -> None:
    config_path = sys.argv[1]
    import uvicorn

    def dump(*args, **kwargs):
        from langgraph_api.server import app

        print("ROUTES " + json.dumps(walk(app.routes)), flush=True)
        raise SystemExit(0)

    uvicorn.run = dump  # test-only: stop where the CLI would start serving
    from langgraph_cli.cli import cli

    cli(["dev", "--config", config_path, "--no-browser", "--no-reload", "--port", "1"], standalone_mode=True)


if __name__ == "__main__":
    main()
