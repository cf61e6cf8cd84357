"""Generation on an OpenAI-compatible server (vLLM on GPU nodes; `transformers serve` here).

The citation constraint holds here too, with nothing but the completions API: the answer
is generated in segments. A free segment streams text with ``stop: ["["]``; when the
model opens a citation, each next token is asked for alone with a bias of +100 on the
tokens that keep it a valid card number (and ``]``), so the server can only choose among
them; then free text goes on. Which tokens those are comes from the model's own
tokenizer (``OPENAI_TOKENIZER``, default: the LLM folder ``models prepare`` wrote), the
same one the server uses.

Two dialects pass the bias: ``openai`` (``logit_bias``; vLLM, OpenAI) and
``transformers`` (`transformers serve`, whose completions endpoint takes a
``generation_config`` JSON with ``sequence_bias`` instead). Adapters are served by name:
``model`` is the adapter id (vLLM ``--enable-lora``), loaded once under that versioned
name (``/v1/load_lora_adapter``) and never reloaded in place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from services.llm.backends import Finished, GenerationRequest
from services.llm.backends.local import render_prompt, token_texts
from services.llm.config import LlmSettings
from services.llm.grounding import CitationRules, CitationState
from styleloop.runtime.errors import FailedPrecondition, InvalidArgument, Unavailable

log = logging.getLogger(__name__)

FORCE = 100.0  # OpenAI's bias range is [-100, 100]; +100 makes the choice exclusive


class OpenAIBackend:
    def __init__(self, settings: LlmSettings, tokenizer_dir: Path | None = None) -> None:
        if not settings.openai_base_url:
            raise FailedPrecondition(
                "BACKEND=openai needs OPENAI_BASE_URL (e.g. http://127.0.0.1:8000/v1)",
                reason="NO_OPENAI_BASE_URL",
            )
        self.settings = settings
        self.base_url = settings.openai_base_url.rstrip("/")
        self.model_id = settings.openai_model
        self.model_version = "served"
        self.dialect = settings.openai_dialect
        self.tokenizer_dir = tokenizer_dir or settings.openai_tokenizer
        self.tokenizer: Any = None
        self.rules: CitationRules | None = None
        self.eos_id: int | None = None
        self.client: httpx.AsyncClient | None = None
        self._adapters: set[str] = set()

    def load(self) -> None:
        from transformers import AutoTokenizer

        if self.tokenizer_dir is None:
            raise FailedPrecondition(
                "the openai backend needs the served model's tokenizer (OPENAI_TOKENIZER)",
                reason="NO_TOKENIZER",
            )
        self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)
        self.eos_id = self.tokenizer.eos_token_id
        self.rules = CitationRules(
            token_texts(self.tokenizer), [self.eos_id] if self.eos_id else []
        )

    async def start(self) -> None:
        if self.rules is None:
            self.load()
        headers = {}
        if self.settings.openai_api_key:
            headers["Authorization"] = f"Bearer {self.settings.openai_api_key}"
        self.client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=self.settings.openai_timeout_s
        )

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def load_adapter(self, adapter_id: str, path: Path) -> None:
        """vLLM's runtime LoRA loading, once per versioned name."""
        if adapter_id in self._adapters:
            return
        if self.dialect != "openai":
            raise FailedPrecondition(
                "this server cannot load adapters at run time", reason="ADAPTERS_UNSUPPORTED"
            )
        assert self.client is not None
        reply = await self.client.post(
            "/load_lora_adapter", json={"lora_name": adapter_id, "lora_path": str(path)}
        )
        if reply.status_code >= 400:
            raise FailedPrecondition(
                f"the server refused adapter {adapter_id!r}: {reply.text[:200]}",
                reason="ADAPTER_LOAD_FAILED",
            )
        self._adapters.add(adapter_id)

    # ------------------------------------------------------------------ requests

    def _body(
        self,
        request: GenerationRequest,
        prompt: str,
        max_tokens: int,
        *,
        stop: list[str] | None = None,
        only: list[int] | None = None,
        ban: list[int] | None = None,
        stream: bool = False,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.adapter_id or self.model_id,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": request.temperature,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if stop:
            body["stop"] = stop
        if self.dialect == "transformers":
            config: dict[str, Any] = {
                "max_new_tokens": max_tokens,
                "do_sample": request.temperature > 0,
                "eos_token_id": self.eos_id,
                "pad_token_id": self.tokenizer.pad_token_id or self.eos_id,
            }
            if request.temperature > 0:
                config["temperature"] = request.temperature
            if stop:
                config["stop_strings"] = stop
            bias = [[[i], FORCE] for i in only or ()] + [[[i], -FORCE] for i in ban or ()]
            if bias:
                config["sequence_bias"] = bias
            body["generation_config"] = json.dumps(config)
        elif only is not None or ban:
            body["logit_bias"] = {
                **{str(i): FORCE for i in only or ()},
                **{str(i): -FORCE for i in ban or ()},
            }
        return body

    async def _complete(self, body: dict[str, Any]) -> tuple[str, str]:
        assert self.client is not None
        try:
            reply = await self.client.post("/completions", json=body)
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"the LLM server is unavailable ({type(exc).__name__})", reason="LLM_UNAVAILABLE"
            ) from None
        if reply.status_code >= 400:
            raise Unavailable(
                f"the LLM server failed ({reply.status_code})", reason="LLM_UNAVAILABLE"
            )
        choice = reply.json()["choices"][0]
        return str(choice.get("text") or ""), str(choice.get("finish_reason") or "stop")

    async def _stream(self, body: dict[str, Any], usage: list[int]) -> AsyncIterator[str]:
        """The text pieces of a streamed completion; appends the tokens the server says it
        generated to ``usage``."""
        assert self.client is not None
        try:
            async with self.client.stream("POST", "/completions", json=body) as reply:
                if reply.status_code >= 400:
                    await reply.aread()
                    raise Unavailable(
                        f"the LLM server failed ({reply.status_code})", reason="LLM_UNAVAILABLE"
                    )
                async for line in reply.aiter_lines():
                    if not line.startswith("data:") or line.strip() == "data: [DONE]":
                        continue
                    chunk = json.loads(line[5:])
                    if "error" in chunk:
                        raise Unavailable("the LLM server failed", reason="LLM_UNAVAILABLE")
                    if chunk.get("usage"):
                        usage.append(int(chunk["usage"].get("completion_tokens") or 0))
                    for choice in chunk.get("choices", ()):
                        if choice.get("text"):
                            yield str(choice["text"])
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"the LLM server is unavailable ({type(exc).__name__})", reason="LLM_UNAVAILABLE"
            ) from None

    def check(self, request: GenerationRequest) -> None:
        """Refuse a prompt over the budget before anything is streamed."""
        count = self._count(render_prompt(self.tokenizer, request.messages))
        if count > self.settings.max_prompt_tokens:
            raise InvalidArgument(
                f"the prompt is {count} tokens; the most is {self.settings.max_prompt_tokens}",
                reason="PROMPT_TOO_LONG",
            )

    def _must_cite(self, request: GenerationRequest, state: CitationState) -> list[int]:
        needed = self.settings.require_citation and request.cards > 0 and state.cited == 0
        return [self.eos_id] if needed and self.eos_id is not None else []

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    # ------------------------------------------------------------------ generation

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str | Finished]:
        assert self.rules is not None
        prompt = render_prompt(self.tokenizer, request.messages)
        prompt_tokens = self._count(prompt)
        state = CitationState(request.cards)
        text = ""
        used = 0  # tokens generated into the answer, as the server counts them

        def finished(reason: str) -> Finished:
            return Finished(reason, prompt_tokens, used, request.adapter_id)  # type: ignore[arg-type]

        while True:
            left = request.max_new_tokens - used
            if left <= 0:
                yield finished("length")
                return
            ban = self._must_cite(request, state)
            # Tokens kept back so that a citation the answer still owes fits.
            reserve = len(str(request.cards)) + 2 if ban else 0
            if state.inside is None and ban and left <= reserve and self.rules.openers:
                piece, _ = await self._complete(
                    self._body(request, prompt + text, 1, only=self.rules.openers)
                )
                text, used = text + "[", used + 1
                state.feed("[")
                yield "["
                continue
            if state.inside is None:
                # Free text up to the next '[' (the server's stop string).
                free = ""
                usage: list[int] = []
                stop = ["["] if request.cards > 0 else None
                # Before its first citation, an answer grounded on cards may not end.
                body = self._body(
                    request, prompt + text, left - reserve, stop=stop, ban=ban, stream=True
                )
                async for piece in self._stream(body, usage):
                    if "[" in piece:  # servers that keep the stop string in the text
                        piece = piece[: piece.index("[")]
                        free += piece
                        if piece:
                            yield piece
                        break
                    free += piece
                    yield piece
                text += free
                # The server's own count when it reports one; else the text re-tokenized,
                # which can count a generated token as several ("##son" is one token the
                # model chose, three when re-tokenized) but never more than were allowed.
                used += sum(usage) if usage else min(self._count(free), left - reserve)
                if request.cards == 0:
                    yield finished("stop")
                    return
                if used >= request.max_new_tokens:
                    continue
                # Stopped at '[', at the end of the answer, or at the token limit: one
                # more token says which.
                probe, _ = await self._complete(
                    self._body(request, prompt + text, 1, ban=self._must_cite(request, state))
                )
                if probe.strip().startswith("[") and self.rules.openers:
                    text += "["
                    used += 1
                    state.feed("[")
                    yield "["
                elif not probe.strip():
                    yield finished("stop")
                    return
                # else: the segment ended early; free text goes on
                continue
            # Inside a citation: the server chooses among valid next tokens only.
            allowed = self.rules.allowed(state)
            piece, _ = await self._complete(self._body(request, prompt + text, 1, only=allowed))
            if piece not in {self.rules.texts[i] for i in allowed}:
                log.error("the LLM server ignored the citation constraint")
                raise Unavailable(
                    "the LLM server does not support constrained tokens", reason="LLM_UNSUPPORTED"
                )
            text += piece
            used += 1
            state.feed(piece)
            yield piece
