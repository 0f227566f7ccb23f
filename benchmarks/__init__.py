"""Benchmarks and studies of the project, each run by an ``xmrt bench …`` command; not part of the ``xmrt`` runtime.

The evaluation sets (``msmarco/`` and the ones ``xmrt eval build-set`` writes) live outside the repository: a
command takes its dataset as an argument, or finds it under ``$XMRT_EVAL_DIR`` (:func:`eval_dir`).
"""

from __future__ import annotations

import os
from pathlib import Path

from xmrt.errors import UserError

EVAL_DIR_VARIABLE = "XMRT_EVAL_DIR"


def eval_dir(name: str) -> Path:
    """The evaluation set ``name`` under ``$XMRT_EVAL_DIR`` (e.g. ``eval_dir("msmarco")``).

    Raises:
        UserError: ``XMRT_EVAL_DIR`` is unset, or has no directory ``name``; the message says what to pass.
    """
    base = os.environ.get(EVAL_DIR_VARIABLE, "").strip()
    if not base:
        raise UserError(f"no evaluation set given: pass its directory (--dataset / --corpus-jsonl), or set "
                        f"{EVAL_DIR_VARIABLE} to the directory that holds {name}/")
    path = Path(base).expanduser() / name
    if not path.is_dir():
        raise UserError(f"{path}: no such directory ({EVAL_DIR_VARIABLE}={base} must hold {name}/)")
    return path
