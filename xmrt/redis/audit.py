"""The audit log: who did what, when, and how it ended, in the Redis Stream ``<prefix>:audit``.

Every entry has ``ts`` (Unix seconds), ``who`` (API user, ``agent:<id>``, or the OS user for the CLI), ``action``
(``run.create``, ``auth.failure``, ``eliza.decision``, ``eliza.outcome``, ``kb.ingest``, ``kb.export``,
``kb.import``...),
``outcome`` (``ok``, ``accepted``, ``denied``, ``error``...) and ``details`` (a JSON object).
The stream is trimmed to about ``XMRT_AUDIT_MAX_LEN`` entries (``XADD ... MAXLEN ~``).

Where entries come from: the auth handlers (``auth.failure``, ``run.create``, denied ingest sources), the
decision ledger (``eliza.decision``, ``eliza.outcome``: every decision and outcome, whatever the entry point),
the ingest log (``kb.ingest``, every ingest) and the CLI (:data:`AUDITED_COMMANDS`, with exit status).

Writing an entry never raises: a Redis outage must not turn a served request or a CLI command into a
failure, so a failed write is logged as a warning and :func:`record` returns ``None``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from xmrt.config import Config, get_config
from xmrt.redis.clients import async_redis_client, redis_client

log = logging.getLogger(__name__)

#: CLI command paths that are audited, and the action name they are recorded under.
AUDITED_COMMANDS: dict[tuple[str, ...], str] = {
    ("eliza", "decide"): "eliza.decide",
    ("eliza", "feedback"): "eliza.feedback",
    ("ingest",): "kb.ingest",
    ("kb", "ingest"): "kb.ingest",
    ("kb", "export"): "kb.export",
    ("kb", "import"): "kb.import",
    ("kb", "drop"): "kb.drop",
    ("run",): "eliza.run",
}


def stream_key(config: Config) -> str:
    """The Redis key of the audit stream."""
    return f"{config.key_prefix}:audit"


def _xadd_args(config: Config, action: str, who: str | None, outcome: str, details: dict[str, Any] | None,
               more: dict[str, Any]) -> dict[str, Any]:
    """``xadd`` keyword arguments of one entry (stream, fields, approximate trim): the same for both writers."""
    fields = {
        "ts": f"{time.time():.6f}",
        "who": who or _os_user(),
        "action": action,
        "outcome": outcome,
        "details": json.dumps({**(details or {}), **more}, default=str, ensure_ascii=False)[:8000],
    }
    return {"name": stream_key(config), "fields": fields, "maxlen": config.audit_max_len, "approximate": True}


def _entry_id(entry: bytes | str) -> str:
    return entry.decode() if isinstance(entry, bytes) else entry


def record(action: str, *, who: str | None = None, outcome: str = "ok", config: Config | None = None,
           details: dict[str, Any] | None = None, **more: Any) -> str | None:
    """Append one entry to the audit stream.

    Args:
        action: What happened, e.g. ``run.create`` or ``kb.export``.
        who: The user; the OS user when omitted.
        outcome: How it ended: ``ok``, ``accepted``, ``denied``, ``error``...
        config: The configuration; the process configuration when omitted.
        details: JSON-serialisable context (ids, paths, counts, the error message).
        **more: More context, merged into ``details``.

    Returns:
        The stream entry id, or None when the entry could not be written (logged, never raised).
    """
    try:
        config = config or get_config()
        entry = _xadd_args(config, action, who, outcome, details, more)
        return _entry_id(redis_client(config, fail_fast=True).xadd(**entry))
    except Exception as exc:  # the audit log must never break the audited operation
        log.warning("audit log write failed (%s %s): %s", action, outcome, exc)
        return None


async def arecord(action: str, *, who: str | None = None, outcome: str = "ok", config: Config | None = None,
                  details: dict[str, Any] | None = None, **more: Any) -> str | None:
    """:func:`record` for the served API: the same entry, written without leaving the event loop."""
    try:
        config = config or get_config()
        entry = _xadd_args(config, action, who, outcome, details, more)
        return _entry_id(await async_redis_client(config, fail_fast=True).xadd(**entry))
    except Exception as exc:  # the audit log must never break the audited operation
        log.warning("audit log write failed (%s %s): %s", action, outcome, exc)
        return None


def tail(n: int = 20, config: Config | None = None) -> list[dict[str, Any]]:
    """The last ``n`` entries, oldest first, each ``{id, ts, time, who, action, outcome, details}``."""
    config = config or get_config()
    rows = redis_client(config, fail_fast=True).xrevrange(stream_key(config), count=n)
    out = []
    for entry_id, fields in reversed(rows):
        f = {k.decode(): v.decode() for k, v in fields.items()}
        ts = float(f.get("ts", 0))
        try:
            details = json.loads(f.get("details") or "{}")
        except json.JSONDecodeError:
            details = {"raw": f.get("details")}
        out.append({
            "id": entry_id.decode(),
            "ts": ts,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)),
            "who": f.get("who"),
            "action": f.get("action"),
            "outcome": f.get("outcome"),
            "details": details,
        })
    return out


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


def command_path(args: argparse.Namespace) -> tuple[str, ...]:
    """The subcommand path of parsed ``xmrt`` arguments, e.g. ``("kb", "export")``."""
    values = vars(args)
    path: list[str] = []
    name = values.get("_cmd_root")
    while name:
        path.append(name)
        name = values.get("_cmd_" + "_".join(path))
    return tuple(path)


def run_cli_command(handler: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int | None:
    """Run a CLI handler; audited commands (:data:`AUDITED_COMMANDS`) are recorded with their outcome."""
    action = AUDITED_COMMANDS.get(command_path(args))
    if action is None:
        return handler(args)
    details = {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "verbose"}
    try:
        code = handler(args)
    except BaseException as exc:
        record(action, outcome="error", details={**details, "error": f"{type(exc).__name__}: {exc}"[:500]})
        raise
    record(action, outcome="ok" if not code else f"exit {code}", details=details)
    return code
