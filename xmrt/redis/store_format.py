"""The store's format: labels and keys, value filters, the requests an operation yields, RediSearch replies, indexes."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from langgraph.store.base import (
    Item,
    MatchCondition,
    SearchItem,
)

#: Items fetched per page while a filter is applied after the namespace query.
PAGE = 500
#: Listing order: items of the namespace seen first come first, then by insertion (as InMemoryStore lists them).
#: ``order = namespace_seq * ORDER_SPAN + item_seq`` stays an exact double for 2**21 namespaces.
ORDER_SPAN = 2**32
#: Most items (or vectors) a single search looks at before giving up on filling its page.
MAX_SCAN = 100_000
_SEP = "x"  # joins hex-encoded labels: never a hex digit


def encode_label(label: str) -> str:
    """A namespace label as one RediSearch-safe token: its UTF-8 bytes in lowercase hex."""
    return label.encode("utf-8").hex()


def decode_label(token: str) -> str:
    """Inverse of :func:`encode_label`."""
    return bytes.fromhex(token).decode("utf-8")


def ns_paths(namespace: Sequence[str]) -> list[str]:
    """Every prefix of ``namespace``, encoded: the TAGs a prefix search matches on."""
    encoded = [encode_label(label) for label in namespace]
    return [_SEP.join(encoded[: i + 1]) for i in range(len(encoded))]


def ns_key(namespace: Sequence[str]) -> str:
    """The whole namespace, encoded."""
    return _SEP.join(encode_label(label) for label in namespace)


def ns_from_key(key: str) -> tuple[str, ...]:
    """Inverse of :func:`ns_key`."""
    return tuple(decode_label(part) for part in key.split(_SEP)) if key else ()


def item_id(namespace: Sequence[str], key: str) -> str:
    """The id of an item: a digest of its namespace and key (fixed length, whatever the labels)."""
    return hashlib.sha256(json.dumps([list(namespace), key], ensure_ascii=False).encode()).hexdigest()[:40]


# ------------------------------------------------------------------------------------------------ filters
def matches(value: Any, filters: dict[str, Any] | None) -> bool:
    """Whether a stored value satisfies a search filter (InMemoryStore's semantics)."""
    return not filters or all(_compare(value.get(k) if isinstance(value, dict) else None, v)
                              for k, v in filters.items())


def _compare(item: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        if any(k.startswith("$") for k in wanted):
            return all(_operator(item, op, arg) for op, arg in wanted.items())
        return isinstance(item, dict) and all(_compare(item.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list | tuple):
        return (isinstance(item, list | tuple) and len(item) == len(wanted)
                and all(_compare(a, b) for a, b in zip(item, wanted, strict=True)))
    return item == wanted


def _operator(item: Any, op: str, arg: Any) -> bool:
    if op == "$eq":
        return item == arg
    if op == "$ne":
        return item != arg
    if op not in ("$gt", "$gte", "$lt", "$lte"):
        raise ValueError(f"unsupported filter operator {op!r} (use $eq, $ne, $gt, $gte, $lt, $lte)")
    try:
        a, b = float(item), float(arg)
    except (TypeError, ValueError):
        return False
    return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]


def _namespace_matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    pairs = zip(namespace, path) if condition.match_type == "prefix" else zip(reversed(namespace), reversed(path))
    if condition.match_type not in ("prefix", "suffix"):
        raise ValueError(f"unsupported namespace match type {condition.match_type!r}")
    return all(p == "*" or n == p for n, p in pairs)


# ------------------------------------------------------------------------------------------------ requests
@dataclass
class Commands:
    """Redis commands to run in one round trip; ``atomic`` wraps them in MULTI/EXEC."""

    commands: list[tuple[Any, ...]]
    atomic: bool = False
    #: Return errors as values instead of raising the first one.
    tolerate: bool = False


@dataclass
class Embed:
    """Texts to embed (``query``: one search query)."""

    texts: list[str]
    query: bool = False


def _decode(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _item_from_doc(doc: dict[str, Any], score: float | None = None, searched: bool = False) -> Item:
    created = datetime.fromtimestamp(doc["created_at"], UTC)
    updated = datetime.fromtimestamp(doc["updated_at"], UTC)
    namespace = tuple(doc["ns"])
    if searched:
        return SearchItem(namespace=namespace, key=doc["key"], value=doc["value"], created_at=created,
                          updated_at=updated, score=score)
    return Item(value=doc["value"], key=doc["key"], namespace=namespace, created_at=created, updated_at=updated)


def _vector_bytes(vector: Sequence[float]) -> bytes:
    return struct.pack(f"<{len(vector)}f", *vector)


# ------------------------------------------------------------------------------------------------ parsing
def _pairs(row: Sequence[Any]) -> dict[str, Any]:
    return {_decode(row[i]): row[i + 1] for i in range(0, len(row) - 1, 2)}


def _get(mapping: dict, name: str) -> Any:
    return mapping.get(name, mapping.get(name.encode()))


def _search_fields(reply: Any) -> tuple[int, list[dict[str, Any]]]:
    """An ``FT.SEARCH`` reply as (total, [fields]): RESP2 (total, id, fields, ...) or RESP3 (a map)."""
    if isinstance(reply, dict):
        rows = [_get(r, "extra_attributes") or {} for r in _get(reply, "results") or []]
        return int(_get(reply, "total_results") or 0), [{_decode(k): _decode(v) for k, v in r.items()} for r in rows]
    total = int(reply[0])
    out = []
    for i in range(1, len(reply) - 1, 2):
        fields = reply[i + 1]
        out.append({_decode(k): _decode(v) for k, v in _pairs(fields).items()} if fields else {})
    return total, out


def _aggregate_rows(reply: Any) -> list[dict[str, Any]]:
    """An ``FT.AGGREGATE`` reply's rows as dicts, RESP2 or RESP3."""
    if isinstance(reply, dict):
        return [{_decode(k): _decode(v) for k, v in (_get(r, "extra_attributes") or {}).items()}
                for r in _get(reply, "results") or []]
    return [{k: _decode(v) for k, v in _pairs(row).items()} for row in reply[1:]]


def _search_docs(reply: Sequence[Any]) -> tuple[int, list[dict[str, Any]]]:
    total, rows = _search_fields(reply)
    docs = []
    for fields in rows:
        raw = fields.get("$")
        if raw:  # an item whose TTL ran out may still be listed by the index for a moment: skip it
            docs.append(json.loads(raw))
    return total, docs


def _vector_dims(info: Any) -> int | None:
    """The DIM of the vector attribute in an ``FT.INFO`` reply (RESP2 list or RESP3 map)."""
    if isinstance(info, dict):
        for attribute in _get(info, "attributes") or []:
            if isinstance(attribute, dict) and _decode(_get(attribute, "type")) == "VECTOR":
                dim = _get(attribute, "dim")
                return int(dim) if dim is not None else None
        return None
    flat = list(info)
    for i, entry in enumerate(flat):
        if _decode(entry) == "attributes" and i + 1 < len(flat):
            for attribute in flat[i + 1]:
                fields = [_decode(x) if isinstance(x, bytes) else x for x in attribute]
                if "VECTOR" in fields:
                    for j, name in enumerate(fields):
                        if isinstance(name, str) and name.lower() == "dim" and j + 1 < len(fields):
                            return int(fields[j + 1])
    return None


# ------------------------------------------------------------------------------------------------ indexes
def setup_indexes(prefix: str, items_index: str, vectors_index: str, dims: int) -> Generator[Commands, Any, None]:
    """Create the items index (JSON) and, with ``dims``, the vectors index (HASH, HNSW cosine); idempotent.

    An existing vector index of another size is refused: its vectors came from another embedding model.
    """
    info = yield Commands([("FT._LIST",)])
    existing = {_decode(name) for name in info[0]}
    creates = []
    if items_index not in existing:
        creates.append((
            "FT.CREATE", items_index, "ON", "JSON", "PREFIX", "1", f"{prefix}:store:item:",
            "SCHEMA", "$.ns_path[*]", "AS", "ns_path", "TAG", "CASESENSITIVE",
            "$.ns_key", "AS", "ns_key", "TAG", "CASESENSITIVE",
            "$.order", "AS", "order", "NUMERIC", "SORTABLE",
            "$.nvec", "AS", "nvec", "NUMERIC",
        ))
    if dims and vectors_index not in existing:
        creates.append((
            "FT.CREATE", vectors_index, "ON", "HASH", "PREFIX", "1", f"{prefix}:store:vec:",
            "SCHEMA", "ns_path", "TAG", "SEPARATOR", ",", "CASESENSITIVE",
            "embedding", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32", "DIM", str(dims),
            "DISTANCE_METRIC", "COSINE",
        ))
    if creates:
        results = yield Commands(creates, tolerate=True)
        for result in results:
            if isinstance(result, Exception) and "Index already exists" not in str(result):
                raise result
    if dims and vectors_index in existing:
        info = yield Commands([("FT.INFO", vectors_index)])
        held = _vector_dims(info[0])
        if held and held != dims:
            raise ValueError(f"the store's vector index {vectors_index} holds {held}-dimensional vectors, "
                             f"but the configured embeddings give {dims}; use another XMRT_KEY_PREFIX "
                             "or the embedding model the memories were stored with")
