"""``xmrt redis start|stop|status``: the embedded Redis Stack server."""

from __future__ import annotations

import argparse
import json

from xmrt.cli import CommandTree


def _config(args: argparse.Namespace):
    from xmrt.config import create_config

    config = create_config()
    if getattr(args, "port", None):
        config = config.with_embedded_port(args.port)
    return config


def _embedded(args: argparse.Namespace):
    from xmrt.redis.server import EmbeddedRedis

    return EmbeddedRedis.from_config(_config(args))


def _start(args: argparse.Namespace) -> int:
    config = _config(args)
    if config.redis_external:
        from xmrt.redis.server import connect, describe

        connect(config)
        print(f"external Redis configured at {describe(config.redis_url)}; nothing to start (modules OK)")
        return 0
    server = _embedded(args)
    started = server.start()
    state = "started" if started else "already running"
    print(f"embedded Redis Stack {state} on {server.host}:{server.port} (data: {server.directory})")
    return 0


def _stop(args: argparse.Namespace) -> int:
    config = _config(args)
    if config.redis_external:
        print("external Redis configured; xmrt does not stop servers it did not start")
        return 0
    server = _embedded(args)
    print("stopped" if server.stop() else f"not running on port {server.port}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from xmrt.redis.server import RedisSetupError, connect, describe, server_status

    config = _config(args)
    try:
        client = connect(config, check=False)
    except RedisSetupError as exc:
        if args.json:
            print(json.dumps({"running": False, "url": describe(config.redis_url), "error": str(exc)}))
        else:
            print(f"not running: {exc}")
        return 1
    status = server_status(client)
    status.update(running=True, url=describe(config.redis_url), external=config.redis_external)
    if not config.redis_external:
        status["data_dir"] = str(config.redis_dir)
    if args.json:
        print(json.dumps(status))
        return 0
    missing = [m for m in ("ReJSON", "search") if m not in status["modules"]]
    print(f"Redis {status['version']} at {status['url']} ({'external' if config.redis_external else 'embedded'})")
    print(f"  modules:  {', '.join(status['modules']) or '(none)'}" + (f"  MISSING: {missing}" if missing else ""))
    print(f"  memory:   {status['used_memory_human']}   keys: {status['keys']}")
    hits, misses = status['keyspace_hits'], status['keyspace_misses']
    print(f"  clients:  {status['connected_clients']}   hits/misses: {hits}/{misses}")
    print(f"  uptime:   {status['uptime_in_seconds']}s")
    print(f"  persistence: AOF {'on' if status['aof_enabled'] else 'off'}" + (
        f", data in {status['data_dir']}" if "data_dir" in status else ""))
    return 1 if missing else 0


def register(cli: CommandTree) -> None:
    """Add the ``redis`` command group."""
    cli.group("redis", help="run the embedded Redis Stack (Redis 8 + RedisJSON + RediSearch)")
    for name, handler, text in (
        ("start", _start, "start the embedded server in the background (idempotent)"),
        ("stop", _stop, "stop the embedded server, saving its data"),
        ("status", _status, "show version, modules, memory and keys of the configured Redis"),
    ):
        p = cli.command("redis", name, help=text, handler=handler)
        p.add_argument("--port", type=int, help="port of the embedded server (default: XMRT_REDIS_PORT or 6390)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="print one JSON object")
