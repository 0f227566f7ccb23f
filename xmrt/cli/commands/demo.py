"""``xmrt demo``: the main job on embedded defaults, one step of each capability.

1. ingest a small sample corpus (shipped in the package) into the knowledge base;
2. ask the RAG graph a question: the answer streams and cites its sources;
3. the memory agent answers and remembers; a second run on a new thread recalls it;
4. Eliza decides three proposals, gets their outcomes as feedback and self-improves;
5. the system status.

Everything persists in Redis and Chroma, so a second `xmrt demo` finds the knowledge base unchanged
(nothing re-embedded), recalls the earlier runs, and continues learning from the stored weights.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

from xmrt.cli import CommandTree

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample"
COLLECTION = "xmrt-demo"
FIRST = "Our DAO treasury holds 1,200 XMR and the community wants to fund node operators. What should we do first?"
SECOND = "How much XMR does our treasury hold, and what does the community want to fund?"
QUESTION = "Who must approve treasury spending above 100 XMR?"
PROPOSALS = [
    {"id": "demo-1", "title": "Fund node operators for the mining pool", "category": "mining", "amount_xmr": 40,
     "description": "Pay the operators who keep the pool online.",
     "criteria": {"community_support": 0.8, "technical_risk": 0.2, "treasury_impact": 0.3, "alignment": 0.9,
                  "team_track_record": 0.9}},
    {"id": "demo-2", "title": "Buy a billboard in Times Square", "category": "marketing", "amount_xmr": 400,
     "description": "A one-week advert.",
     "criteria": {"community_support": 0.7, "technical_risk": 0.1, "treasury_impact": 0.9, "alignment": 0.3,
                  "team_track_record": 0.1}},
    {"id": "demo-3", "title": "Audit the MobileMonero app", "category": "security", "amount_xmr": 60,
     "description": "An external security audit.",
     "criteria": {"community_support": 0.5, "technical_risk": 0.4, "treasury_impact": 0.4, "alignment": 0.8,
                  "team_track_record": 0.7}},
]
OUTCOMES = [{"id": "demo-1", "success": True}, {"id": "demo-2", "success": False}, {"id": "demo-3", "success": True}]


def _heading(text: str) -> None:
    print(f"\n== {text} ==", flush=True)


def _stream_answer(graph, inputs: dict, config: dict, context: dict, nodes: tuple[str, ...]) -> dict:
    """Stream the answer's tokens from ``nodes``; return the thread's final state values."""
    streamed = False
    started = time.perf_counter()
    for chunk in graph.stream(inputs, config, context=context, stream_mode="custom"):  # the grounded answer
        if isinstance(chunk, dict) and chunk.get("token"):
            print(chunk["token"], end="", flush=True)
            streamed = True
    values = graph.get_state(config).values
    if not streamed:
        final = values.get("final_response") or (values["messages"][-1].content if values.get("messages") else "")
        print(final, end="")
    print(f"\n   ({time.perf_counter() - started:.1f}s)", flush=True)
    return values


def _ingest(config) -> None:
    from xmrt.kb.ingest import ingest_path

    _heading(f"1. ingest {SAMPLE_DIR} into collection {COLLECTION!r}")
    summary = ingest_path(config, str(SAMPLE_DIR), collection=COLLECTION, progress=False)
    counts = {k: summary.get(k) for k in ("added", "updated", "unchanged", "removed", "chunks_embedded")}
    print("   " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def _ask(run: str) -> None:
    from graphs.rag import builder
    from xmrt.redis.persistence import redis_graph

    _heading(f"2. ask (RAG): {QUESTION}")
    graph = redis_graph(builder)
    print("   ", end="")
    values = _stream_answer(graph, {"messages": [("user", QUESTION)]},
                            {"configurable": {"thread_id": f"demo-rag-{run}"}}, {"collection": COLLECTION, "k": 3},
                            ("generate",))
    passages = {p["n"]: p for p in values.get("passages") or []}
    for source in values.get("sources") or []:
        mark = "cited" if source.get("cited") else "retrieved"
        similarity = float(source.get("similarity") or 0)
        print(f"   [{source['n']}] {source.get('path')} ({mark}, similarity {similarity:.2f})")
        if source.get("cited") and source["n"] in passages:
            print(f"       “{' '.join(passages[source['n']]['text'].split())[:220]}”")
    grounding = values.get("grounding") or {}
    if grounding.get("mode") == "extractive" and grounding.get("support"):
        print("   (the model's own answer was not supported by the passages, so the answer quotes them)")
    elif grounding.get("mode") == "extractive":
        print("   (quoted from the passages: the bundled offline model does not word answers)")


def _memory(run: str, agent: str) -> None:
    from graphs.memory_agent import builder
    from xmrt.redis.persistence import redis_graph

    _heading("3. memory: answer and remember, then recall on a new thread")
    graph = redis_graph(builder)
    for i, question in enumerate((FIRST, SECOND), start=1):
        print(f"   you: {question}\n   eliza: ", end="", flush=True)
        values = _stream_answer(graph, {"messages": [("user", question)]},
                                {"configurable": {"thread_id": f"demo-{run}-{i}"}}, {"agent_id": agent}, ("respond",))
    recalled = values.get("recalled") or []
    print(f"   recalled {len(recalled)} memor{'y' if len(recalled) == 1 else 'ies'} from earlier runs:")
    for m in recalled:
        print(f"   - ({m.get('score', 0):.2f}) {m['text'].splitlines()[0][:110]}")


def _eliza(agent: str, use_llm: bool) -> None:
    from graphs.eliza import builder as eliza_builder
    from graphs.self_improve import builder as improve_builder
    from xmrt.redis.persistence import redis_graph

    _heading(f"4. Eliza: decide {len(PROPOSALS)} proposals, feed back outcomes, self-improve")
    run_ids = {p["id"]: f"{p['id']}-{uuid.uuid4().hex[:4]}" for p in PROPOSALS}
    proposals = [{**p, "id": run_ids[p["id"]]} for p in PROPOSALS]
    out = redis_graph(eliza_builder).invoke(
        {"proposals": proposals}, {"configurable": {"thread_id": f"eliza:{agent}"}},
        context={"agent_id": agent, "collection": COLLECTION, "use_llm": use_llm},
    )
    for d in out["decisions"]:
        print(f"   {d['title'][:42]:42} {d['decision'].upper():7} p={d['score']:.2f}  sources: "
              + (", ".join(s["path"] for s in d["sources"]) or "none"))
        print(f"      why: {d['rationale'][:300]}")
    result = redis_graph(improve_builder).invoke(
        {"outcomes": [{**o, "id": run_ids[o["id"]]} for o in OUTCOMES]},
        {"configurable": {"thread_id": f"self_improve:{agent}"}}, context={"agent_id": agent},
    )
    metrics = result["metrics_after"]
    print(f"   decision accuracy over {metrics['with_outcome']} recorded outcomes: {metrics['decision_accuracy']:.2f}")
    training = result.get("training", {})
    if "weights" in training:
        print(f"   weights v{training['version']}: " + ", ".join(
            f"{k} {v:+.2f}" for k, v in sorted(training["weights"].items())))


def _status(config, agent: str) -> None:
    from xmrt.eliza import DecisionLedger
    from xmrt.kb.stats import kb_stats
    from xmrt.redis.server import connect, server_status

    _heading("5. status")
    redis = server_status(connect(config))
    kb = kb_stats(config)
    metrics = DecisionLedger(config, agent).metrics()
    print(f"   Redis {redis['version']}: {redis['used_memory_human']}, {redis['keys']} keys, modules "
          + ", ".join(redis["modules"]))
    print(f"   knowledge base: {kb['documents']} documents, {kb['chunks']} chunks in {kb['collections']} "
          f"collection(s), model {kb['embedding_model']}")
    print(f"   eliza ({agent}): {metrics['decisions']} decisions, {metrics['with_outcome']} with outcomes")
    _heading("what to try next")
    print("   xmrt ingest ~/your/docs --collection mine      your own folder, file or git repository")
    print('   xmrt ask "your question" --collection mine     grounded answers with sources (--mode rat|agentic)')
    print("   xmrt chat                                       a conversation on one thread (Redis keeps it)")
    print("   xmrt eliza decide --input proposals.jsonl       decisions; xmrt eliza feedback teaches Eliza")
    print("   xmrt serve                                      the graph API, /status and the dashboard")
    print("   Better answers: point at any OpenAI-compatible server, e.g.")
    print("   OPENAI_BASE_URL=http://localhost:11434/v1 RAGLIGHT_LLM_MODEL=llama3.1 xmrt demo   (Ollama; vLLM,")
    print("   LM Studio and llama.cpp server work alike), or OPENAI_API_KEY=... for OpenAI.")


def _demo(args: argparse.Namespace) -> int:
    from xmrt.config import get_config
    from xmrt.llm.providers import describe_llm
    from xmrt.redis.server import describe, ensure_redis

    config = get_config()
    ensure_redis(config)
    llm = describe_llm(config)
    print(f"Redis: {describe(config.redis_url)}   LLM: {llm.get('provider')} {llm.get('model')}   "
          f"data: {config.data_dir}", file=sys.stderr)
    if config.llm_provider == "huggingface":
        print("With the bundled 135M model, answers quote the passages (or your own words) that best answer: its own "
              "sentences were right less often than the quotes. Set OPENAI_API_KEY or OPENAI_BASE_URL for a model "
              "that writes answers (only the sentences the passages support are shown).", file=sys.stderr)
    run = uuid.uuid4().hex[:6]
    _ingest(config)
    _ask(run)
    _memory(run, args.agent)
    _eliza(args.agent, use_llm=not args.no_llm)
    _status(config, args.agent)
    return 0


def register(cli: CommandTree) -> None:
    """Add ``xmrt demo``."""
    p = cli.command("demo", help="run the main job: ingest, ask, remember, decide and learn, status",
                    handler=_demo, description=__doc__)
    p.add_argument("--agent", default="eliza-demo", help="agent id for memories and decisions (default eliza-demo)")
    p.add_argument("--no-llm", action="store_true", help="Eliza decides on learned weights alone (faster)")
