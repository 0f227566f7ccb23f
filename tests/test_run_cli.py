"""``xmrt run`` end to end (real processes), Ctrl-C, the runner's sources in process, and ``xmrt status``."""

import json
import signal
import subprocess
import sys

from graphs.eliza import builder as eliza_builder
from graphs.self_improve import builder as improve_builder
from tests.conftest import ROOT, subprocess_env
from xmrt.eliza import DecisionLedger
from xmrt.eliza.runner import DirectorySource, JsonlSource, RedisInbox, SystemRunner, inbox_key, push_inbox
from xmrt.redis.monitoring import read_node_latencies
from xmrt.redis.persistence import redis_graph
from xmrt.redis.registry import read_registry

XMRT = [sys.executable, "-m", "xmrt.cli"]


def proposal(pid, **criteria):
    return {"id": pid, "title": f"Proposal {pid}", "description": "Fund something useful.", "criteria": criteria}


def test_run_two_cycles_from_a_jsonl_file_and_the_inbox(config, redis_client, tmp_path):
    good = proposal("f1", community_support=0.9, alignment=0.9)
    file = tmp_path / "proposals.jsonl"
    file.write_text("\n".join([json.dumps(good), json.dumps(proposal("f2", technical_risk=0.9)), "{not json"]) + "\n")
    push_inbox(redis_client, config, "runner", [proposal("i1", community_support=0.2, technical_risk=0.8)])
    proc = subprocess.run([*XMRT, "run", "--cycles", "2", "--batch", "2", "--input", str(file), "--no-llm",
                           "--improve-every", "2", "--agent", "runner"], cwd=ROOT, env=subprocess_env(config),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    lines = [x for x in proc.stdout.splitlines() if x.startswith("cycle ")]
    assert len(lines) == 2, proc.stdout
    assert "decided 2 (approve 1 reject 1 defer 0)" in lines[0] and "accuracy n/a" in lines[0]
    # Cycle 2: the malformed line of the file is skipped with its position, the inbox proposal is decided.
    assert "decided 1" in lines[1] and "invalid 1" in lines[1] and "self-improved" in lines[1]
    assert "proposals.jsonl:3" in proc.stderr and "malformed JSON" in proc.stderr
    assert "completed after 2 cycle(s), 3 decision(s)" in proc.stdout
    ledger = DecisionLedger(config, "runner", client=redis_client)
    assert {d["id"] for d in ledger.all()} == {"f1", "f2", "i1"}
    assert redis_client.llen(inbox_key(config, "runner")) == 0
    assert redis_client.get(f"{config.key_prefix}:lock:runner") is None
    registry = read_registry(config, redis_client)
    assert registry["eliza"]["runs"] == 2 and registry["self_improve"]["runs"] == 1
    nodes = read_node_latencies(config, redis_client)["nodes"]
    assert nodes["eliza.decide"]["count"] == 2 and nodes["self_improve.update_weights"]["count"] == 1


def test_ctrl_c_stops_cleanly_and_releases_the_lock(config, redis_client, tmp_path):
    file = tmp_path / "p.jsonl"
    file.write_text(json.dumps(proposal("c1", alignment=0.9)) + "\n")
    proc = subprocess.Popen([*XMRT, "run", "--cycles", "50", "--interval", "120", "--input", str(file), "--no-llm",
                             "--agent", "ctrlc"], cwd=ROOT, env=subprocess_env(config), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("cycle 1:"):
                break
        assert seen and seen[-1].startswith("cycle 1:"), "".join(seen) + proc.stderr.read()
        proc.send_signal(signal.SIGINT)  # during the interval: it stops at once, not after 120 s
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted after 1 cycle(s)" in out and "stopping after the current cycle" in err
    assert "Traceback" not in err
    assert redis_client.get(f"{config.key_prefix}:lock:ctrlc") is None


def test_runner_sources_empty_cycles_and_accuracy_in_process(app_config, redis_client, tmp_path):
    eliza = redis_graph(eliza_builder)
    improve = redis_graph(improve_builder)
    ctx = {"agent_id": "inproc", "use_llm": False, "knowledge_k": 0}

    def decide(proposals, cycle):
        return eliza.invoke({"proposals": proposals}, {"configurable": {"thread_id": "eliza:inproc"}}, context=ctx)

    def self_improve(cycle):
        return improve.invoke({"outcomes": []}, {"configurable": {"thread_id": "si:inproc"}},
                              context={"agent_id": "inproc"})

    inbox_dir = tmp_path / "incoming"
    inbox_dir.mkdir()
    (inbox_dir / "a.jsonl").write_text(json.dumps(proposal("d1", alignment=0.95, community_support=0.9)) + "\n")
    directory = DirectorySource(inbox_dir)
    reports = []
    runner = SystemRunner(app_config, "inproc", decide, self_improve, sources=[directory], improve_every=1,
                          on_cycle=reports.append)
    runner.run(1)
    assert reports[0].decided == 1 and reports[0].counts["approve"] == 1
    # Feedback arrives; a new file lands in the directory; an empty cycle is fine and self-improves.
    DecisionLedger(app_config, "inproc").set_outcome(__import__("xmrt.eliza").eliza.Outcome("d1", True))
    summary = runner.run(1)
    assert summary.cycles[0].note == "nothing to decide" and summary.cycles[0].accuracy == 1.0
    (inbox_dir / "b.jsonl").write_text(json.dumps(proposal("d2", technical_risk=0.9)) + "\n")
    summary = runner.run(1)
    assert summary.cycles[0].decided == 1 and summary.stopped == "completed"
    # A stop request ends the loop before the next cycle.
    runner.request_stop("terminated")
    assert runner.run(3).cycles == [] and runner.run(3).stopped == "terminated"


def test_an_abandoned_cycle_returns_its_inbox_proposals(config, redis_client):
    push_inbox(redis_client, config, "abandon", [proposal("x1"), proposal("x2")])

    def decide(proposals, cycle):
        raise KeyboardInterrupt  # a second Ctrl-C in the middle of the cycle

    runner = SystemRunner(config, "abandon", decide, sources=[RedisInbox(redis_client, config, "abandon")],
                          client=redis_client)
    try:
        runner.run(1)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the interrupt must propagate")
    queued = [json.loads(x)["id"] for x in redis_client.lrange(inbox_key(config, "abandon"), 0, -1)]
    assert queued == ["x2", "x1"]  # back in the queue, x1 still first to be popped (RPOP end)
    assert redis_client.get(f"{config.key_prefix}:lock:abandon") is None


def test_jsonl_source_reads_appended_lines(tmp_path):
    file = tmp_path / "grow.jsonl"
    file.write_text('{"id": 1}\n{"id": 2}\n')
    source = JsonlSource(file)
    assert [pos for pos, _ in source.take(5)] == ["grow.jsonl:1", "grow.jsonl:2"]
    assert source.take(5) == []
    with file.open("a") as fh:
        fh.write('\n{"id": 3}\n')
    assert [pos for pos, _ in source.take(5)] == ["grow.jsonl:4"]


def test_status_command_shows_registry_agent_and_latencies(app_config, redis_client, capsys):
    from xmrt.cli import main
    from xmrt.redis.monitoring import PerfRecorder
    from xmrt.redis.registry import Registry

    Registry(app_config).record("eliza", True, 12.5)
    recorder = PerfRecorder(app_config)
    recorder.add("node:eliza.decide", 3.0)
    recorder.add("llm", 40.0)
    recorder.flush()
    assert main(["status", "--json", "--agent", "statusagent"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["registry"]["eliza"]["runs"] == 1 and status["registry"]["eliza"]["avg_ms"] == 12.5
    assert status["agent"]["id"] == "statusagent" and status["agent"]["lock"] is None
    assert status["latencies"]["nodes"]["eliza.decide"]["count"] == 1 and status["latencies"]["llm"]["count"] == 1
    assert "RediSearch" in " ".join(status["redis"]["modules"]) or status["redis"]["modules"]
    assert "knowledge_base" in status
    assert main(["status", "--agent", "statusagent"]) == 0
    text = capsys.readouterr().out
    assert "eliza" in text and "agent statusagent" in text and "eliza.decide" in text


def test_a_stop_during_a_cycle_finishes_it_and_a_stop_while_waiting_for_the_lock_cancels(config, redis_client):
    from xmrt.redis.coordination import AgentLock

    push_inbox(redis_client, config, "stopper", [proposal("s1"), proposal("s2")])
    seen = []

    def decide(proposals, cycle):
        runner.request_stop("interrupted")  # as the SIGINT handler does, in the middle of the cycle
        seen.extend(p["id"] for p in proposals)
        return {"decisions": [{"id": p["id"], "decision": "defer"} for p in proposals], "metrics": {}}

    runner = SystemRunner(config, "stopper", decide, sources=[RedisInbox(redis_client, config, "stopper")],
                          batch=1, client=redis_client)
    summary = runner.run(5)
    assert [c.decided for c in summary.cycles] == [1] and summary.stopped == "interrupted" and seen == ["s1"]
    assert redis_client.llen(inbox_key(config, "stopper")) == 1  # the rest waits for the next run

    other = AgentLock(config, "stopper", ttl=30, client=redis_client)
    assert other.try_acquire("someone else")
    try:
        waiting = SystemRunner(config, "stopper", decide, sources=[], lock_wait=60, client=redis_client)
        timer = __import__("threading").Timer(0.3, waiting.request_stop, args=("terminated",))
        timer.start()
        summary = waiting.run(1)  # returns at once when stopped, not after 60 s
        timer.join()
    finally:
        other.release()
    assert summary.cycles == [] and summary.stopped == "terminated"


def test_two_concurrent_runs_on_one_input_run_each_action_once(config, redis_client, tmp_path):
    """Two ``xmrt run`` processes decide the same proposals; each approved proposal's action runs once."""
    file = tmp_path / "same.jsonl"
    file.write_text("\n".join(json.dumps({**proposal(f"d{i}", community_support=0.95, alignment=0.95,
                                                     technical_risk=0.05),
                                          "action": {"type": "record_task", "title": f"task {i}"}})
                              for i in range(10)) + "\n")
    cmd = [*XMRT, "run", "--cycles", "1", "--batch", "10", "--input", str(file), "--no-llm", "--agent", "dup"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(config), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    tasks = [json.loads(t) for t in redis_client.lrange(f"{config.key_prefix}:dao:tasks", 0, -1)]
    assert sorted(t["proposal_id"] for t in tasks) == sorted(f"d{i}" for i in range(10))
    actions = DecisionLedger(config, "dup", client=redis_client).actions()
    assert set(actions) == {f"d{i}" for i in range(10)} and all(a["status"] == "done" for a in actions.values())


def test_deciding_again_never_erases_a_recorded_outcome(config, redis_client, tmp_path):
    file = tmp_path / "one.jsonl"
    file.write_text(json.dumps(proposal("again", alignment=0.9, community_support=0.9)) + "\n")
    env = subprocess_env(config)
    first = subprocess.run([*XMRT, "eliza", "decide", "--input", str(file), "--no-llm", "--agent", "again"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stderr
    outcome = tmp_path / "outcome.jsonl"
    outcome.write_text(json.dumps({"id": "again", "success": False}) + "\n")
    fed = subprocess.run([*XMRT, "eliza", "feedback", "--input", str(outcome), "--agent", "again"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=180)
    assert fed.returncode == 0, fed.stderr
    second = subprocess.run([*XMRT, "eliza", "decide", "--input", str(file), "--no-llm", "--agent", "again"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert second.returncode == 2 and "already decided" in second.stderr and "not decided again" in second.stderr
    stored = DecisionLedger(config, "again", client=redis_client).get("again")
    assert stored["outcome"]["success"] is False
