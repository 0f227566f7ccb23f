"""``xmrt bench checkpoint``: what each checkpoint persistence mode adds to a super-step."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from xmrt.cli import CommandTree


def _run(args: argparse.Namespace) -> int:
    from benchmarks.checkpoint import format_report, run_checkpoint_bench
    from xmrt.config import create_config
    from xmrt.errors import UserError

    if args.iterations < 2:
        raise UserError("--iterations must be at least 2")
    if args.warmup < 0:
        raise UserError("--warmup must not be negative")
    if args.conversation_messages < 0:
        raise UserError("--conversation-messages must not be negative (0 skips the conversation reads)")
    config = create_config()
    progress = None if args.json else (lambda msg: print(f"... {msg}", file=sys.stderr, flush=True))
    # A terminated benchmark still stops the Redis server it started and removes its temp dir.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        report = run_checkpoint_bench(config, iterations=args.iterations, warmup=args.warmup,
                                      conversation_messages=args.conversation_messages, progress=progress)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        command = (f"xmrt bench checkpoint --iterations {args.iterations} --warmup {args.warmup} "
                   f"--conversation-messages {args.conversation_messages}")
        print(format_report(report, command=command))
    return 0


def register(cli: CommandTree) -> None:
    """Add ``bench checkpoint``."""
    cli.group("bench", help="benchmarks measured in one process")
    p = cli.command(
        "bench",
        "checkpoint",
        help="compare checkpoint persistence: none, InMemorySaver, SqliteSaver, Redis savers per durability mode",
        description=(
            "Invoke two small graphs (3-node linear, 2-branch fan-out) on fresh threads and on one growing\n"
            "thread with each persistence mode, interleaved in one process, and print per-invoke p50/p95 and\n"
            "the persistence overhead per super-step (p50, p95) with its ratio to SqliteSaver. Where this\n"
            "process may use several CPUs, a few modes run again in the same rounds pinned to one CPU\n"
            "(rows ', one CPU'): a diagnosis of how much is threads waking each other across CPUs. Then time\n"
            "get_state of one conversation thread (--conversation-messages) with the library's RedisSaver and\n"
            "with ours, with and without our serializer's class cache.\n\n"
            "Uses the configured external Redis under a throw-away key prefix (deleted afterwards), or else\n"
            "starts a temporary embedded Redis Stack on a free port and removes it afterwards."
        ),
        handler=_run,
    )
    p.add_argument("--iterations", type=int, default=200, help="measured invokes per mode and graph (default 200)")
    p.add_argument("--warmup", type=int, default=20, help="unmeasured invokes per mode first (default 20)")
    p.add_argument("--conversation-messages", type=int, default=100,
                   help="messages in the conversation thread whose state reads are timed (default 100; 0 skips)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
