"""The local chat model: ChatHuggingFace over a transformers text-generation pipeline.

:class:`LocalChatModel` fixes what ``ChatHuggingFace`` (langchain-huggingface 1.2) lacks for a
local pipeline:

* **Streaming.** ``ChatHuggingFace._astream`` only talks to inference endpoints, and its sync
  stream hands stop words to the tokenizer as token names. Here generation runs in a worker
  thread feeding a ``TextIteratorStreamer``; ``stream``, ``astream`` and LangGraph's
  ``stream_mode="messages"`` all get the text as it is produced. A consumer that stops early
  stops the generation too, errors in the worker reach the caller, and one lock per loaded
  model serializes generations (the machines have few cores).
* **Any conversation.** Tool results, assistant tool calls and content blocks are rendered into
  the tokenizer's own chat template (the one in the GGUF metadata for SmolLM2). The last message
  need not be a human one. The oldest turns are dropped when the prompt would not fit.
* **Tool calling.** :meth:`LocalChatModel.bind_tools` renders the tool schemas into the system
  prompt and the reply is parsed by :mod:`xmrt.llm.tools` into ``AIMessage.tool_calls``. A reply
  that is not a valid call is a plain text answer, never an exception.

The module imports langchain-huggingface but not torch or transformers; those load with a model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel, generate_from_stream
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, run_in_executor
from langchain_huggingface import ChatHuggingFace

from xmrt.compat.langchain_core import astream_in_thread
from xmrt.errors import XmrtError
from xmrt.llm.local_messages import _chunk, _cut_at_stop, _drop_oldest_turn, _to_role_dicts
from xmrt.llm.tools import (
    ToolSpec,
    classify_reply_start,
    json_is_complete,
    normalize_tool_choice,
    parse_tool_reply,
    render_tools_prompt,
    to_tool_specs,
    tool_call_prefill,
)

logger = logging.getLogger(__name__)

class LLMGenerationError(XmrtError):
    """The local model failed while generating (not a bad reply: those become text)."""


class LocalChatModel(ChatHuggingFace):
    """ChatHuggingFace over a local ``HuggingFacePipeline``, with streaming and prompted tool calls.

    Build it with :func:`xmrt.llm.providers.get_chat_model`, which loads and caches the weights.
    """

    max_new_tokens: int = 256
    """Most tokens generated per reply."""
    repetition_penalty: float = 1.15
    """Penalty (>1) for repeating tokens; 1.0 turns it off. Greedy decoding of a small model at 1.0 loops."""
    no_repeat_ngram_size: int = 4
    """No 4-gram is generated twice in one reply (0 turns it off): a looping sentence cannot start again."""
    context_length: int = 2048
    """Most tokens of prompt plus reply; older turns are dropped to fit."""
    generation_lock: Any = None
    """A lock shared by every chat model over the same weights; one generation at a time."""

    @property
    def _llm_type(self) -> str:
        return "xmrt-local-huggingface"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
        }

    # ---------------------------------------------------------------- tools
    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> Runnable[Any, AIMessage]:
        """Bind tools: their schemas go into the system prompt and replies are parsed for calls.

        Args:
            tools: LangChain tools, functions, pydantic models or OpenAI tool dicts.
            tool_choice: ``None``/``"auto"``, ``"none"``, ``"any"``/``"required"``/``True``, a tool
                name, or ``{"type": "function", "function": {"name": ...}}``. A required call is
                steered by starting the reply with the JSON of a call.
            **kwargs: Bound as call options; OpenAI-only options (``strict``,
                ``parallel_tool_calls``) are accepted and ignored.

        Returns:
            This model with the tools bound.

        Raises:
            ValueError: ``tool_choice`` names a tool that is not in ``tools``.
        """
        specs = to_tool_specs(tools)
        choice = normalize_tool_choice(tool_choice, [s.name for s in specs])
        formatted = [
            {"type": "function", "function": {"name": s.name, "description": s.description, "parameters": s.parameters}}
            for s in specs
        ]
        for ignored in ("strict", "parallel_tool_calls"):
            kwargs.pop(ignored, None)
        return self.bind(tools=formatted, tool_choice=choice, **kwargs)

    def with_structured_output(self, schema: Any = None, *, include_raw: bool = False, **kwargs: Any) -> Runnable:
        """Structured output through a forced prompted tool call (pydantic, TypedDict or JSON schema).

        This is LangChain's generic implementation (``bind_tools`` with ``tool_choice="any"``),
        which, unlike ``ChatHuggingFace``'s, accepts pydantic classes. With one schema the reply is
        prefilled up to its first argument. A reply that does not parse raises an output-parser
        error, unless ``include_raw=True`` returns it as ``parsing_error``.
        """
        kwargs.pop("method", None)
        return BaseChatModel.with_structured_output(self, schema, include_raw=include_raw, **kwargs)

    # --------------------------------------------------------------- prompt
    def build_prompt(self, messages: Sequence[BaseMessage], tools: Sequence[ToolSpec] = (),
                     tool_choice: str = "auto") -> str:
        """Render messages (and the tools section) with the tokenizer's chat template.

        Args:
            messages: The conversation; any message types, in order.
            tools: Tools to describe in the system prompt.
            tool_choice: Normalized tool choice (see :func:`xmrt.llm.tools.normalize_tool_choice`).

        Returns:
            The prompt text, ending with the template's assistant generation prompt.
        """
        dicts = _to_role_dicts(messages)
        if tools and tool_choice != "none":
            section = render_tools_prompt(tools, tool_choice)
            if dicts and dicts[0]["role"] == "system":
                dicts[0] = {"role": "system", "content": f"{dicts[0]['content']}\n\n{section}".strip()}
            else:
                dicts.insert(0, {"role": "system", "content": section})
        budget = max(16, self.context_length - self.max_new_tokens)
        prompt = self._apply_template(dicts)
        while self._count_tokens(prompt) > budget and _drop_oldest_turn(dicts):
            prompt = self._apply_template(dicts)
        if self._count_tokens(prompt) > budget:
            logger.warning("prompt exceeds %d tokens even with one turn; keeping its last tokens", budget)
            with self.generation_lock or contextlib.nullcontext():
                ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"][-budget:]
                prompt = self.tokenizer.decode(ids)
        return prompt

    def _apply_template(self, dicts: list[dict[str, str]]) -> str:
        try:
            return self.tokenizer.apply_chat_template(dicts, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # noqa: BLE001 - a model without (a usable) template gets ChatML
            logger.debug("chat template failed (%s); using ChatML", exc)
            text = "".join(f"<|im_start|>{d['role']}\n{d['content']}<|im_end|>\n" for d in dicts)
            return text + "<|im_start|>assistant\n"

    def _count_tokens(self, text: str) -> int:
        with self.generation_lock or contextlib.nullcontext():  # the tokenizer is shared with the generating thread
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _to_chat_prompt(self, messages: list[BaseMessage]) -> str:
        return self.build_prompt(messages)

    # ----------------------------------------------------------- generation
    def _generation_params(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        max_new = kwargs.get("max_new_tokens") or kwargs.get("max_tokens") or self.max_new_tokens
        temperature = kwargs.get("temperature", self.temperature)
        params: dict[str, Any] = {"max_new_tokens": int(max_new), "return_full_text": False}
        if temperature and temperature > 0:
            params.update(do_sample=True, temperature=float(temperature))
            top_p = kwargs.get("top_p", self.top_p)
            if top_p:
                params["top_p"] = float(top_p)
        else:
            params["do_sample"] = False
        penalty = kwargs.get("repetition_penalty", self.repetition_penalty)
        if penalty and penalty != 1.0:
            params["repetition_penalty"] = float(penalty)
        ngram = kwargs.get("no_repeat_ngram_size", self.no_repeat_ngram_size)
        if ngram and int(ngram) > 0:
            params["no_repeat_ngram_size"] = int(ngram)
        return params

    def iter_text(self, prompt: str, params: dict[str, Any], stats: dict[str, Any]) -> Iterator[str]:
        """Generate from a prompt, yielding text as it is decoded (word by word).

        Args:
            prompt: The full prompt text.
            params: Generation keyword arguments for the transformers pipeline.
            stats: Filled with ``input_tokens`` and ``output_tokens`` when the generation ends.

        Yields:
            Pieces of the reply, without the prompt and without special tokens.

        Raises:
            LLMGenerationError: The model failed while generating.
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        pipe = self.llm.pipeline
        streamer = TextIteratorStreamer(pipe.tokenizer, skip_prompt=True, skip_special_tokens=True)
        abort = threading.Event()
        counted = {"steps": 0}
        failure: list[BaseException] = []

        class _Control(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                counted["steps"] += 1
                return torch.full((input_ids.shape[0],), abort.is_set(), dtype=torch.bool, device=input_ids.device)

        def work() -> None:
            finished = False
            try:
                with self.generation_lock or contextlib.nullcontext():
                    if not abort.is_set():
                        pipe(prompt, streamer=streamer, stopping_criteria=StoppingCriteriaList([_Control()]),
                             **params)
                        finished = True
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
                failure.append(exc)
            finally:
                if not finished:
                    streamer.end()

        stats["input_tokens"] = self._count_tokens(prompt)
        worker = threading.Thread(target=work, name="xmrt-llm-generate", daemon=True)
        worker.start()
        try:
            for text in streamer:
                if text:
                    yield text
        finally:
            abort.set()
            # Also when the consumer stops early (the generator is closed): the generation stops at its next step;
            # wait for it, so no generating thread outlives its caller (or the interpreter, which aborts on it).
            worker.join(timeout=60)
            stats["output_tokens"] = counted["steps"]
        if failure:
            exc = failure[0]
            raise LLMGenerationError(f"local model failed while generating: {type(exc).__name__}: {exc}") from exc

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        tools = to_tool_specs(kwargs.get("tools") or [])
        choice = normalize_tool_choice(kwargs.get("tool_choice"), [t.name for t in tools]) if tools else "none"
        if choice == "none":
            tools = []
        prompt = self.build_prompt(messages, tools, choice)
        params = self._generation_params(kwargs)
        prefill = tool_call_prefill(choice, tools) if tools else ""
        stats: dict[str, Any] = {}
        pieces = _cut_at_stop(self.iter_text(prompt + prefill, params, stats), stop or [])

        mode = None if tools else "text"
        buffer = prefill
        try:
            for piece in pieces:
                if mode == "text":
                    yield _chunk(piece)
                    continue
                buffer += piece
                if mode is None:
                    mode = classify_reply_start(buffer)
                    if mode == "text":
                        yield _chunk(buffer.lstrip())
                        buffer = ""
                if mode == "tool" and ("}" in piece or "]" in piece) and json_is_complete(buffer):
                    break  # the call is complete: stop generating (small models ramble on after it)
        finally:
            pieces.close()
        if buffer.strip():
            parsed = parse_tool_reply(buffer, tools)
            if prefill and not parsed.tool_calls:  # the model may have ignored the prefill and started over
                retry = parse_tool_reply(buffer[len(prefill):], tools)
                parsed = retry if retry.tool_calls else parsed
            chunks = [
                tool_call_chunk(name=c["name"], args=json.dumps(c["args"], ensure_ascii=False), id=c["id"], index=i)
                for i, c in enumerate(parsed.tool_calls)
            ]
            meta = {"tool_call_error": parsed.error} if parsed.error else {}
            yield ChatGenerationChunk(
                message=AIMessageChunk(content=parsed.content, tool_call_chunks=chunks, response_metadata=meta)
            )
        out_tokens = stats.get("output_tokens", 0)
        finish = "length" if out_tokens >= params["max_new_tokens"] else "stop"
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                chunk_position="last",
                usage_metadata={
                    "input_tokens": stats.get("input_tokens", 0),
                    "output_tokens": out_tokens,
                    "total_tokens": stats.get("input_tokens", 0) + out_tokens,
                },
            ),
            generation_info={"finish_reason": finish, "model_name": self.model_id},
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        stream: bool | None = None,  # noqa: FBT001 - the signature of ChatHuggingFace
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop=stop, run_manager=run_manager, **kwargs))

    async def _agenerate(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> ChatResult:
        # ChatHuggingFace._agenerate only knows inference endpoints: run _generate in a thread as BaseChatModel does,
        # with the callbacks (``stream`` travels in kwargs, _generate takes it).
        callbacks = run_manager.get_sync() if run_manager else None
        return await run_in_executor(None, self._generate, messages, stop, callbacks, **kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        # ChatHuggingFace._astream only knows inference endpoints: use the generic thread bridge.
        async for chunk in astream_in_thread(self, messages, stop, run_manager, **kwargs):
            yield chunk
