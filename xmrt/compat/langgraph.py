"""Private API of ``langgraph``: the configurable key of a run's durability.

LangGraph has no public way to give a compiled graph a default durability (``durability=`` is a per-call
argument). It reads the key ``langgraph._internal._constants.CONFIG_KEY_DURABILITY`` from the run's
``configurable`` when a call passes none, so :func:`durability_configurable` sets that key:

* :func:`xmrt.redis.persistence.redis_graph` gives graphs compiled with the Redis checkpointer the default
  ``XMRT_DURABILITY`` ("sync": each super-step's checkpoint is written before the next one starts, which is what
  resume-after-kill needs); a call may still pass ``durability=``.
* the orchestrator runs its child graphs with "exit": a child has no checkpointer, and LangGraph 1.2 waits on a
  checkpoint save that never happens when a checkpointer-less graph inherits ``durability="sync"`` from its
  parent.

Guarded by :data:`TESTED_VERSIONS`; tests/test_compat.py checks the key's effect on the installed langgraph.
"""

from __future__ import annotations

from typing import Any, Literal

from xmrt.compat import require

#: The langgraph versions whose private durability key the suite has passed with.
TESTED_VERSIONS: tuple[str, ...] = ("1.2.24",)

Durability = Literal["sync", "async", "exit"]


def durability_configurable(durability: Durability | str) -> dict[str, Any]:
    """The ``configurable`` entry that makes ``durability`` a run's default.

    Args:
        durability: ``"sync"``, ``"async"`` or ``"exit"``.

    Returns:
        A one-key dict to merge into a config's ``configurable`` (or pass to ``graph.with_config``).

    Raises:
        CompatError: The installed langgraph is not one of :data:`TESTED_VERSIONS`.
    """
    require("langgraph", TESTED_VERSIONS, "a graph's default durability")
    from langgraph._internal._constants import CONFIG_KEY_DURABILITY

    return {CONFIG_KEY_DURABILITY: durability}
