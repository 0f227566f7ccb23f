"""``xmrt migrate store|checkpoints``: bring data written by an earlier release into the current format.

store        long-term memories (and store items) of the langgraph-checkpoint-redis format of releases up to
             6fa1e70 are copied into the current store (exact namespaces; the CLI user's memories under
             "local"), with their values, timestamps and remaining TTL; texts are embedded again. Idempotent.
             --dry-run only counts; --delete-old removes the old documents, vectors and indexes afterwards.
checkpoints  threads saved by the previous (library-compatible) checkpointer format are copied into the current
             one, oldest checkpoint first, with their pending writes. Idempotent. --delete-legacy removes the
             legacy keys and indexes afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from xmrt.cli import CommandTree


def _store(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from xmrt.config import get_config
    from xmrt.redis.persistence import make_store
    from xmrt.redis.store_migrate import migrate_store

    config = get_config()
    store = make_store(config)
    with tqdm(desc="migrating store items", unit="item", file=sys.stderr, disable=args.json) as bar:
        report = migrate_store(config, store, delete_old=args.delete_old, dry_run=args.dry_run,
                               progress=lambda n: bar.update(1))
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 2 if report["skipped"] else 0
    verb = "would migrate" if args.dry_run else "migrated"
    print(f"{verb} {report['migrated']} of {report['found']} old store item(s) in {len(report['namespaces'])} "
          f"namespace(s)" + (f"; deleted {report['deleted']} old key(s)" if args.delete_old else ""))
    for bad in report["skipped"]:
        print(f"xmrt: skipped {bad['key']}: {bad['error']}", file=sys.stderr)
    if not report["found"]:
        print("nothing to migrate: no store item of the old format was found")
    return 2 if report["skipped"] else 0


def _checkpoints(args: argparse.Namespace) -> int:
    from xmrt.config import create_config
    from xmrt.redis.checkpoint_migrate import migrate_checkpoints
    from xmrt.redis.server import ensure_redis

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


def _migration(cli: CommandTree, name: str, **command: Any) -> argparse.ArgumentParser:
    """Add ``migrate <name>`` with the options every migration has: count only, and a JSON report."""
    p = cli.command("migrate", name, **command)
    p.add_argument("--dry-run", action="store_true", help="count what would be migrated, change nothing")
    p.add_argument("--json", action="store_true", help="print one JSON report")
    return p


def register(cli: CommandTree) -> None:
    """Add ``migrate store`` and ``migrate checkpoints``."""
    cli.group("migrate", help="bring data written by an earlier release into the current format")
    s = _migration(cli, "store", help="move old-format long-term memories into the current store", handler=_store,
                   description=__doc__)
    s.add_argument("--delete-old", action="store_true", help="remove the old documents, vectors and indexes after")
    p = _migration(
        cli,
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
