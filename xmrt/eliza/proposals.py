"""Proposals and outcomes as records: parsing and validation of the JSON the CLI and the API take."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

DECISIONS = ("approve", "reject", "defer")
MAX_CRITERIA = 64
MAX_TEXT = 20_000
RESERVED_MARKS = (":", "×", "²")


# ----------------------------------------------------------------------------------- input records
@dataclass
class Proposal:
    """A DAO proposal or event to decide on."""

    id: str
    title: str
    description: str = ""
    category: str = "general"
    amount_xmr: float | None = None
    criteria: dict[str, float] = field(default_factory=dict)
    action: dict[str, Any] | None = None

    def text(self) -> str:
        """Title and description, for retrieval queries and prompts."""
        return f"{self.title}. {self.description}".strip()


@dataclass
class Outcome:
    """The observed outcome of a decided proposal."""

    id: str
    success: bool


@dataclass
class LineError:
    """A rejected input line: its number and what is wrong with it."""

    line: int
    error: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.error}"


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def proposal_from_dict(raw: Any) -> Proposal:
    """Validate one proposal object.

    Raises:
        ValueError: The message names the offending field.
    """
    if not isinstance(raw, dict):
        raise ValueError(f"a proposal must be a JSON object, got {type(raw).__name__}")
    pid = raw.get("id")
    if pid is None or (isinstance(pid, str) and not pid.strip()):
        raise ValueError("missing 'id'")
    if not isinstance(pid, str | int) or isinstance(pid, bool):
        raise ValueError(f"'id' must be a string or integer, got {pid!r}")
    title = raw.get("title")
    if not isinstance(title, str) or not title.strip():
        raise ValueError(f"proposal {pid}: missing or empty 'title'")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"proposal {pid}: 'description' must be a string")
    criteria = raw.get("criteria", {})
    if not isinstance(criteria, dict):
        raise ValueError(f"proposal {pid}: 'criteria' must be an object of name -> number in [0,1]")
    if len(criteria) > MAX_CRITERIA:
        raise ValueError(f"proposal {pid}: more than {MAX_CRITERIA} criteria")
    clean: dict[str, float] = {}
    for name, value in criteria.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"proposal {pid}: criterion names must be non-empty strings")
        if any(mark in name for mark in RESERVED_MARKS):
            raise ValueError(f"proposal {pid}: criterion {name!r}: ':' and '×' are reserved for derived features")
        number = _number(value, f"proposal {pid}: criterion {name!r}")
        if not 0.0 <= number <= 1.0:
            raise ValueError(f"proposal {pid}: criterion {name!r}={number} is outside [0,1]")
        clean[name.strip()] = number
    amount = raw.get("amount_xmr")
    if amount is not None:
        amount = _number(amount, f"proposal {pid}: 'amount_xmr'")
        if amount < 0:
            raise ValueError(f"proposal {pid}: 'amount_xmr' must be >= 0")
    action = raw.get("action")
    if action is not None and not (isinstance(action, dict) and isinstance(action.get("type"), str)):
        raise ValueError(f"proposal {pid}: 'action' must be an object with a 'type'")
    category = raw.get("category", "general")
    return Proposal(
        id=str(pid).strip(),
        title=title.strip()[:MAX_TEXT],
        description=description[:MAX_TEXT],
        category=str(category or "general"),
        amount_xmr=amount,
        criteria=clean,
        action=action,
    )


def outcome_from_dict(raw: Any) -> Outcome:
    """Validate one outcome object (``id`` and boolean ``success``)."""
    if not isinstance(raw, dict):
        raise ValueError(f"an outcome must be a JSON object, got {type(raw).__name__}")
    pid = raw.get("id")
    if pid is None or (isinstance(pid, str) and not pid.strip()) or isinstance(pid, bool):
        raise ValueError("missing 'id'")
    success = raw.get("success")
    if not isinstance(success, bool):
        raise ValueError(f"outcome {pid}: 'success' must be true or false, got {success!r}")
    return Outcome(id=str(pid).strip(), success=success)


def parse_jsonl(lines: Iterable[str], parse) -> tuple[list, list[LineError]]:
    """Parse JSON lines with ``parse``; bad lines become :class:`LineError` and good lines still count.

    Duplicate ids within the input are rejected after their first occurrence.
    """
    good, errors, seen = [], [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = parse(json.loads(line))
        except json.JSONDecodeError as exc:
            errors.append(LineError(number, f"malformed JSON ({exc.msg} at column {exc.colno})"))
            continue
        except ValueError as exc:
            errors.append(LineError(number, str(exc)))
            continue
        if record.id in seen:
            errors.append(LineError(number, f"duplicate id {record.id!r} in this input"))
            continue
        seen.add(record.id)
        good.append(record)
    return good, errors
