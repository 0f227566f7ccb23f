"""The production server's compatibility layer: every use of a dependency's private API is here, and only here.

``xmrt serve`` runs the stock ``langgraph-api`` on the ``langgraph-runtime-pg`` runtime (Postgres + Redis). Two
of that combination's problems are fixed from our side, without changing either package:

1. **Lifespan messages reach the runtime.** ``langgraph_api.server`` puts ``EnsureStoreAccessible`` in the
   middleware of the custom app (``http.app``). It runs on *every* ASGI scope, the ``lifespan`` scope included,
   and asks the runtime for its store before the runtime's lifespan has started it. With runtime-pg that raises;
   uvicorn's default lifespan mode ("auto") then treats lifespan as unsupported, the runtime never starts, and
   every request answers 500. :func:`xmrt.compat.runtime_pg_app.app` (the ASGI application ``xmrt serve`` gives
   uvicorn) sends lifespan messages straight to the app's router, which runs the combined lifespans, and
   everything else through the whole app. uvicorn runs with ``--lifespan on``, so a failing startup stops the process.
2. **Run creation with auth.** langgraph-api stores the authenticated user object in the run's
   ``config.configurable.langgraph_auth_user``; runtime-pg writes run kwargs (and the config of a thread a run
   creates) to JSONB columns through SQLAlchemy's plain ``json.dumps``, which cannot encode langgraph-api's
   ``ProxyUser``: every run creation answered 500. :data:`auth` serves the project's ``Auth`` object (langgraph.json
   ``auth.path``) with its ``authenticate`` result turned into a :class:`JsonUser`: a ``BaseUser`` that *is* a
   dict, built from the user serialised with ``langgraph_api.serde``. Plain ``json.dumps`` encodes it, langgraph-api
   keeps it as the request's user (it is a ``BaseUser``), and the worker that later runs the stored run turns the
   dict back into a user the way it does for every runtime. Handlers see the same ``ctx.user.identity``.

A third difference is fixed in that app as well: runtime-pg answers ``GET /threads/{id}/state`` with 200 and an
empty state for a thread the caller may not read (or that does not exist), where the in-memory runtime answers
404; the production app checks an empty state with ``GET /threads/{id}`` for the same caller and returns its 404.

And one more, found by ``xmrt bench api`` with two processes: ``POST /threads/{id}/runs/wait`` sometimes answered
with an earlier state of the run (its stream join stops at a final run status before the run's last messages from
the other process are read); the app checks the answer against the thread's final values.

The start-up problem (a startup that hangs, e.g. on a Postgres that accepts connections but never answers, blocks
the event loop inside the runtime's synchronous migration step and so ignores SIGTERM) needs no private API: the
``xmrt serve`` supervisor checks Postgres and Redis first, waits for readiness with a deadline, and ends the
server's process group itself (xmrt/cli/commands/serve.py).

Private API touched, all guarded by :func:`check_versions` (exact versions this suite has tested) and by
:func:`shape_problems` (the attributes used exist):

* ``langgraph_sdk.Auth._authenticate_handler``, ``_handlers``, ``_global_handlers``, ``_handler_cache`` (read from
  the project's ``Auth`` and set on the served copy; langgraph-api itself reads them the same way).
* ``langgraph_api.server.app.router`` (the Starlette router of the served app; public Starlette API on an object
  that langgraph-api builds).
* ``langgraph_runtime_pg.database.start_pool`` / ``stop_pool`` and ``langgraph_runtime_pg.migrate.upgrade_head``
  (:func:`prepare`: the runtime's own schema set-up, run once under a lock instead of by every worker at once).

tests/test_compat_runtime_pg.py checks both fixes against the installed packages, and tests/test_production.py
runs them in real servers.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.authentication import BaseUser

from xmrt.compat import CompatError

log = logging.getLogger(__name__)

#: The versions this compatibility layer was written for and the suite has passed with (pyproject.toml pins them).
TESTED_VERSIONS: dict[str, str] = {
    "langgraph-api": "0.16.7",
    "langgraph-runtime-pg": "0.11.1.post1",
    "langgraph-sdk": "0.4.14",
}


class RuntimeCompatError(CompatError):
    """The installed langgraph-api / langgraph-runtime-pg / langgraph-sdk are not the combination tested here."""


def installed_versions() -> dict[str, str | None]:
    """The installed version of each package in :data:`TESTED_VERSIONS` (None when missing)."""
    found: dict[str, str | None] = {}
    for name in TESTED_VERSIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def check_versions() -> None:
    """Refuse an untested combination, in one line naming what differs.

    Raises:
        RuntimeCompatError: A package is missing or has another version than :data:`TESTED_VERSIONS`.
    """
    found = installed_versions()
    wrong = [f"{name} {found[name] or 'missing'} (tested: {want})" for name, want in TESTED_VERSIONS.items()
             if found[name] != want]
    if wrong:
        raise RuntimeCompatError(
            "the production server runs only on the tested langgraph-api/langgraph-runtime-pg combination: "
            + "; ".join(wrong) + ". Install the pinned versions (python3 -m xmrt.bootstrap setup), or update "
            "xmrt/compat/runtime_pg.py after the tests pass on the new ones.")


# ----------------------------------------------------------------------------------------------- users
class JsonUser(dict, BaseUser):
    """An authenticated user that plain ``json.dumps`` can encode: a dict that is also a Starlette ``BaseUser``.

    Keys: ``identity`` (required), ``is_authenticated``, ``display_name``, ``permissions`` and whatever else the
    authenticate handler returned. Attribute access reads keys too (``user.identity``, ``user.org``), like the
    ``DotDict``-backed users langgraph-api builds.
    """

    @classmethod
    def of(cls, user: Any) -> JsonUser:
        """The user as a :class:`JsonUser`, serialised with ``langgraph_api.serde`` (what the runtime stores)."""
        import orjson
        from langgraph_api.serde import json_dumpb

        if isinstance(user, JsonUser):
            return user
        if isinstance(user, str):
            return cls(identity=user)
        data = orjson.loads(json_dumpb(dict(user) if isinstance(user, Mapping) else user))
        if not isinstance(data, dict) or not data.get("identity"):
            identity = getattr(user, "identity", None)
            if not identity:
                raise ValueError(f"the authenticated user has no identity: {type(user).__name__}")
            data = {"identity": identity, "is_authenticated": getattr(user, "is_authenticated", True),
                    "display_name": getattr(user, "display_name", identity),
                    **({"permissions": list(user.permissions)} if hasattr(user, "permissions") else {})}
        return cls(data)

    @property
    def identity(self) -> str:
        """The user id."""
        return self["identity"]

    @property
    def is_authenticated(self) -> bool:
        """True unless the handler said otherwise."""
        return bool(self.get("is_authenticated", True))

    @property
    def display_name(self) -> str:
        """The display name (the identity unless given)."""
        return self.get("display_name") or self.identity

    @property
    def permissions(self) -> list[str]:
        """The permissions the handler granted."""
        return list(self.get("permissions") or [])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def json_safe(result: Any) -> Any:
    """An ``authenticate`` result with its user as a :class:`JsonUser` (``(permissions, user)`` tuples kept)."""
    if isinstance(result, tuple) and len(result) == 2:
        permissions, user = result
        return permissions, JsonUser.of(user)
    return JsonUser.of(result)


def json_safe_authenticate(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an ``authenticate`` handler so that it returns :func:`json_safe` users; the signature is kept."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def authenticate(*args: Any, **kwargs: Any) -> Any:
            return json_safe(await fn(*args, **kwargs))
    else:
        @functools.wraps(fn)
        def authenticate(*args: Any, **kwargs: Any) -> Any:
            return json_safe(fn(*args, **kwargs))
    return authenticate


_AUTH_SLOTS = ("_authenticate_handler", "_handlers", "_global_handlers", "_handler_cache")


def shape_problems(original: Any = None) -> list[str]:
    """What this module expects from the installed packages and does not find (empty when all is in place)."""
    from langgraph_sdk import Auth

    problems = [f"langgraph_sdk.Auth has no {name}" for name in _AUTH_SLOTS if name not in Auth.__slots__]
    if original is not None and getattr(original, "_authenticate_handler", None) is None:
        problems.append("the project's Auth object has no authenticate handler")
    return problems


def served_auth(original: Any) -> Any:
    """A copy of ``original`` (a ``langgraph_sdk.Auth``) whose ``authenticate`` returns JSON-safe users.

    The authorization handlers are shared with ``original``, not copied, so both always agree.

    Raises:
        RuntimeCompatError: langgraph_sdk's ``Auth`` no longer has the attributes used here.
    """
    from langgraph_sdk import Auth

    problems = shape_problems(original)
    if problems:
        raise RuntimeCompatError("; ".join(problems))
    served = Auth()
    served._handlers = original._handlers
    served._global_handlers = original._global_handlers
    served._handler_cache = original._handler_cache
    served._authenticate_handler = json_safe_authenticate(original._authenticate_handler)
    return served


@functools.cache
def _auth() -> Any:
    from xmrt.server.auth import auth as project_auth

    return served_auth(project_auth)


def __getattr__(name: str) -> Any:
    # ``auth`` is built on first use (langgraph-api loads it by path), so importing this module does nothing.
    if name == "auth":
        return _auth()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------- schema
#: Held while one ``xmrt serve`` prepares the schema, so that hosts starting together do not race. It is taken with
#: ``pg_try_advisory_lock`` in a polling loop, never with the blocking ``pg_advisory_lock``: a session blocked in
#: that call holds a snapshot, and the ``CREATE INDEX CONCURRENTLY`` of the holder's set-up waits for every older
#: snapshot to end, so the two would wait for each other forever (Postgres cannot see that cycle: it closes in our
#: process, which holds the lock on one connection and waits on another).
PREPARE_LOCK_SQL = "SELECT pg_try_advisory_lock(hashtext('xmrt serve: langgraph-runtime-pg schema'))"


def prepare() -> None:
    """Create or upgrade the runtime's tables once, before the workers start (``xmrt serve`` runs it in a child).

    It runs the runtime's own start-up of its pools (Alembic migrations, the Postgres checkpointer and store
    tables it sets up, the Redis stream connection) under a Postgres advisory lock, then closes them. The workers
    start with ``LG_RUNTIME_PG_AUTO_MIGRATE=false`` and find every table in place, so no two processes create the
    same table at once (concurrent ``CREATE TABLE IF NOT EXISTS`` can fail in Postgres). Reads ``DATABASE_URI`` and
    ``REDIS_URI`` from the environment, as the runtime does.
    """
    import asyncio
    import os

    import psycopg

    check_versions()
    from langgraph_runtime_pg.database import start_pool, stop_pool
    from langgraph_runtime_pg.migrate import upgrade_head

    uri = os.environ["DATABASE_URI"]
    phase = "connecting to Postgres"
    started = time.monotonic()

    async def start_stop() -> None:
        nonlocal phase
        phase = "starting the runtime's Postgres pools and Redis connection"
        await asyncio.wait_for(start_pool(), 120)
        phase = "closing them"
        try:  # awaited directly (not as a task), stop_pool can wait forever on the pools' workers
            await asyncio.wait_for(stop_pool(), 15)
        except TimeoutError:
            pass  # this process exits next, which closes every connection anyway

    try:
        with psycopg.connect(uri, connect_timeout=10, autocommit=True) as lock:
            phase = "waiting for the schema lock (another xmrt serve is preparing)"
            while not lock.execute(PREPARE_LOCK_SQL).fetchone()[0]:
                time.sleep(0.25)
            phase = "migrating the schema"
            upgrade_head(uri)
            asyncio.run(start_stop())
    except TimeoutError:
        raise TimeoutError(f"timed out after {time.monotonic() - started:.0f} s while {phase}") from None
