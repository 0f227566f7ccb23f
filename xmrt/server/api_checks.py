"""Checks of the served API's request bodies against the graphs' contracts, before anything runs or is stored.

An entry-point module (it imports the served graphs, as the server does). The auth handlers
(:mod:`xmrt.server.auth`) call it for every run, cron and assistant request and every store request, and answer
422 naming the first bad field: a malformed input (``input.proposals: must be a list, got null``), a context
setting of the wrong type or out of range (``context.knowledge_k``), a store key that is empty or a TTL out of
range. Nothing is created or stored when a check fails.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import logging
import math
import os
import uuid
from pathlib import Path
from typing import Any

from xmrt.server.schema_check import FieldError, check_dataclass, check_typeddict

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: langgraph-api derives the id of each graph's default assistant as uuid5(NAMESPACE_GRAPH, graph_id).
NAMESPACE_GRAPH = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")
#: Longest TTL a store item may ask for: ten years, in minutes.
MAX_TTL_MINUTES = 10 * 365 * 24 * 60
MAX_KEY_LENGTH = 1024
MAX_LABEL_LENGTH = 256
MAX_LABELS = 16
MAX_PAGE = 1000


class RequestRefused(ValueError):
    """A request body the API refuses: ``status`` and the ``field`` it names."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


def served_graphs() -> dict[str, str]:
    """Graph id -> ``path:attribute`` of the graphs the server serves (``LANGSERVE_GRAPHS``, else langgraph.json)."""
    raw = os.environ.get("LANGSERVE_GRAPHS")
    try:
        return json.loads(raw) if raw else json.loads((PROJECT_ROOT / "langgraph.json").read_text())["graphs"]
    except (OSError, ValueError, KeyError):
        return {}


def graph_of_assistant(assistant_id: Any) -> str | None:
    """The graph of a default assistant (its id is the graph's name or uuid5 of it), else None."""
    wanted = str(assistant_id)
    for name in served_graphs():
        if wanted in (name, str(uuid.uuid5(NAMESPACE_GRAPH, name))):
            return name
    return None


@functools.cache
def _load(spec: str) -> Any:
    path, _, attribute = spec.rpartition(":")
    file = Path(path)
    file = file if file.is_absolute() else (PROJECT_ROOT / file)
    file = file.resolve()
    if file.is_relative_to(PROJECT_ROOT):  # the same module object the rest of the project imports
        module = importlib.import_module(".".join(file.relative_to(PROJECT_ROOT).with_suffix("").parts))
    else:
        loaded = importlib.util.spec_from_file_location(f"xmrt_checked_{file.stem}", file)
        module = importlib.util.module_from_spec(loaded)
        loaded.loader.exec_module(module)
    return getattr(module, attribute)


def contract(graph: str | None) -> tuple[Any, Any] | None:
    """(input schema, context schema) of a served graph, or None when it is unknown."""
    spec = served_graphs().get(graph or "")
    if not spec:
        return None
    try:
        compiled = _load(spec)
    except Exception as exc:  # noqa: BLE001 - an unloadable graph fails at run time, with the server's error
        log.warning("cannot load graph %s for request checks: %s", graph, exc)
        return None
    builder = getattr(compiled, "builder", None)
    if builder is None:
        return None
    return getattr(builder, "input_schema", None), getattr(builder, "context_schema", None)


def _refuse(exc: FieldError) -> RequestRefused:
    return RequestRefused(exc.field, exc.detail)


def check_context(graph: str | None, context: Any, configurable: Any, *, strict: bool) -> None:
    """Check a run's (or assistant's) context against the graph's context schema.

    Args:
        graph: The graph id.
        context: The ``context`` object of the request (None when absent).
        configurable: ``config.configurable``; its keys that name context settings are checked too.
        strict: Refuse unknown keys in ``context`` (off when the context is a mirror of ``configurable``).
    """
    found = contract(graph)
    if not found or found[1] is None:
        return
    schema = found[1]
    import dataclasses

    if not dataclasses.is_dataclass(schema):
        return
    names = {f.name for f in dataclasses.fields(schema)}
    try:
        for where, source, whole in (("context", context, strict), ("config.configurable", configurable, False)):
            if source is None:
                continue
            if not isinstance(source, dict):
                raise FieldError(where, "must be an object")
            values = source if whole else {k: v for k, v in source.items() if k in names}
            check_dataclass(values, schema, where)
    except FieldError as exc:
        raise _refuse(exc) from None


def check_input(graph: str | None, value: Any) -> None:
    """Check a run's input against the graph's input schema (``None`` input, a resume, is not checked)."""
    found = contract(graph)
    if value is None or not found or found[0] is None:
        return
    from typing_extensions import is_typeddict

    if not is_typeddict(found[0]):
        return
    try:
        check_typeddict(value, found[0], "input")
    except FieldError as exc:
        raise _refuse(exc) from None


def check_run(graph: str | None, kwargs: dict[str, Any]) -> None:
    """Check a run request's input and context (``kwargs`` as langgraph-api hands them to the auth handler)."""
    config = kwargs.get("config") or {}
    configurable = config.get("configurable") if isinstance(config, dict) else None
    provided = isinstance(configurable, dict) and configurable.get("__context_provided__")
    check_input(graph, kwargs.get("input"))
    check_context(graph, kwargs.get("context") if provided else None, configurable, strict=True)


# ------------------------------------------------------------------------------------------------ store
def _labels(field: str, labels: Any, *, allow_empty: bool) -> None:
    if labels is None and allow_empty:
        return
    if not isinstance(labels, list | tuple):
        raise RequestRefused(field, "must be a list of labels")
    if not labels and not allow_empty:
        raise RequestRefused(field, "must have at least one label")
    if len(labels) > MAX_LABELS:
        raise RequestRefused(field, f"has {len(labels)} labels; at most {MAX_LABELS}")
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label:
            raise RequestRefused(f"{field}[{i}]", "must be a non-empty string")
        if "." in label or "\x00" in label:
            raise RequestRefused(f"{field}[{i}]", "may not contain '.' or NUL")
        if len(label) > MAX_LABEL_LENGTH:
            raise RequestRefused(f"{field}[{i}]", f"is longer than {MAX_LABEL_LENGTH} characters")


def _int_in(field: str, value: Any, lo: int, hi: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RequestRefused(field, f"must be an integer from {lo} to {hi}, got {value!r}")


def check_store(action: str, value: dict[str, Any]) -> None:
    """Check a store request (``value`` as langgraph-api hands it to the store auth handler)."""
    if action in ("put", "get", "delete"):
        _labels("namespace", value.get("namespace"), allow_empty=False)
        key = value.get("key")
        if not isinstance(key, str) or not key:
            raise RequestRefused("key", "must be a non-empty string")
        if len(key) > MAX_KEY_LENGTH:
            raise RequestRefused("key", f"is longer than {MAX_KEY_LENGTH} characters")
    if action == "put":
        if not isinstance(value.get("value"), dict):
            raise RequestRefused("value", "must be an object")
        index = value.get("index")
        if index is not None and index is not False and not (
                isinstance(index, list) and all(isinstance(f, str) and f for f in index)):
            raise RequestRefused("index", "must be false, null or a list of field paths")
        ttl = value.get("ttl")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl)
                                or not 0 < ttl <= MAX_TTL_MINUTES):
            raise RequestRefused("ttl", f"must be a number of minutes above 0 and at most {MAX_TTL_MINUTES} "
                                 f"(ten years), or null, got {ttl!r}")
    if action == "search":
        _labels("namespace_prefix", value.get("namespace"), allow_empty=True)
        if value.get("filter") is not None and not isinstance(value.get("filter"), dict):
            raise RequestRefused("filter", "must be an object")
        _int_in("limit", value.get("limit"), 0, MAX_PAGE)
        _int_in("offset", value.get("offset"), 0, 10**6)
        if value.get("query") is not None and not isinstance(value.get("query"), str):
            raise RequestRefused("query", "must be a string")
    if action == "list_namespaces":
        for field in ("namespace", "suffix"):
            _labels(field if field == "suffix" else "prefix", value.get(field), allow_empty=True)
        _int_in("max_depth", value.get("max_depth"), 1, MAX_LABELS)
        _int_in("limit", value.get("limit"), 0, MAX_PAGE)
        _int_in("offset", value.get("offset"), 0, 10**6)
