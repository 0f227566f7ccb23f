"""The Redis store answers like LangGraph's InMemoryStore: one scenario, run against both, same answers."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from langgraph.store.memory import InMemoryStore

from xmrt.redis.store import RedisStore, decode_label, encode_label, item_id, ns_from_key, ns_key


@pytest.fixture(scope="module")
def embeddings():
    from xmrt.config import create_config
    from xmrt.llm.embeddings import get_embeddings

    return get_embeddings(create_config({}, env_file=None))


def _index(embeddings):
    return {"dims": 384, "embed": embeddings, "fields": ["text"]}


@pytest.fixture
def stores(redis_server, embeddings, request):
    """(InMemoryStore, ours) with the same embeddings; ours on the session's Redis under a fresh prefix."""
    import redis
    import redis.asyncio

    url = f"redis://127.0.0.1:{redis_server.port}/0"
    prefix = f"st{abs(hash(request.node.name)) % 10**8}"
    ours = RedisStore(redis.Redis.from_url(url), redis.asyncio.Redis.from_url(url), prefix=prefix,
                      index=_index(embeddings))
    ours.setup()
    yield InMemoryStore(index=_index(embeddings)), ours
    ours.client.close()


def _triples(items):
    return [(tuple(i.namespace), i.key, i.value) for i in items]


LABELS = [("lab", "Ünï"), ("lab", "|"), ("lab", "a"), ("lab", "is"), ("lab", "@x-y*(z){w}"), ("lab", "日本語"),
          ("bob",), ("bobby",), ("bob", "notes"), ("bobby", "notes"), ("lab", "a b", "c:d")]


def _fill(store):
    for n, ns in enumerate(LABELS):
        store.put(ns, f"k{n}", {"text": f"note {n} about treasury spending", "score": n, "tag": "even" if n % 2 == 0
                                else "odd", "nested": {"level": n % 3}, "list": [n, "x"]})
    store.put(("docs",), "apple", {"text": "Apples are red fruit that grow on trees", "score": 1})
    store.put(("docs",), "rocket", {"text": "The rocket launched into orbit around the moon", "score": 2})
    store.put(("docs",), "plain", {"text": "Apples and fruit salad", "score": 3}, index=False)
    store.put(("docs",), "notext", {"title": "no text field at all", "score": 4})


@pytest.mark.parametrize("ns", LABELS)
def test_every_label_round_trips(ns):
    assert ns_from_key(ns_key(ns)) == ns
    assert all(decode_label(encode_label(label)) == label for label in ns)


def test_get_put_delete_and_labels_of_any_content(stores):
    memory, ours = stores
    for store in stores:
        _fill(store)
    for n, ns in enumerate(LABELS):
        a, b = memory.get(ns, f"k{n}"), ours.get(ns, f"k{n}")
        assert b is not None and (b.namespace, b.key, b.value) == (a.namespace, a.key, a.value), ns
    assert ours.get(("lab", "Ünï"), "missing") is None
    for store in stores:
        store.delete(("docs",), "rocket")
    assert memory.get(("docs",), "rocket") is None and ours.get(("docs",), "rocket") is None


def test_prefix_search_is_exact_and_listing_order_matches(stores):
    memory, ours = stores
    for store in stores:
        _fill(store)
    for prefix in [("bob",), ("bobby",), ("lab",), ("lab", "Ünï"), ("lab", "|"), ("lab", "a"), (), ("docs",)]:
        a = _triples(memory.search(prefix, limit=100))
        b = _triples(ours.search(prefix, limit=100))
        assert b == a, prefix
    assert {i.namespace[0] for i in ours.search(("bob",), limit=100)} == {"bob"}
    for offset, limit in ((0, 3), (2, 4), (10, 5), (0, 0)):
        assert _triples(ours.search((), limit=limit, offset=offset)) == _triples(
            memory.search((), limit=limit, offset=offset))


@pytest.mark.parametrize("filters", [
    {"tag": "even"}, {"score": {"$gt": 3}}, {"score": {"$gte": 3, "$lt": 7}}, {"score": {"$ne": 2}},
    {"score": {"$lte": 1}}, {"score": {"$eq": 5}}, {"nested": {"level": 1}}, {"list": [4, "x"]},
    {"tag": "odd", "score": {"$gt": 4}},
])
def test_filters_match_in_memory(stores, filters):
    memory, ours = stores
    for store in stores:
        _fill(store)
    assert _triples(ours.search(("lab",), filter=filters, limit=50)) == _triples(
        memory.search(("lab",), filter=filters, limit=50))
    assert _triples(ours.search((), filter=filters, limit=2, offset=1)) == _triples(
        memory.search((), filter=filters, limit=2, offset=1))


def test_query_search_ranks_like_in_memory_and_keeps_unindexed_items(stores):
    memory, ours = stores
    for store in stores:
        _fill(store)
    for query in ("red fruit", "space travel to the moon"):
        a = memory.search(("docs",), query=query, limit=10)
        b = ours.search(("docs",), query=query, limit=10)
        assert [(i.key, i.score is None) for i in b] == [(i.key, i.score is None) for i in a], query
        for x, y in zip(a, b, strict=True):
            if x.score is not None:
                assert abs(x.score - y.score) < 1e-4
    assert {i.key for i in ours.search(("docs",), query="fruit", limit=10)} >= {"plain", "notext"}
    top = ours.search((), query="red fruit", limit=1, filter={"score": {"$gte": 1}})
    assert [i.key for i in top] == [i.key for i in memory.search((), query="red fruit", limit=1,
                                                                   filter={"score": {"$gte": 1}})]


@pytest.mark.parametrize("kwargs", [
    {}, {"prefix": ("lab",)}, {"suffix": ("notes",)}, {"prefix": ("*", "notes")}, {"max_depth": 1},
    {"prefix": ("lab",), "max_depth": 2, "limit": 3, "offset": 1}, {"suffix": ("c:d",)},
])
def test_list_namespaces_matches_in_memory(stores, kwargs):
    memory, ours = stores
    for store in stores:
        _fill(store)
    assert ours.list_namespaces(**kwargs) == memory.list_namespaces(**kwargs)


def test_async_methods_give_the_same_answers(stores):
    memory, ours = stores

    async def scenario(store):
        await store.aput(("async", "ns"), "a", {"text": "hello there", "n": 1})
        await store.aput(("async", "ns"), "b", {"text": "goodbye", "n": 2})
        got = await store.aget(("async", "ns"), "a")
        found = await store.asearch(("async",), filter={"n": {"$gt": 1}})
        spaces = await store.alist_namespaces(prefix=("async",))
        await store.adelete(("async", "ns"), "a")
        return got.value, _triples(found), spaces, await store.aget(("async", "ns"), "a")

    assert asyncio.run(scenario(ours)) == asyncio.run(scenario(memory))


def test_ttl_expires_items_and_reads_racing_the_expiry_never_fail(stores):
    _, ours = stores
    ours.put(("ttl",), "short", {"text": "gone soon"}, ttl=1 / 60)  # one second
    ours.put(("ttl",), "kept", {"text": "stays"})
    assert ours.get(("ttl",), "short") is not None
    errors: list[BaseException] = []
    stop = time.time() + 3

    def hammer():
        while time.time() < stop:
            try:
                ours.get(("ttl",), "short", refresh_ttl=False)
                ours.search(("ttl",), limit=10, refresh_ttl=False)
                ours.search(("ttl",), query="gone", limit=10, refresh_ttl=False)
            except BaseException as exc:  # noqa: BLE001 - any failure is what this test looks for
                errors.append(exc)
                return

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:1]
    assert ours.get(("ttl",), "short") is None
    assert [i.key for i in ours.search(("ttl",))] == ["kept"]


def test_ttl_refresh_on_read_keeps_an_item_alive(stores):
    _, ours = stores
    ours.ttl_config = {"refresh_on_read": True}
    ours.put(("ttl2",), "item", {"text": "refreshed"}, ttl=2 / 60)
    for _ in range(4):
        time.sleep(0.8)
        assert ours.get(("ttl2",), "item") is not None  # each read pushes the expiry back
    ttl = ours.client.ttl(ours._item_key(item_id(("ttl2",), "item")))
    assert 0 < ttl <= 2


def test_every_key_lives_under_the_prefix(stores, redis_client):
    _, ours = stores
    _fill(ours)
    keys = [k.decode() for k in redis_client.scan_iter(match="*", count=1000)]
    mine = [k for k in keys if k.startswith(f"{ours.prefix}:")]
    assert mine and all(k.startswith(f"{ours.prefix}:store:") for k in mine)
    indexes = {i.decode() for i in redis_client.execute_command("FT._LIST")}
    assert {f"{ours.prefix}:store:items", f"{ours.prefix}:store:vectors"} <= indexes


def test_setup_is_idempotent_and_refuses_a_vector_index_of_another_size(stores, embeddings):
    _, ours = stores
    ours.setup()
    asyncio.run(ours.asetup())
    other = RedisStore(ours.client, prefix=ours.prefix, index={"dims": 8, "embed": embeddings, "fields": ["text"]})
    with pytest.raises(ValueError, match="holds 384-dimensional vectors, but the configured embeddings give 8"):
        other.setup()


def test_memories_of_the_previous_release_are_migrated_with_one_command(config, redis_client):
    """A fixture written by release 6fa1e70's code (library store format, encoded agent labels)."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT, subprocess_env
    from xmrt.eliza.memory import AgentMemory
    from xmrt.redis.persistence import make_store

    fixture = json.loads((ROOT / "tests" / "fixtures" / "store_v1.json").read_text())
    for entry in fixture["docs"]:
        key = f"{config.key_prefix}_store:{entry['key']}"
        redis_client.execute_command("JSON.SET", key, "$", json.dumps(entry["doc"]))
        if entry["ttl_seconds"] > 0:
            redis_client.expire(key, entry["ttl_seconds"])
    cmd = [sys.executable, "-m", "xmrt.cli", "migrate", "store", "--json"]
    dry = subprocess.run([*cmd, "--dry-run"], cwd=ROOT, env=subprocess_env(config), capture_output=True, text=True,
                         timeout=300)
    assert json.loads(dry.stdout)["migrated"] == 5 and make_store(config).search((), limit=10) == []
    done = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(config), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["migrated"] == 5
    store = make_store(config)
    memory = AgentMemory(config, store=store)
    assert {m.key for m in memory.list("eliza")} == {"m1", "m2"}
    assert memory.search("eliza", "how much XMR is in the treasury?")[0].text == "Our treasury holds 1,200 XMR."
    assert memory.recall("a.b", "m3").text.startswith("An agent id with a dot")
    assert memory.recall("eliza", "m1").created_at.startswith("2026-")
    assert store.get(("alice", "notes"), "plan").value == {"text": "buy XMR"}
    assert store.get(("local", "agentstate", "eliza"), "state").value["state"]["metrics"]["decision_accuracy"] == 0.75
    ttl = redis_client.ttl(store._item_key(item_id(("alice", "notes"), "plan")))
    assert 0 < ttl <= 3600
    gone = subprocess.run([*cmd, "--delete-old"], cwd=ROOT, env=subprocess_env(config), capture_output=True,
                          text=True, timeout=300)  # a second run (idempotent), then the old keys go
    assert json.loads(gone.stdout)["migrated"] == 5 and json.loads(gone.stdout)["deleted"] == 5
    assert not list(redis_client.scan_iter(match=f"{config.key_prefix}_store*"))
    assert {m.key for m in AgentMemory(config, store=store).list("eliza")} == {"m1", "m2"}
