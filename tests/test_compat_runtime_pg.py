"""xmrt/compat/runtime_pg.py against the installed packages: the version guard, and JSON-safe auth users.

The fixes run in real servers in tests/test_production.py and tests/test_production_app.py; these tests pin what
they rely on, so that an upgrade of langgraph-api, langgraph-runtime-pg or langgraph-sdk fails here first.
"""

from __future__ import annotations

import asyncio
import inspect
import json

import pytest
from starlette.authentication import BaseUser

from xmrt.compat import runtime_pg as compat


def test_the_installed_packages_are_the_tested_combination():
    assert compat.installed_versions() == compat.TESTED_VERSIONS
    compat.check_versions()


def test_another_version_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(compat, "installed_versions",
                        lambda: {**compat.TESTED_VERSIONS, "langgraph-api": "0.17.0", "langgraph-runtime-pg": None})
    with pytest.raises(compat.RuntimeCompatError) as err:
        compat.check_versions()
    text = str(err.value)
    assert "\n" not in text
    assert "langgraph-api 0.17.0 (tested: 0.16.7)" in text and "langgraph-runtime-pg missing" in text


def test_the_sdk_still_has_what_served_auth_uses():
    from xmrt.server.auth import auth as project_auth

    assert compat.shape_problems(project_auth) == []


def test_a_json_user_is_plain_json_and_a_base_user():
    user = compat.JsonUser.of({"identity": "alice", "is_authenticated": True, "permissions": ["user"], "org": "dao"})
    assert isinstance(user, BaseUser) and isinstance(user, dict)
    assert json.loads(json.dumps({"configurable": {"langgraph_auth_user": user}})) == {
        "configurable": {"langgraph_auth_user": {"identity": "alice", "is_authenticated": True,
                                                 "permissions": ["user"], "org": "dao"}}}
    assert user.identity == "alice" and user.display_name == "alice" and user.permissions == ["user"]
    assert user.org == "dao" and user.is_authenticated
    with pytest.raises(AttributeError):
        user.missing  # noqa: B018
    assert compat.JsonUser.of("bob").identity == "bob"
    with pytest.raises(ValueError, match="no identity"):
        compat.JsonUser.of({"name": "nobody"})


def test_langgraph_api_keeps_a_json_user_as_the_request_user_and_rebuilds_it_in_the_worker(monkeypatch):
    # langgraph_api.config reads these when first imported (the dev server's values; nothing is connected).
    for name, value in {"REDIS_URI": "redis://127.0.0.1:1", "DATABASE_URI": ":memory:",
                        "MIGRATIONS_PATH": "__inmem", "LANGGRAPH_RUNTIME_EDITION": "inmem"}.items():
        monkeypatch.setenv(name, value)
    from langgraph_api.auth.custom import ProxyUser, _normalize_auth_response, normalize_user

    user = compat.JsonUser.of({"identity": "alice", "permissions": ["user"]})
    credentials, normalized = _normalize_auth_response(user)
    assert normalized is user and credentials.scopes == ["user"]
    # What the worker of another process sees: the stored dict, made a user again.
    stored = json.loads(json.dumps(user))
    rebuilt = normalize_user(stored)
    assert isinstance(rebuilt, ProxyUser) and rebuilt.identity == "alice"
    # The failure this avoids: langgraph-api's own user object is not JSON.
    with pytest.raises(TypeError):
        json.dumps(normalize_user({"identity": "alice"}))


def test_served_auth_shares_the_handlers_and_keeps_the_authenticate_signature():
    from xmrt.server.auth import auth as project_auth

    served = compat.served_auth(project_auth)
    assert served is not project_auth
    assert served._handlers is project_auth._handlers and served._global_handlers is project_auth._global_handlers
    original = project_auth._authenticate_handler
    wrapped = served._authenticate_handler
    assert inspect.signature(wrapped) == inspect.signature(original)
    assert inspect.iscoroutinefunction(wrapped) == inspect.iscoroutinefunction(original)


def test_served_auth_turns_every_result_shape_into_a_json_user():
    from langgraph_sdk import Auth

    for result in ({"identity": "alice", "permissions": ["user"]}, "alice", (["user"], {"identity": "alice"})):
        auth = Auth()

        @auth.authenticate
        async def authenticate(headers: dict) -> object:
            return result

        out = asyncio.run(compat.served_auth(auth)._authenticate_handler(headers={}))
        user = out[1] if isinstance(out, tuple) else out
        assert isinstance(user, compat.JsonUser) and user.identity == "alice"
        json.dumps(user)
    sync = Auth()

    @sync.authenticate
    def authenticate_sync(headers: dict) -> dict:
        return {"identity": "carol"}

    assert compat.served_auth(sync)._authenticate_handler(headers={}).identity == "carol"


def test_served_auth_refuses_an_auth_without_authenticate():
    from langgraph_sdk import Auth

    with pytest.raises(compat.RuntimeCompatError, match="no authenticate handler"):
        compat.served_auth(Auth())


def test_importing_the_module_starts_nothing():
    import importlib
    import sys

    sys.modules.pop("langgraph_api.server", None)
    importlib.reload(compat)
    assert "langgraph_api.server" not in sys.modules
