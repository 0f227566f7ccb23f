r"""``xmrt migrate store``: long-term memories written by earlier releases, moved into the current store format.

Releases up to 6fa1e70 kept the store in langgraph-checkpoint-redis 0.5's format (JSON documents under
``<prefix>_store:``, namespaces as one ``\.``-joined text field), and :mod:`xmrt.eliza.memory` wrote agent labels
encoded as ``n`` + three digits per UTF-8 byte + ``z`` under ``("memories"|"agentstate", <label>)``. The current
store (:mod:`xmrt.redis.store`) keeps exact labels, and memories of the CLI's (local) user live under
``("local", "memories"|"agentstate", <agent>)``. This reads every old document (SCAN, never KEYS), decodes its
namespace, and puts it into the current store with its value, timestamps and remaining TTL (texts are embedded
again). It is idempotent: running it twice leaves the same items. ``delete_old`` then removes the old documents,
their vectors and the old indexes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from xmrt.config import Config

_ENCODED = re.compile(r"^n(?:\d{3})+z$")
OLD_KINDS = ("memories", "agentstate")


def old_prefixes(config: Config) -> tuple[str, str]:
    """The key prefixes of the old store's documents and vectors."""
    return f"{config.key_prefix}_store", f"{config.key_prefix}_store_vectors"


def decode_old_label(label: str) -> str:
    """An old agent label (``n`` + 3 digits per byte + ``z``) decoded; any other label as it is."""
    if not _ENCODED.match(label):
        return label
    digits = label[1:-1]
    try:
        return bytes(int(digits[i: i + 3]) for i in range(0, len(digits), 3)).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return label


def new_namespace(old_text: str) -> tuple[str, ...]:
    """The current namespace of an old document's ``prefix`` text."""
    from xmrt.eliza.memory import agent_label

    labels = old_text.split("\\.")  # the old store joined labels with a backslash-escaped dot
    if len(labels) == 2 and labels[0] in OLD_KINDS:
        return ("local", labels[0], agent_label(decode_old_label(labels[1])))
    return tuple(labels)


def migrate_store(config: Config, store: Any, *, delete_old: bool = False, dry_run: bool = False,
                  progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Copy every old-format store document into ``store`` (see the module docstring).

    Returns:
        ``{"found", "migrated", "skipped", "deleted", "namespaces"}``; ``skipped`` lists unreadable documents.
    """
    client = store.client
    docs_prefix, vectors_prefix = old_prefixes(config)
    found, migrated, skipped, namespaces = 0, 0, [], set()
    old_keys: list[bytes] = []
    for key in client.scan_iter(match=f"{docs_prefix}:*", count=500):
        old_keys.append(key)
        if client.type(key) not in (b"ReJSON-RL", "ReJSON-RL"):
            continue
        found += 1
        raw = client.execute_command("JSON.GET", key)
        try:
            doc = raw if isinstance(raw, dict) else json.loads(raw)
            namespace = new_namespace(doc["prefix"])
            value = doc["value"]
            if not isinstance(value, dict) or not namespace:
                raise ValueError("no value or namespace")
        except (KeyError, TypeError, ValueError) as exc:
            skipped.append({"key": key.decode() if isinstance(key, bytes) else key, "error": str(exc)})
            continue
        ttl_seconds = client.ttl(key)
        namespaces.add(namespace)
        if not dry_run:
            index = False if namespace[1:2] == ("agentstate",) else None
            store.restore(namespace, str(doc["key"]), value, created_at=doc.get("created_at", 0) / 1e6,
                          updated_at=doc.get("updated_at", 0) / 1e6,
                          ttl=ttl_seconds / 60 if ttl_seconds and ttl_seconds > 0 else None, index=index)
        migrated += 1
        if progress is not None:
            progress(migrated)
    deleted = 0
    if delete_old and not dry_run:
        vector_keys = list(client.scan_iter(match=f"{vectors_prefix}:*", count=500))
        for batch_start in range(0, len(old_keys) + len(vector_keys), 500):
            batch = (old_keys + vector_keys)[batch_start: batch_start + 500]
            deleted += int(client.delete(*batch)) if batch else 0
        for name in client.execute_command("FT._LIST"):
            name = name.decode() if isinstance(name, bytes) else name
            if name in (docs_prefix, vectors_prefix) or name.startswith((f"{docs_prefix}:", f"{vectors_prefix}:")):
                client.execute_command("FT.DROPINDEX", name)
    return {"found": found, "migrated": migrated, "skipped": skipped, "deleted": deleted,
            "namespaces": sorted(namespaces)}
