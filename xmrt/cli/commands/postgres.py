"""``xmrt postgres start|stop|status``: the embedded Postgres of the production server (``xmrt serve``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xmrt.cli import CommandTree
from xmrt.cli.commands.servers import ServerCommands
from xmrt.config import DEFAULT_POSTGRES_PORT


class _PostgresCommands(
    ServerCommands, group="postgres", title="Postgres", external_setting="DATABASE_URI",
    help="run the embedded Postgres of the production server (threads, runs, task queue)",
    port_variable="XMRT_POSTGRES_PORT", default_port=DEFAULT_POSTGRES_PORT,
    status_shows="version, databases and connections", stop_keeps="fast shutdown; data is kept",
):
    def server_class(self) -> type:
        from xmrt.server.postgres import EmbeddedPostgres

        return EmbeddedPostgres

    def external(self, config: Any) -> bool:
        return config.postgres_external

    def check_external(self, config: Any) -> str:
        from xmrt.server.postgres import connect_check, describe

        version = connect_check(config.database_uri)
        return f"external Postgres {version} configured at {describe(config.database_uri)}"

    def data_dir(self, server: Any) -> Path:
        return server.data_dir

    def figures(self, config: Any) -> tuple[dict[str, Any], str]:
        from xmrt.server.postgres import describe, server_status

        uri = config.database_uri if config.postgres_external else self.embedded(config).url()
        return server_status(uri), describe(uri)

    def print_figures(self, status: dict[str, Any]) -> int:
        where = "external" if status["external"] else "embedded"
        print(f"Postgres {status['version']} at {status['url']} ({where})")
        print(f"  databases:   {', '.join(status['databases'])}   size of this one: {status['database_size']} bytes")
        print(f"  connections: {status['connections']} of {status['max_connections']}")
        print(f"  uptime:      {status['uptime_in_seconds']}s" + (
            f"   data in {status['data_dir']}" if "data_dir" in status else ""))
        return 0


def register(cli: CommandTree) -> None:
    """Add the ``postgres`` command group."""
    _PostgresCommands().register(cli)
