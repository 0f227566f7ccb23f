"""Check JSON-shaped values against the type annotations of graph inputs and contexts, naming the bad field.

The graphs declare their contracts as ``TypedDict`` inputs and dataclass contexts (``graphs/``). This module
checks a value against such an annotation and raises :class:`FieldError` with the path of the first bad field
(``input.proposals``, ``context.knowledge_k``), so the served API answers 422 naming it and a Python caller
gets a ``ValueError`` naming it, instead of a ``TypeError`` deep inside a node.

Supported: ``str``, ``int``, ``float`` (finite; an int is accepted), ``bool``, ``None``, ``Any``,
``list``/``tuple``/``Sequence``, ``dict``/``Mapping``, ``Literal``, unions, ``Annotated``, ``TypedDict``
(required and ``NotRequired`` keys, unknown keys refused) and LangChain messages (a message, a dict, a string
or a ``(role, text)`` pair, as ``add_messages`` accepts). Anything else is accepted as it is.

Dataclass fields may carry bounds in their metadata: ``ge``, ``le`` (numbers, or the length of a string) and
``choices``; :func:`check_dataclass` applies them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NotRequired, Required, Union, get_args, get_origin

from typing_extensions import is_typeddict

#: Items of a list checked one by one (the rest only by count): a bound on the work per request.
MAX_CHECKED_ITEMS = 10_000


class FieldError(ValueError):
    """A value does not match its declared type. ``field`` is its path, e.g. ``context.knowledge_k``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _type_name(annotation: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null",
             list: "a list", tuple: "a list", dict: "an object"}
    if annotation in names:
        return names[annotation]
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(get_args(annotation)[0])
    if origin in (list, tuple, Sequence, typing.Sequence):
        return "a list"
    if origin in (dict, Mapping, typing.Mapping) or is_typeddict(annotation):
        return "an object"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


def _is_message_type(annotation: Any) -> bool:
    try:
        from langchain_core.messages import BaseMessage
    except ImportError:  # pragma: no cover - langchain-core is a dependency
        return False
    candidates = [annotation]
    while candidates:
        current = candidates.pop()
        if isinstance(current, type) and issubclass(current, BaseMessage):
            return True
        candidates.extend(get_args(current))
    return False


#: The JSON scalars: what a value of each annotation must pass, and how a message names it (a bool is not a number).
_SCALARS: dict[type, tuple[Callable[[Any], bool], str]] = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v), "a finite number"),
    str: (lambda v: isinstance(v, str), "a string"),
}


def check_value(value: Any, annotation: Any, where: str) -> None:
    """Raise :class:`FieldError` when ``value`` does not match ``annotation``.

    Args:
        value: The (JSON-decoded) value.
        annotation: The declared type.
        where: The field's path, used in the message.
    """
    if annotation is Any or annotation is object or isinstance(annotation, typing.TypeVar):
        return
    origin = get_origin(annotation)
    if origin is typing.Annotated or origin in (NotRequired, Required):
        check_value(value, get_args(annotation)[0], where)
        return
    if _is_message_type(annotation) and origin not in (list, Sequence, typing.Sequence):
        if value is None or not isinstance(value, str | dict | list | tuple) and not hasattr(value, "content"):
            raise FieldError(where, f"must be a message (an object with role and content), got {_describe(value)}")
        return
    if origin in (Union, types.UnionType):
        errors = []
        for option in get_args(annotation):
            try:
                check_value(value, option, where)
                return
            except FieldError as exc:
                errors.append(exc)
        raise FieldError(where, f"must be {_type_name(annotation)}, got {_describe(value)}")
    if annotation is type(None) or annotation is None:
        if value is not None:
            raise FieldError(where, f"must be null, got {_describe(value)}")
        return
    if origin is Literal:
        if value not in get_args(annotation):
            raise FieldError(where, f"must be {_type_name(annotation)}, got {_describe(value)}")
        return
    if isinstance(annotation, type) and annotation in _SCALARS:
        accepts, what = _SCALARS[annotation]
        if not accepts(value):
            raise FieldError(where, f"must be {what}, got {_describe(value)}")
        return
    if is_typeddict(annotation):
        check_typeddict(value, annotation, where)
        return
    if annotation in (list, tuple) or origin in (list, tuple, Sequence, typing.Sequence):
        if _is_message_type(annotation) and isinstance(value, str | dict):
            return  # add_messages also takes a single message
        if not isinstance(value, list | tuple):
            raise FieldError(where, f"must be a list, got {_describe(value)}")
        args = get_args(annotation)
        item_type = args[0] if args else Any
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            item_type = Any  # a fixed-shape tuple: its items are not checked one by one
        for i, item in enumerate(value[:MAX_CHECKED_ITEMS]):
            check_value(item, item_type, f"{where}[{i}]")
        return
    if annotation is dict or origin in (dict, Mapping, typing.Mapping):
        if not isinstance(value, dict):
            raise FieldError(where, f"must be an object, got {_describe(value)}")
        args = get_args(annotation)
        if len(args) == 2:
            for key, item in list(value.items())[:MAX_CHECKED_ITEMS]:
                check_value(key, args[0], f"{where} key")
                check_value(item, args[1], f"{where}.{key}")
        return
    # Any other class: accepted as it is (the graph's own validation decides).


@functools.cache
def _typeddict_keys(schema: Any) -> tuple[dict[str, Any], frozenset[str]]:
    hints = typing.get_type_hints(schema, include_extras=True)
    # Computed from the resolved hints: with postponed annotations, __required_keys__ misses NotRequired.
    total = getattr(schema, "__total__", True)
    required = set()
    for name, hint in hints.items():
        origin = get_origin(hint)
        if origin is NotRequired or (origin is typing.Annotated and get_origin(get_args(hint)[0]) is NotRequired):
            continue
        if total or origin is Required:
            required.add(name)
    return hints, frozenset(required)


@functools.cache
def _dataclass_fields(schema: type) -> tuple[dict[str, dataclasses.Field], dict[str, Any]]:
    return {f.name: f for f in dataclasses.fields(schema)}, typing.get_type_hints(schema, include_extras=True)


def check_typeddict(value: Any, schema: Any, where: str, *, allow_unknown: bool = False) -> None:
    """Check a JSON object against a ``TypedDict``: required keys present, unknown keys refused, types match."""
    if not isinstance(value, dict):
        raise FieldError(where, f"must be an object, got {_describe(value)}")
    hints, required = _typeddict_keys(schema)
    if not allow_unknown:
        unknown = sorted(set(value) - set(hints))
        if unknown:
            raise FieldError(f"{where}.{unknown[0]}", f"is not a field of this input (fields: {', '.join(hints)})")
    for key in sorted(required - set(value)):
        raise FieldError(f"{where}.{key}", "is required")
    for key, item in value.items():
        if key in hints:
            check_value(item, hints[key], f"{where}.{key}")


def _bounds(field: dataclasses.Field, value: Any, where: str) -> None:
    meta = field.metadata or {}
    if "choices" in meta and value not in meta["choices"]:
        raise FieldError(where, f"must be one of {', '.join(repr(c) for c in meta['choices'])}, got {_describe(value)}")
    measure = len(value) if isinstance(value, str) else value
    if isinstance(measure, bool) or not isinstance(measure, int | float):
        return
    what = "its length" if isinstance(value, str) else "it"
    if "ge" in meta and measure < meta["ge"]:
        raise FieldError(where, f"must be at least {meta['ge']} ({what} is {measure})")
    if "le" in meta and measure > meta["le"]:
        raise FieldError(where, f"must be at most {meta['le']} ({what} is {measure})")


def check_dataclass(value: Any, schema: type, where: str = "context") -> None:
    """Check an object (or an instance of ``schema``) field by field: unknown fields, types and bounds.

    Args:
        value: A JSON object, or an instance of ``schema``.
        schema: The dataclass.
        where: The path used in messages.
    """
    fields, hints = _dataclass_fields(schema)
    if isinstance(value, schema):
        items = {name: getattr(value, name) for name in fields}
    elif isinstance(value, dict):
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise FieldError(f"{where}.{unknown[0]}", f"is not a setting of this graph (settings: {', '.join(fields)})")
        items = value
    else:
        raise FieldError(where, f"must be an object, got {_describe(value)}")
    for name, item in items.items():
        path = f"{where}.{name}"
        check_value(item, hints.get(name, Any), path)
        _bounds(fields[name], item, path)
