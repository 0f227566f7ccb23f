"""The ``xmrt`` command line.

Every feature module registers its own subcommands through ``register(cli: CommandTree)``;
this module only assembles them, configures logging and turns known errors into one line
on stderr with exit code 2 (bad input or configuration) or 1 (a failure while running).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

#: Modules that contribute subcommands. Each defines ``register(cli: CommandTree) -> None``.
COMMAND_MODULES: tuple[str, ...] = (
    "xmrt.cli.commands.redis",
    "xmrt.cli.commands.postgres",
    "xmrt.cli.commands.demo",
    "xmrt.cli.commands.ask",
    "benchmarks.commands.eliza",
    "xmrt.cli.commands.eliza",
    "xmrt.cli.commands.kb",
    "benchmarks.commands.ingest",
    "benchmarks.commands.checkpoint",
    "xmrt.cli.commands.migrate",
    "xmrt.cli.commands.retrieval",
    "benchmarks.commands.search",
    "xmrt.cli.commands.run",
    "xmrt.cli.commands.serve",
    "benchmarks.commands.api",
    "xmrt.cli.commands.eval_answers",
)
#: The benchmarks (``xmrt bench ...``) live outside the runtime package, in the repository's ``benchmarks/``:
#: without it (an install that left it out) the other commands still work.
OPTIONAL_PACKAGES = ("benchmarks",)


class CommandTree:
    """Nested argparse subcommands: ``cli.command("kb", "export", help=...)`` returns a parser."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser
        self._subs: dict[tuple[str, ...], argparse._SubParsersAction] = {}
        self._parsers: dict[tuple[str, ...], argparse.ArgumentParser] = {(): parser}

    def _subparsers(self, path: tuple[str, ...]) -> argparse._SubParsersAction:
        if path not in self._subs:
            parent = self._parsers[path]
            self._subs[path] = parent.add_subparsers(dest="_cmd_" + "_".join(path or ("root",)), metavar="COMMAND")
            self._subs[path].required = True
        return self._subs[path]

    def group(self, *path: str, help: str = "") -> argparse.ArgumentParser:  # noqa: A002
        """Get or create a command group such as ``bench`` or ``kb``."""
        for i in range(1, len(path) + 1):
            key = tuple(path[:i])
            if key not in self._parsers:
                sub = self._subparsers(key[:-1])
                self._parsers[key] = sub.add_parser(
                    key[-1], help=help if i == len(path) else "", description=help if i == len(path) else None
                )
        return self._parsers[tuple(path)]

    def command(
        self, *path: str, help: str, handler: Callable[[argparse.Namespace], int | None], description: str = ""
    ) -> argparse.ArgumentParser:  # noqa: A002
        """Add a leaf command at ``path`` whose ``handler(args)`` returns an exit code."""
        if len(path) > 1:
            self.group(*path[:-1])
        sub = self._subparsers(tuple(path[:-1]))
        parser = sub.add_parser(
            path[-1],
            help=help,
            description=description or help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(_handler=handler)
        self._parsers[tuple(path)] = parser
        return parser


def build_parser() -> argparse.ArgumentParser:
    """The full ``xmrt`` parser with every registered command."""
    parser = argparse.ArgumentParser(
        prog="xmrt",
        description=(
            "XMRT DAO agent layer: LangGraph agents with Redis memory and a Chroma knowledge base.\n\n"
            "Runs on embedded defaults: an embedded Redis Stack (xmrt redis start), local Chroma,\n"
            "local MiniLM embeddings and, without OPENAI_API_KEY, a local SmolLM2 model.\n"
            "Settings come from the environment or a .env file (see .env.example)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    tree = CommandTree(parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name in OPTIONAL_PACKAGES:
                continue
            raise
        module.register(tree)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xmrt`` console script."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Before torch loads: busy-waiting OpenMP threads slow the local model ~10x on a shared 2-core machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from xmrt.config import ConfigError
    from xmrt.errors import UserError, XmrtError
    from xmrt.redis.audit import run_cli_command
    from xmrt.redis.server import RedisSetupError

    try:
        code = run_cli_command(args._handler, args)  # audited commands land in the audit log
    except (UserError, ConfigError) as exc:
        print(f"xmrt: error: {exc}", file=sys.stderr)
        return 2
    except (RedisSetupError, XmrtError) as exc:
        print(f"xmrt: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("xmrt: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
