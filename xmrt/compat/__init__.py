"""Every use of a dependency's private API, one module per dependency, each guarded by a version check.

* :mod:`xmrt.compat.langgraph`: the config key that gives a compiled graph a default durability.
* :mod:`xmrt.compat.langchain_core`: ``BaseChatModel``'s generic thread bridge for streaming.
* :mod:`xmrt.compat.runtime_pg` and :mod:`xmrt.compat.runtime_pg_app`: the production server's fixes to
  langgraph-api on langgraph-runtime-pg (auth users, schema set-up; the served ASGI app).

Each module names the versions it was tested with and refuses others with :class:`CompatError`, one line naming
the installed and the tested versions, the first time its private API is used. Nothing here patches a dependency.
"""

from __future__ import annotations

import functools
import importlib.metadata


class CompatError(RuntimeError):
    """An installed dependency is not a version whose private API this project was tested against."""


def installed_version(package: str) -> str | None:
    """The installed version of ``package`` (its distribution name), or None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def require(package: str, tested: tuple[str, ...], use: str) -> None:
    """Refuse to use ``package``'s private API unless its installed version is one of ``tested``.

    Args:
        package: The distribution name (``langgraph``).
        tested: The versions the suite has passed with.
        use: What the private API is used for, for the error message.

    Raises:
        CompatError: The installed version is not in ``tested`` (or the package is missing).
    """
    found = installed_version(package)
    if found not in tested:
        raise CompatError(
            f"{use} uses private API of {package}, tested with {package} {', '.join(tested)}; installed: "
            f"{found or 'none'}. Install a tested version (constraints.txt), or update xmrt/compat/ after the "
            "tests pass on the new one.")
