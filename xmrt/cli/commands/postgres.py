"""``xmrt postgres start|stop|status``: the embedded Postgres of the production server (``xmrt serve``)."""

from __future__ import annotations

import argparse
import json

from xmrt.cli import CommandTree


def _config(args: argparse.Namespace):
    from xmrt.config import create_config

    config = create_config()
    if getattr(args, "port", None):
        from xmrt.config import ConfigError

        if not 1 <= args.port <= 65535:
            raise ConfigError(f"--port {args.port} is out of range (1..65535)")
        config = config.with_overrides(embedded_postgres_port=args.port)
    return config


def _start(args: argparse.Namespace) -> int:
    from xmrt.server.postgres import EmbeddedPostgres, connect_check, describe

    config = _config(args)
    if config.postgres_external:
        version = connect_check(config.database_uri)
        print(f"external Postgres {version} configured at {describe(config.database_uri)}; nothing to start")
        return 0
    server = EmbeddedPostgres.from_config(config)
    state = "started" if server.start() else "already running"
    print(f"embedded Postgres {state} on {server.host}:{server.port} (data: {server.data_dir})")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from xmrt.server.postgres import EmbeddedPostgres

    config = _config(args)
    if config.postgres_external:
        print("external Postgres configured (DATABASE_URI); xmrt does not stop servers it did not start")
        return 0
    server = EmbeddedPostgres.from_config(config)
    print("stopped" if server.stop() else f"not running (data: {server.data_dir})")
    return 0


def _status(args: argparse.Namespace) -> int:
    from xmrt.server.postgres import EmbeddedPostgres, PostgresSetupError, describe, server_status

    config = _config(args)
    try:
        uri = config.database_uri if config.postgres_external else EmbeddedPostgres.from_config(config).url()
        status = server_status(uri)
    except PostgresSetupError as exc:
        if args.json:
            print(json.dumps({"running": False, "external": config.postgres_external, "error": str(exc)}))
        else:
            print(f"not running: {exc}")
        return 1
    status.update(running=True, url=describe(uri), external=config.postgres_external)
    if not config.postgres_external:
        status["data_dir"] = str(config.postgres_dir / "data")
    if args.json:
        print(json.dumps(status))
        return 0
    print(f"Postgres {status['version']} at {status['url']} ({'external' if config.postgres_external else 'embedded'})")
    print(f"  databases:   {', '.join(status['databases'])}   size of this one: {status['database_size']} bytes")
    print(f"  connections: {status['connections']} of {status['max_connections']}")
    print(f"  uptime:      {status['uptime_in_seconds']}s" + (
        f"   data in {status['data_dir']}" if "data_dir" in status else ""))
    return 0


def register(cli: CommandTree) -> None:
    """Add the ``postgres`` command group."""
    cli.group("postgres", help="run the embedded Postgres of the production server (threads, runs, task queue)")
    for name, handler, text in (
        ("start", _start, "start the embedded server in the background (idempotent; creates it the first time)"),
        ("stop", _stop, "stop the embedded server (fast shutdown; data is kept)"),
        ("status", _status, "show version, databases and connections of the configured Postgres"),
    ):
        p = cli.command("postgres", name, help=text, handler=handler)
        p.add_argument("--port", type=int, help="port of the embedded server (default: XMRT_POSTGRES_PORT or 5490)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="print one JSON object")
