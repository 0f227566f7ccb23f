"""The per-agent Redis lock: in-process semantics, then real processes contending for one agent's cycle."""

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, subprocess_env
from xmrt.redis.coordination import AgentBusy, AgentLock, LockLost

XMRT = [sys.executable, "-m", "xmrt.cli"]
SCRIPT = ROOT / "tests" / "scripts" / "agent_cycle_proc.py"


def test_lock_excludes_releases_by_token_and_reports_the_holder(config, redis_client):
    a = AgentLock(config, "alpha", ttl=30, client=redis_client)
    b = AgentLock(config, "alpha", ttl=30, client=redis_client)
    assert a.try_acquire("cycle 1")
    assert not b.try_acquire()
    with pytest.raises(AgentBusy) as err:
        b.acquire(wait=0.3)
    message = str(err.value)
    assert "agent 'alpha' is busy" in message and "(cycle 1)" in message and "expires in" in message
    assert err.value.holder["owner"].endswith(":" + str(__import__("os").getpid()))
    # Another agent's lock is independent.
    other = AgentLock(config, "beta", ttl=30, client=redis_client)
    assert other.try_acquire() and other.release()
    # Only the holder's token releases it: b cannot delete a's lock even by forging its own state.
    b._value = json.dumps({"token": "forged"})
    assert not b.release()
    assert a.owned()
    a.extend(60)
    assert 30 < redis_client.pttl(a.key) / 1000 <= 60
    assert a.release() and not a.owned()
    assert b.try_acquire() and b.release()


def test_a_lost_reply_to_the_lock_set_is_not_mistaken_for_a_busy_lock(config, redis_client):
    """Redis took the lock but its reply was lost: the client's retry of SET NX must not report our own lock busy."""
    import redis

    from tests.conftest import free_port
    from tests.fault_proxy import FaultProxy, Rule
    from xmrt.redis.clients import client_options

    proxy = FaultProxy(free_port(), config.embedded_redis_port).start()
    client = redis.Redis(port=proxy.port, **client_options())  # the shared clients' retrying policy
    try:
        lock = AgentLock(config, "lost-reply", ttl=30, client=client)
        proxy.arm(Rule(lose_reply=frozenset({"SET"}), match=(b"lost-reply",)))
        assert lock.try_acquire("cycle 1")
        assert proxy.rule.strikes == 1 and proxy.exec_reply == b"+OK\r\n"  # the first SET ran; its reply was lost
        assert lock.owned()
        assert not AgentLock(config, "lost-reply", ttl=30, client=redis_client).try_acquire()  # others still wait
        assert lock.release() and redis_client.get(lock.key) is None
    finally:
        client.close()
        proxy.close()


def test_expired_lock_is_taken_over_and_the_old_holder_cannot_touch_it(config, redis_client):
    old = AgentLock(config, "gamma", ttl=0.2, client=redis_client)
    assert old.try_acquire()
    new = AgentLock(config, "gamma", ttl=30, client=redis_client)
    new.acquire(wait=5)  # waits for the expiry
    with pytest.raises(LockLost):
        old.extend()
    assert not old.release()
    assert new.owned()
    new.release()


def test_hold_renews_the_lock_while_a_long_block_runs(config, redis_client):
    lock = AgentLock(config, "delta", ttl=0.6, client=redis_client)
    with lock.hold(wait=1):
        time.sleep(1.5)  # longer than the ttl: the renewer keeps it
        assert lock.owned()
    assert redis_client.get(lock.key) is None


def _spawn(config, agent, seconds, ttl, wait=1.0, expect="IN_CYCLE"):
    """A light process that runs one cycle of ``agent`` through SystemRunner (the code path of xmrt run)."""
    proc = subprocess.Popen([sys.executable, str(SCRIPT), agent, str(seconds), str(ttl), str(wait)], cwd=ROOT,
                            env=subprocess_env(config), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if expect:
        line = proc.stdout.readline()
        assert line.strip() == expect, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc


def _run_cycle(config, agent, *extra):
    return subprocess.run([*XMRT, "run", "--cycles", "1", "--agent", agent, "--no-llm", *extra], cwd=ROOT,
                          env=subprocess_env(config), capture_output=True, text=True, timeout=120)


def test_two_processes_contend_for_one_agents_cycle(config, redis_client):
    key = f"{config.key_prefix}:lock:contended"
    holder = _spawn(config, "contended", seconds=-1, ttl=30)  # holds its cycle until told to finish
    try:
        busy = _run_cycle(config, "contended", "--lock-wait", "1")
        assert busy.returncode == 1, busy.stderr
        assert "agent 'contended' is busy" in busy.stderr
        assert f":{holder.pid} (xmrt run cycle 1)" in busy.stderr and "gave up after waiting" in busy.stderr
        assert holder.poll() is None  # the first process still runs its cycle, undisturbed
        # The first process finishes its cycle and releases the lock by its token ...
        holder.stdin.write("go\n")
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0 and "DONE" in holder.stdout.read()
    finally:
        if holder.poll() is None:
            holder.kill()
    assert redis_client.get(key) is None
    # ... and a new process gets it.
    after = _spawn(config, "contended", seconds=0, ttl=30)
    assert after.wait(timeout=60) == 0 and "DONE" in after.stdout.read()
    assert redis_client.get(key) is None


def test_a_killed_holders_lock_is_taken_over_after_its_expiry(config, redis_client):
    holder = _spawn(config, "killed", seconds=600, ttl=3)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    key = f"{config.key_prefix}:lock:killed"
    assert redis_client.get(key) is not None  # left behind by the killed process
    # A new process waits for the expiry (3 s, no longer renewed), then takes the lock over and runs its cycle.
    took = _spawn(config, "killed", seconds=0, ttl=30, wait=30)
    assert took.wait(timeout=60) == 0, took.stderr.read()
    assert "DONE" in took.stdout.read()
    assert redis_client.get(key) is None


def _wait_for(stream, text):
    seen = []
    for line in stream:
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"{text!r} never came: {''.join(seen)}")


def test_ctrl_c_mid_cycle_finishes_the_cycle_then_stops_and_releases_the_lock(config, redis_client):
    key = f"{config.key_prefix}:lock:sigint"
    proc = _spawn(config, "sigint", seconds=-1, ttl=30)
    try:
        proc.send_signal(signal.SIGINT)
        _wait_for(proc.stderr, "stopping after the current cycle")
        assert redis_client.get(key) is not None  # the cycle goes on, under its lock
        proc.stdin.write("go\n")
        proc.stdin.close()
        assert proc.wait(timeout=60) == 130
        assert "DONE interrupted" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert redis_client.get(key) is None


def test_a_second_ctrl_c_abandons_the_cycle_and_releases_the_lock(config, redis_client):
    key = f"{config.key_prefix}:lock:sigint2"
    proc = _spawn(config, "sigint2", seconds=-1, ttl=30)
    try:
        proc.send_signal(signal.SIGINT)
        _wait_for(proc.stderr, "stopping after the current cycle")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        assert "ABANDONED" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert redis_client.get(key) is None
