"""langgraph's public conformance suite (langgraph-checkpoint-conformance) on every saver xmrt.redis.persistence
hands out, on a single Redis and on a local 3-master Redis Cluster, plus graphs run on the cluster."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import uuid

import pytest
import redis
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.types import Command

from tests.checkpoint_graphs import assert_consistent, interrupt_graph, linear_graph
from tests.conftest import ROOT, free_port, make_config
from tests.redis_cluster import LocalCluster
from xmrt.redis import persistence

#: Every capability the suite knows: put, put_writes, get_tuple, list, delete_thread (base) and
#: delete_for_runs, copy_thread, prune (extended). Custom metadata filters are part of ``list``.
CAPABILITIES = {c.value for c in ALL_CAPABILITIES}


def _run_suite(name: str, factory) -> dict:
    registered = checkpointer_test(name=name)(factory)
    report = asyncio.run(validate(registered))
    return report.results


def _assert_all_pass(results: dict) -> None:
    assert set(results) == CAPABILITIES
    problems = {cap: (r.detected, r.passed, r.failures) for cap, r in results.items() if not (r.detected and r.passed)}
    assert not problems, problems
    assert sum(r.tests_passed for r in results.values()) >= 80  # 81 tests in 0.0.2; none skipped
    assert all(r.tests_failed == 0 and r.tests_skipped == 0 for r in results.values())


def _sync_factory(config):
    async def factory():
        saver = persistence.make_checkpointer(config)
        try:
            yield saver
        finally:
            await saver.aclose()
            saver.close()

    return factory


def _async_factory(config):
    async def factory():
        async with persistence.async_checkpointer(config) as saver:
            yield saver

    return factory


def _langgraph_json_factory():
    """The factory langgraph.json names under checkpointer.path, imported as langgraph dev does."""
    spec = json.loads((ROOT / "langgraph.json").read_text())["checkpointer"]["path"]
    module_path, _, attr = spec.partition(":")
    module = importlib.import_module(module_path.removeprefix("./").removesuffix(".py").replace("/", "."))
    served = getattr(module, attr)
    assert served is persistence.checkpointer

    async def factory():
        async with served() as saver:
            yield saver

    return factory


# ---------------------------------------------------------------------------------------------
# a single Redis


def test_conformance_of_the_sync_saver_on_a_single_redis(config):
    _assert_all_pass(_run_suite("make_checkpointer", _sync_factory(config)))


def test_conformance_of_the_async_saver_on_a_single_redis(config):
    _assert_all_pass(_run_suite("async_checkpointer", _async_factory(config)))


def test_conformance_of_the_saver_langgraph_json_names(app_config):
    _assert_all_pass(_run_suite("langgraph.json checkpointer", _langgraph_json_factory()))


def test_custom_metadata_filter_behaves_like_the_reference_and_empty_prune_does_nothing(config):
    from langgraph.checkpoint.memory import InMemorySaver

    saver = persistence.make_checkpointer(config)
    answers = []
    for s in (saver, InMemorySaver()):
        graph = linear_graph(s)
        graph.invoke({"log": []}, {"configurable": {"thread_id": "meta", "score": 42}})
        graph.invoke({"log": []}, {"configurable": {"thread_id": "meta", "score": 7}})
        hits = list(s.list({"configurable": {"thread_id": "meta"}}, filter={"score": 42}))
        answers.append(sorted((t.metadata["step"], t.metadata["score"]) for t in hits))
    assert answers[0] == answers[1] and len(answers[0]) == 5
    saver.prune([])  # nothing to do, no error (InMemorySaver has no prune to compare with)
    saver.delete_for_runs([])
    assert len(list(saver.list({"configurable": {"thread_id": "meta"}}))) == 10


# ---------------------------------------------------------------------------------------------
# a local Redis Cluster: 3 masters from the project's own binary and modules


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), [free_port() for _ in range(3)],
                           [free_port() for _ in range(3)])
    try:
        cluster.start()
    except Exception as exc:  # fail loudly: the cluster runs are part of the contract
        cluster.stop()
        pytest.fail(f"cannot start the local Redis Cluster: {exc}", pytrace=False)
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_config(redis_cluster, tmp_path):
    return make_config(tmp_path / "data", redis_cluster.ports[0], REDIS_URL=redis_cluster.url,
                       XMRT_KEY_PREFIX=f"c{os.getpid()}-{uuid.uuid4().hex[:8]}")


def test_the_factories_detect_the_cluster(cluster_config):
    saver = persistence.make_checkpointer(cluster_config)
    assert saver.cluster and isinstance(saver._sync_client(), redis.cluster.RedisCluster)
    saver.close()


def test_conformance_of_the_sync_saver_on_a_redis_cluster(cluster_config):
    _assert_all_pass(_run_suite("make_checkpointer on a cluster", _sync_factory(cluster_config)))


def test_conformance_of_the_async_saver_on_a_redis_cluster(cluster_config):
    _assert_all_pass(_run_suite("async_checkpointer on a cluster", _async_factory(cluster_config)))


def test_graphs_on_the_cluster_spread_threads_over_the_masters_and_keep_each_on_one(redis_cluster, cluster_config):
    saver = persistence.make_checkpointer(cluster_config)
    threads = [f"thread-{i}" for i in range(24)]
    for thread in threads:
        graph = interrupt_graph(saver)
        graph.invoke({"log": []}, {"configurable": {"thread_id": thread, "run_id": f"run-{thread}"}})
    # a fresh saver (another process) resumes one thread; a listing of every thread sees all masters
    other = persistence.make_checkpointer(cluster_config)
    final = interrupt_graph(other).invoke(Command(resume="ok"), {"configurable": {"thread_id": threads[0]}})
    assert final["log"] == ["before", "answer:ok", "after"]
    listed = {t.config["configurable"]["thread_id"] for t in other.list(None)}
    assert listed == set(threads)

    prefix = cluster_config.key_prefix
    where: dict[str, set[int]] = {}
    for port in redis_cluster.ports:
        node = redis_cluster.client(port)
        for key in node.scan_iter(match=f"{prefix}:*", count=1000):
            key = key.decode()
            tag = key[key.index("{") + 1:key.index("}")]
            where.setdefault(tag, set()).add(port)
        if any(True for _ in node.scan_iter(match=f"{prefix}:checkpoint:{{*}}", count=1000)):
            assert_consistent(node, prefix, ttl=False)  # each master's threads, read back whole
    assert all(len(ports) == 1 for ports in where.values()), where  # a thread's keys share one node
    used = {port for tag, ports in where.items() if tag.startswith("thread-") for port in ports}
    assert len(used) == 3  # 24 threads land on all three masters

    async def async_round():
        async with persistence.async_checkpointer(cluster_config) as asaver:
            graph = interrupt_graph(asaver)
            out = await graph.ainvoke(Command(resume="async"), {"configurable": {"thread_id": threads[1]}})
            await asaver.adelete_for_runs([f"run-{threads[2]}"])
            await asaver.acopy_thread(threads[3], "copy-of-3")
            return out, await asaver.aget_tuple({"configurable": {"thread_id": threads[2]}}), \
                [t async for t in asaver.alist({"configurable": {"thread_id": "copy-of-3"}})]

    out, deleted, copied = asyncio.run(async_round())
    assert out["log"] == ["before", "answer:async", "after"]
    assert deleted is None and len(copied) == 3
    saver.delete_thread(threads[4])
    assert saver.get_tuple({"configurable": {"thread_id": threads[4]}}) is None
    saver.close()
    other.close()
