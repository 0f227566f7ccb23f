"""``xmrt migrate checkpoints``: move threads saved in the previous checkpoint format to the current one."""

from __future__ import annotations

import argparse
import json

from xmrt.cli import CommandTree


def _checkpoints(args: argparse.Namespace) -> int:
    from xmrt.checkpoint_migrate import migrate_checkpoints
    from xmrt.config import create_config
    from xmrt.redis_server import ensure_redis

    config = create_config()
    ensure_redis(config).close()
    report = migrate_checkpoints(config, delete_legacy=args.delete_legacy, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    verb = "would migrate" if report.dry_run else "migrated"
    print(f"{verb} {report.checkpoints} checkpoints and {report.writes} writes of {report.threads} threads "
          f"under the prefix {config.key_prefix!r} ({report.legacy_keys} legacy keys)")
    if report.deleted_keys or report.dropped_indexes:
        print(f"deleted {report.deleted_keys} legacy keys; dropped indexes: {', '.join(report.dropped_indexes) or '-'}")
    elif report.checkpoints and not report.dry_run:
        print("the legacy keys are kept; run again with --delete-legacy to remove them")
    return 0


def register(cli: CommandTree) -> None:
    """Add ``migrate checkpoints``."""
    cli.group("migrate", help="move stored data to the current format")
    p = cli.command(
        "migrate",
        "checkpoints",
        help="copy threads saved in the previous (library-compatible) checkpoint format into the current one",
        description=(
            "Copy every thread that the previous saver (langgraph-checkpoint-redis 0.5's RedisJSON layout)\n"
            "saved under XMRT_KEY_PREFIX into the current format, oldest checkpoint first, with its pending\n"
            "writes. Running it again changes nothing. The legacy keys stay unless --delete-legacy is given."
        ),
        handler=_checkpoints,
    )
    p.add_argument("--delete-legacy", action="store_true", help="remove the legacy keys and indexes after copying")
    p.add_argument("--dry-run", action="store_true", help="only count what would be migrated")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
