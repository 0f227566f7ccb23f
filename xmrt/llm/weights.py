"""The local model's weights: loaded once per file and dtype, with a de-quantised copy cached on disk."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xmrt.llm.providers import _LOAD_SECONDS, LLMSetupError, LocalModelFiles

logger = logging.getLogger(__name__)


@dataclass
class LoadedWeights:
    """A loaded tokenizer and model, and the lock that serializes generation on them."""

    tokenizer: Any
    model: Any
    lock: threading.Lock
    load_seconds: float


@functools.lru_cache(maxsize=2)
def _load_weights(files: LocalModelFiles, dtype: str) -> LoadedWeights:
    """Load tokenizer and model from local files only (GGUF tensors are de-quantized to ``dtype``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    needed = ["torch", "transformers"] + (["gguf"] if files.gguf_file else [])
    absent = [name for name in needed if importlib.util.find_spec(name) is None]
    if absent:
        raise LLMSetupError(f"the local LLM needs the packages {', '.join(absent)}: pip install {' '.join(absent)}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise LLMSetupError(f"unknown torch dtype {dtype!r} for the local LLM")
    kwargs: dict[str, Any] = {"local_files_only": True}
    if files.gguf_file:
        kwargs["gguf_file"] = files.gguf_file
    started = time.perf_counter()
    converted = _converted_dir(files, dtype)
    tokenizer = model = None
    if converted is not None and (converted / "model.safetensors").is_file():
        try:  # the de-quantized copy: seconds instead of tens of seconds of GGUF conversion
            tokenizer = AutoTokenizer.from_pretrained(converted, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(converted, dtype=torch_dtype, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - a broken copy: convert again from the GGUF file
            logger.warning("ignoring the converted copy of the local LLM in %s: %s", converted, exc)
            tokenizer = model = None
    if model is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(files.model_dir, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(files.model_dir, dtype=torch_dtype, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any loader failure becomes one clear line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise LLMSetupError(f"cannot load the local LLM {files.path}: {first}") from exc
        if converted is not None:
            _save_converted(model, tokenizer, converted)
    model.eval()
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    seconds = time.perf_counter() - started
    _LOAD_SECONDS[(files, dtype)] = seconds
    logger.info("loaded local LLM %s (%s) in %.1f s", files.path, dtype, seconds)
    return LoadedWeights(tokenizer, model, threading.Lock(), seconds)


def _converted_dir(files: LocalModelFiles, dtype: str) -> Path | None:
    """Where a GGUF model's de-quantized copy is kept: ``~/.cache/xmrt/models/<file>-<size>-<mtime>-<dtype>-<tf>``.

    Converting SmolLM2's GGUF file costs about 40 s of CPU at every process start; loading the converted
    safetensors copy takes about 2 s. The name changes with the file and the transformers version, so a stale copy
    is never used. It is a per-user cache shared by every data directory (like Hugging Face's own cache). None for
    a model directory (nothing to convert).
    """
    if not files.gguf_file:
        return None
    try:
        import transformers

        stat = files.path.stat()
        tag = f"{Path(files.gguf_file).stem}-{stat.st_size}-{int(stat.st_mtime)}-{dtype}-tf{transformers.__version__}"
        return Path.home() / ".cache" / "xmrt" / "models" / tag
    except Exception:  # noqa: BLE001 - no cache then; the GGUF file still loads
        return None


def _save_converted(model: Any, tokenizer: Any, target: Path) -> None:
    """Write the de-quantized weights, config and tokenizer; atomically (another process may do the same)."""
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        import shutil

        import safetensors.torch

        tmp.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_model(model, str(tmp / "model.safetensors"))
        model.config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process wrote it first
            shutil.rmtree(tmp, ignore_errors=True)
    except Exception as exc:  # noqa: BLE001 - the cache is an optimisation; never fail a load for it
        logger.warning("could not keep a converted copy of the local LLM in %s: %s", target, exc)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
