"""The access policy in isolation: who a run's principal is, and which sources a principal may ingest."""

from __future__ import annotations

import os

import pytest

from xmrt.kb.sources import walk_files
from xmrt.policy import LOCAL, PolicyError, Principal, check_ingest_source, local_path_of, principal_from_config

BOB = Principal("bob", remote=True, tenant="bob")


def served(user, permissions=("user",)):
    return {"configurable": {"langgraph_auth_user_id": user, "langgraph_auth_permissions": list(permissions)}}


def test_the_principal_comes_from_what_the_server_writes_into_the_run(monkeypatch):
    assert principal_from_config(None) is LOCAL and principal_from_config({"configurable": {}}) is LOCAL
    assert principal_from_config(served("bob")) == BOB
    assert principal_from_config(served("local", ["local"])) == Principal("local", remote=True, tenant=None)
    for bad in ("", None, "anonymous", "system"):
        with pytest.raises(PolicyError):
            principal_from_config(served(bad))
    monkeypatch.setenv("LANGSERVE_GRAPHS", '{"eliza": "x"}')  # inside the server: no user means refused
    with pytest.raises(PolicyError, match="no authenticated user"):
        principal_from_config({"configurable": {"thread_id": "t"}})


def test_tenants_are_scoped_by_construction(config):
    assert BOB.namespace("memories", "eliza") == ("bob", "memories", "eliza")
    assert LOCAL.namespace("memories", "eliza") == ("local", "memories", "eliza")
    assert BOB.redis_root(config) == f"{config.key_prefix}:tenant:bob" and LOCAL.redis_root(config) == config.key_prefix


@pytest.mark.parametrize("source, local", [
    ("/data/docs", "/data/docs"), ("docs", "docs"), ("file:///data/x", "/data/x"), ("file://localhost/d", "/d"),
    ("https://github.com/a/b.git", None), ("git@github.com:a/b.git", None), ("ssh://git@h/x.git", None),
    ("git://h/x.git", None),
])
def test_sources_are_local_paths_or_remote_urls(source, local):
    assert local_path_of(source) == local


@pytest.mark.parametrize("source", ["ext::sh -c id", "fd::3", "--upload-pack=id", "-oProxyCommand=id",
                                    "ftp://h/x", "file://otherhost/etc"])
def test_dangerous_sources_are_refused_for_everyone(config, source):
    with pytest.raises(PolicyError):
        check_ingest_source(config, source, LOCAL)


def test_remote_principals_read_only_under_the_roots(config, tmp_path):
    root = config.ingest_roots[0]
    (root / "docs").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    for ok in (str(root / "docs"), "docs", f"file://{root}/docs", "https://example.org/r.git"):
        check_ingest_source(config, ok, BOB)
    for bad in (str(outside), f"file://{outside}", "../outside", str(root / "docs" / ".." / ".." / "x"),
                str(root / "escape")):
        with pytest.raises(PolicyError, match="outside the allowed roots"):
            check_ingest_source(config, bad, BOB)
        check_ingest_source(config, bad, LOCAL)  # the CLI and Python stay unrestricted


def test_a_file_linked_out_of_its_source_is_never_read(tmp_path):
    source = tmp_path / "repo"
    source.mkdir()
    (source / "readme.md").write_text("hello")
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    os.symlink(secret, source / "leak.md")
    os.symlink(source / "readme.md", source / "inside.md")
    entries = {e.rel: e for e in walk_files(source)}
    assert entries["leak.md"].skip and not entries["readme.md"].skip and not entries["inside.md"].skip
