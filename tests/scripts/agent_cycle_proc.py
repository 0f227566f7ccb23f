"""A process that runs one system cycle of an agent whose decision step is slow (lock contention tests).

``python agent_cycle_proc.py AGENT SECONDS TTL [WAIT]``: takes the agent's lock through ``SystemRunner``
(renewed every TTL/3 seconds, waiting up to WAIT seconds for it, default 1), prints ``IN_CYCLE``, sleeps
SECONDS inside the cycle (a negative SECONDS waits for a line on standard input instead), then prints ``DONE``
and how the run ended. SIGINT/SIGTERM are handled as ``xmrt run`` handles them (exit 130 after SIGINT).
"""

import sys
import time

from xmrt.config import get_config
from xmrt.eliza.runner import SystemRunner

agent, seconds, ttl = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
wait = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0


class OneProposal:
    name = "test"

    def take(self, n):
        return [("test:1", '{"id": "slow-1", "title": "A slow decision"}')]

    def giveback(self, items):
        pass


def decide(proposals, cycle):
    print("IN_CYCLE", flush=True)
    if seconds < 0:
        sys.stdin.readline()  # hold the cycle until the test says go
    else:
        time.sleep(seconds)
    return {"decisions": [{"id": p["id"], "decision": "defer"} for p in proposals], "metrics": {}}


runner = SystemRunner(get_config(), agent, decide, sources=[OneProposal()], lock_ttl=ttl, lock_wait=wait)
try:
    with runner.stop_on_signals(lambda message: print(message, file=sys.stderr, flush=True)):
        summary = runner.run(1)
except KeyboardInterrupt:
    print("ABANDONED", flush=True)
    sys.exit(130)
print("DONE", summary.stopped, flush=True)
sys.exit(130 if summary.stopped == "interrupted" else 0)
