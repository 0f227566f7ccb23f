"""``xmrt run``: the system cycle, and ``xmrt status``: the state of the whole system.

run     Runs N cycles of one agent: assess → decide → execute (the Eliza graph, under the agent's Redis lock),
        and the self-improvement graph every K cycles. Proposals come from --input (a JSONL file read in
        batches, or a directory whose new *.jsonl files are picked up) and from the Redis list
        <prefix>:eliza:<agent>:inbox (LPUSH JSON proposals). A cycle with nothing to decide is fine.
        Each cycle prints its duration, the decisions by kind and the decision accuracy (from recorded
        outcomes). Ctrl-C (or SIGTERM) stops after the current cycle; a second Ctrl-C abandons it. The lock is
        released either way. Exit code 0 when done (or stopped by SIGTERM), 130 after Ctrl-C, 1 when the
        agent is busy (another process holds its lock past --lock-wait).
status  Redis, the component registry, the knowledge base, the agent's metrics and lock, and the node / LLM /
        retrieval latencies recorded by the monitor.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from xmrt.cli import CommandTree
from xmrt.errors import UserError


def _sources(args: argparse.Namespace, client, config) -> list[Any]:
    from xmrt.eliza.runner import DirectorySource, JsonlSource, RedisInbox

    sources: list[Any] = []
    if args.input:
        path = Path(args.input)
        if path.is_dir():
            sources.append(DirectorySource(path))
        elif path.is_file():
            sources.append(JsonlSource(path))
        else:
            raise UserError(f"--input {args.input} is neither a file nor a directory")
    if not args.no_inbox:
        sources.append(RedisInbox(client, config, args.agent))
    return sources


def _run(args: argparse.Namespace) -> int:
    from graphs.eliza import builder as eliza_builder
    from graphs.self_improve import builder as improve_builder
    from xmrt.config import get_config
    from xmrt.eliza import validate_agent_id
    from xmrt.eliza.runner import SystemRunner
    from xmrt.redis.clients import redis_client
    from xmrt.redis.monitoring import monitor_for
    from xmrt.redis.persistence import redis_graph
    from xmrt.redis.registry import Registry
    from xmrt.redis.server import ensure_redis

    validate_agent_id(args.agent)
    if args.cycles < 1:
        raise UserError("--cycles must be at least 1")
    config = get_config()
    ensure_redis(config).close()  # started if embedded, and checked: one clear line when Redis is unusable
    client = redis_client(config, check=False)  # the loop's: the process's shared client, which rides out blips
    sources = _sources(args, client, config)
    eliza = redis_graph(eliza_builder)
    improve = redis_graph(improve_builder)
    callbacks = [] if args.no_monitor else [monitor_for(config)]
    registry = Registry(config, client)
    context = {"agent_id": args.agent, "use_llm": not args.no_llm, "collection": args.collection}

    def timed(component: str, fn):
        import time

        started = time.perf_counter()
        try:
            out = fn()
        except Exception as exc:
            registry.record(component, False, (time.perf_counter() - started) * 1000, f"{type(exc).__name__}: {exc}")
            raise
        registry.record(component, True, (time.perf_counter() - started) * 1000)
        return out

    def decide(proposals: list[dict[str, Any]], cycle: int) -> dict[str, Any]:
        return timed("eliza", lambda: eliza.invoke(
            {"proposals": proposals},
            {"configurable": {"thread_id": f"eliza:{args.agent}"}, "callbacks": callbacks, "run_name": "eliza",
             "metadata": {"xmrt_cycle": cycle}},
            context=context))

    def self_improve(cycle: int) -> dict[str, Any]:
        return timed("self_improve", lambda: improve.invoke(
            {"outcomes": []},
            {"configurable": {"thread_id": f"self_improve:{args.agent}"}, "callbacks": callbacks,
             "run_name": "self_improve", "metadata": {"xmrt_cycle": cycle}},
            context={"agent_id": args.agent, "learn": not args.no_learn}))

    def on_cycle(report) -> None:
        if args.json:
            print(json.dumps({k: v for k, v in report.__dict__.items() if k != "improved"}
                             | {"improved": report.improved is not None}), flush=True)
        else:
            print(report.line(), flush=True)

    runner = SystemRunner(
        config, args.agent, decide, self_improve, sources=sources, batch=args.batch,
        improve_every=args.improve_every, lock_ttl=args.lock_ttl, lock_wait=args.lock_wait,
        on_cycle=on_cycle, client=client,
    )

    print(f"xmrt run: agent {args.agent}, {args.cycles} cycle(s), batch {args.batch}, sources: "
          + (", ".join(s.name for s in sources) or "none"), flush=True)
    with runner.stop_on_signals(lambda message: print(f"xmrt: {message}", file=sys.stderr, flush=True)):
        summary = runner.run(args.cycles, args.interval)
    decided = sum(c.decided for c in summary.cycles)
    print(f"xmrt run: {summary.stopped} after {len(summary.cycles)} cycle(s), {decided} decision(s)", flush=True)
    return 130 if summary.stopped == "interrupted" else 0


def system_status(config, agent: str) -> dict[str, Any]:
    """Everything ``xmrt status`` shows, as one dict (each part says why when it is unavailable)."""
    from xmrt.eliza import DecisionLedger
    from xmrt.eliza.runner import inbox_key
    from xmrt.redis.coordination import AgentLock
    from xmrt.redis.monitoring import read_node_latencies
    from xmrt.redis.registry import read_registry
    from xmrt.redis.server import connect, server_status

    client = connect(config)
    status: dict[str, Any] = {"redis": server_status(client), "registry": read_registry(config, client)}
    try:
        from xmrt.kb.stats import kb_stats
    except ImportError:
        status["knowledge_base"] = {"available": False, "error": "xmrt.kb.stats is not installed"}
    else:
        status["knowledge_base"] = kb_stats(config)
    ledger = DecisionLedger(config, agent, client=client)
    lock = AgentLock(config, agent, client=client).info()
    status["agent"] = {
        "id": agent,
        "metrics": ledger.metrics(),
        "model_version": ledger.load_model().version,
        "inbox": client.llen(inbox_key(config, agent)),
        "lock": None if lock is None else {"holder": lock.holder, "expires_in_s": lock.expires_in},
        "recent_cycles": ledger.metrics_history(5),
    }
    status["latencies"] = read_node_latencies(config, client)
    return status


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _status(args: argparse.Namespace) -> int:
    from xmrt.config import get_config

    status = system_status(get_config(), args.agent)
    if args.json:
        print(json.dumps(status, default=str, ensure_ascii=False))
        return 0
    r = status["redis"]
    print(f"redis {r['version']} ({', '.join(r['modules'])}): {r['keys']} keys, {r['used_memory_human']}, "
          f"{r['connected_clients']} clients, up {r['uptime_in_seconds']} s")
    print("components:")
    for name, rec in status["registry"].items() or [("(none yet)", {})]:
        if not rec:
            print(f"  {name}")
            continue
        avg = rec.get("avg_ms")
        line = f"  {name:13} {rec.get('status', '?'):11} runs {rec.get('runs', 0)}, avg " + (
            "n/a" if avg is None else f"{avg:.1f} ms")
        if rec.get("last_error"):
            line += f", last error: {rec['last_error']}"
        print(line)
    kb = status["knowledge_base"]
    if kb.get("available", True) and "error" not in kb:
        print(f"knowledge base: {kb.get('collections')} collection(s), {kb.get('chunks')} chunks, "
              f"{kb.get('documents')} documents ({kb.get('embedding_model')})")
    else:
        print(f"knowledge base: unavailable ({kb.get('error')})")
    a = status["agent"]
    m = a["metrics"]
    print(f"agent {a['id']}: {m['decisions']} decisions, {m['with_outcome']} with outcome, accuracy "
          f"{_fmt(m['decision_accuracy'])} (recent {_fmt(m['recent_accuracy'])}), model v{a['model_version']}, "
          f"inbox {a['inbox']}, lock " + ("free" if a["lock"] is None else
                                          f"held by {a['lock']['holder'].get('owner')}"))
    lat = status["latencies"]
    for label in ("llm", "retrieval"):
        s = lat.get(label)
        print(f"{label}: " + ("no samples" if not s else
                              f"{s['count']} calls, p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms"))
    if lat["nodes"]:
        print("node latencies (p50 / p95 ms, count):")
        for name, s in lat["nodes"].items():
            print(f"  {name:32} {s['p50_ms']:9.1f} {s['p95_ms']:9.1f} {s['count']:7}")
    return 0


def register(cli: CommandTree) -> None:
    """Add ``run`` and ``status``."""
    p = cli.command("run", help="run the agent's system cycle N times (decide, execute, self-improve)",
                    handler=_run, description=__doc__)
    p.add_argument("--cycles", type=int, required=True, help="number of cycles to run, then exit")
    p.add_argument("--interval", type=float, default=0.0, help="seconds between cycles (default 0)")
    p.add_argument("--agent", default="eliza", help="agent id (default eliza)")
    p.add_argument("--improve-every", type=int, default=0, metavar="K",
                   help="run self-improvement after every K-th cycle (default 0: never)")
    p.add_argument("--input", help="proposals: a JSONL file (read in batches) or a directory of *.jsonl files")
    p.add_argument("--no-inbox", action="store_true", help="do not read the agent's Redis inbox")
    p.add_argument("--batch", type=int, default=20, help="most proposals per cycle (default 20)")
    p.add_argument("--collection", default="default", help="knowledge-base collection to consult")
    p.add_argument("--no-llm", action="store_true", help="decide on the learned criteria weights alone")
    p.add_argument("--no-learn", action="store_true", help="self-improvement records but does not update weights")
    p.add_argument("--no-monitor", action="store_true", help="do not record node and LLM latencies")
    p.add_argument("--lock-wait", type=float, default=30.0, help="seconds to wait for the agent's lock (default 30)")
    p.add_argument("--lock-ttl", type=float, default=60.0, help="lock expiry in seconds, renewed while a cycle runs")
    p.add_argument("--json", action="store_true", help="one JSON line per cycle")
    s = cli.command("status", help="system status: Redis, components, knowledge base, agent, latencies",
                    handler=_status, description=__doc__)
    s.add_argument("--agent", default="eliza", help="agent whose metrics to show (default eliza)")
    s.add_argument("--json", action="store_true", help="one JSON object")
