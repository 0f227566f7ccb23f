"""What ``xmrt redis`` and ``xmrt postgres`` share: ``start``, ``stop`` and ``status`` of a server the project uses.

Each command group is a :class:`ServerCommands` subclass that says how its server is configured, checked and
described; ``start`` and ``stop`` act on the embedded server (:class:`xmrt.embedded.EmbeddedServer`) and only
check an external one, which xmrt never starts or stops; ``status`` prints its figures, or one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmrt.cli import CommandTree

if TYPE_CHECKING:
    from xmrt.embedded import EmbeddedServer


def port(text: str) -> int:
    """The argparse ``type`` of ``--port``: a TCP port number (1..65535); argparse names the option on error."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port: {text!r}") from None
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{number} is out of range (1..65535)")
    return number


class ServerCommands:
    """The ``start|stop|status`` commands of one server (see the module docstring)."""

    group: str
    title: str
    external_setting: str
    help: str
    port_variable: str
    command_help: dict[str, str]
    port_help: str

    def __init_subclass__(cls, *, group: str, title: str, external_setting: str, help: str, port_variable: str,
                          default_port: int, status_shows: str, stop_keeps: str, **kwargs: Any) -> None:
        """A server's command group declares its words in its class statement; the help texts are built from them.

        Args:
            group: The command group (``xmrt <group> start``).
            title: The server's name in messages (``embedded <title> started on ...``).
            external_setting: The settings that select an external server, for messages.
            help: Help of the group.
            port_variable: The variable that sets the embedded server's port; ``--port`` sets it for one command.
            default_port: The embedded server's port when that variable is unset.
            status_shows: What ``status`` shows (``version, databases and connections``).
            stop_keeps: How ``stop`` shuts down and keeps the data (``fast shutdown; data is kept``).
            **kwargs: For other base classes.
        """
        super().__init_subclass__(**kwargs)
        cls.group, cls.title, cls.external_setting, cls.help = group, title, external_setting, help
        cls.port_variable = port_variable
        cls.command_help = {
            "start": "start the embedded server in the background (idempotent; creates its data directory the "
                     "first time)",
            "stop": f"stop the embedded server ({stop_keeps})",
            "status": f"show {status_shows} of the configured {title}",
        }
        cls.port_help = f"port of the embedded server (default: {port_variable} or {default_port})"

    def server_class(self) -> type[EmbeddedServer]:
        """The embedded server's class (imported when a command runs, not when the CLI starts)."""
        raise NotImplementedError

    def setup_error(self) -> type[Exception]:
        """What the status command can fail with (unreachable, refused...): the server's setup error."""
        return self.server_class().error

    def config(self, args: argparse.Namespace) -> Any:
        """The configuration; ``--port`` is the port variable's value for this command."""
        from xmrt.config import create_config

        return create_config({**os.environ, self.port_variable: str(args.port)} if args.port else None)

    def external(self, config: Any) -> bool:
        """True when the configuration names an external server."""
        raise NotImplementedError

    def check_external(self, config: Any) -> str:
        """Connect to the external server and check it; returns ``external ... configured at ...``."""
        raise NotImplementedError

    def embedded(self, config: Any) -> Any:
        """The embedded server of the configuration."""
        return self.server_class().from_config(config)

    def data_dir(self, server: Any) -> Path:
        """Where the embedded server keeps its data."""
        return server.directory

    def figures(self, config: Any) -> tuple[dict[str, Any], str]:
        """The server's status figures and its URL without a password (raises ``error`` when unusable)."""
        raise NotImplementedError

    def unavailable(self, config: Any, exc: Exception) -> dict[str, Any]:
        """The JSON status of a server that cannot be used."""
        return {"running": False, "external": self.external(config), "error": str(exc)}

    def print_figures(self, status: dict[str, Any]) -> int:
        """Print the figures for a person; returns the exit status."""
        raise NotImplementedError

    # -- the commands ------------------------------------------------------------------------------------------

    def start(self, args: argparse.Namespace) -> int:
        """``start``: start the embedded server unless it runs; an external one is only checked."""
        config = self.config(args)
        if self.external(config):
            print(f"{self.check_external(config)}; nothing to start")
            return 0
        server = self.embedded(config)
        state = "started" if server.start() else "already running"
        print(f"embedded {self.title} {state} on {server.host}:{server.port} (data: {self.data_dir(server)})")
        return 0

    def stop(self, args: argparse.Namespace) -> int:
        """``stop``: stop the embedded server; an external one is left alone."""
        config = self.config(args)
        if self.external(config):
            print(f"external {self.title} configured ({self.external_setting}); xmrt does not stop servers it did "
                  "not start")
            return 0
        server = self.embedded(config)
        print("stopped" if server.stop() else f"not running on port {server.port} (data: {self.data_dir(server)})")
        return 0

    def status(self, args: argparse.Namespace) -> int:
        """``status [--json]``: the configured server's figures; exit status 1 when it cannot be used."""
        config = self.config(args)
        try:
            status, url = self.figures(config)
        except self.setup_error() as exc:
            print(json.dumps(self.unavailable(config, exc)) if args.json else f"not running: {exc}")
            return 1
        status.update(running=True, url=url, external=self.external(config))
        if not self.external(config):
            status["data_dir"] = str(self.data_dir(self.embedded(config)))
        if args.json:
            print(json.dumps(status))
            return 0
        return self.print_figures(status)

    def register(self, cli: CommandTree) -> None:
        """Add the command group."""
        cli.group(self.group, help=self.help)
        for name, handler in (("start", self.start), ("stop", self.stop), ("status", self.status)):
            p = cli.command(self.group, name, help=self.command_help[name], handler=handler)
            p.add_argument("--port", type=port, help=self.port_help)
            if name == "status":
                p.add_argument("--json", action="store_true", help="print one JSON object")
