"""``xmrt redis start|stop|status``: the embedded Redis Stack server."""

from __future__ import annotations

from typing import Any

from xmrt.cli import CommandTree
from xmrt.cli.commands.servers import ServerCommands
from xmrt.config import DEFAULT_EMBEDDED_PORT


class _RedisCommands(
    ServerCommands, group="redis", title="Redis Stack", external_setting="REDIS_URL/REDIS_HOST",
    help="run the embedded Redis Stack (Redis 8 + RedisJSON + RediSearch)",
    port_variable="XMRT_REDIS_PORT", default_port=DEFAULT_EMBEDDED_PORT,
    status_shows="version, modules, memory and keys", stop_keeps="its data is saved first",
):
    def server_class(self) -> type:
        from xmrt.redis.server import EmbeddedRedis

        return EmbeddedRedis

    def external(self, config: Any) -> bool:
        return config.redis_external

    def check_external(self, config: Any) -> str:
        from xmrt.redis.server import connect, describe

        connect(config)
        return f"external Redis configured at {describe(config.redis_url)} (modules OK)"

    def figures(self, config: Any) -> tuple[dict[str, Any], str]:
        from xmrt.redis.server import connect, describe, server_status

        return server_status(connect(config, check=False)), describe(config.redis_url)

    def unavailable(self, config: Any, exc: Exception) -> dict[str, Any]:
        from xmrt.redis.server import describe

        return {"running": False, "url": describe(config.redis_url), "error": str(exc)}

    def print_figures(self, status: dict[str, Any]) -> int:
        missing = [m for m in ("ReJSON", "search") if m not in status["modules"]]
        print(f"Redis {status['version']} at {status['url']} ({'external' if status['external'] else 'embedded'})")
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
    _RedisCommands().register(cli)
