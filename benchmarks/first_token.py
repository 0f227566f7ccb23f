"""Time a one-shot ``xmrt ask`` as a user sees it: seconds from start to the first visible answer text, and total.

    python -m benchmarks.first_token "QUESTION" [xmrt ask options, e.g. --collection NAME]

A new process each time (imports, model load, embedder, Chroma, retrieval and the first checked sentence or quote
all count), its standard output read byte by byte.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    """Run one timed `xmrt ask` with `argv` as its arguments; returns its exit code."""
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    xmrt = shutil.which("xmrt") or f"{sys.executable} -m xmrt.cli"
    started = time.perf_counter()
    proc = subprocess.Popen([*xmrt.split(), "ask", *argv], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    first, out = None, b""
    while byte := proc.stdout.read(1):
        if first is None and byte.strip():
            first = time.perf_counter() - started
        out += byte
    proc.wait()
    total = time.perf_counter() - started
    print(out.decode(errors="replace").rstrip())
    shown = "no output" if first is None else f"{first:.1f} s"
    print(f"\nfirst visible answer text after {shown}; done after {total:.1f} s (exit {proc.returncode})")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
