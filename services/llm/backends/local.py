"""In-process generation with transformers, several chats sharing the model at once.

One worker thread owns the model and runs a step-level (continuous) batcher: a new chat
is prefilled on its own, then joins the batch of chats being decoded at the next step,
and every step decodes one token for each of them in a single forward pass. Chats keep
their own key/value caches; each step stacks them, left-padded, into one batch and splits
the result again (cheap next to reading the weights, which is what a step costs here).
A chat that ends, is cancelled or runs out of time leaves the batch at the next step.

Before every token, the citation rules (:mod:`services.llm.grounding`) mask what may not
come next, so a citation can only name a card that was retrieved.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from services.llm.backends import Finished, GenerationRequest
from services.llm.grounding import CitationRules, CitationState
from styleloop.runtime.errors import FailedPrecondition, InvalidArgument, ResourceExhausted

log = logging.getLogger(__name__)

TOKENS = Counter("llm_generated_tokens_total", "Tokens generated.")
STEP_BATCH = Histogram(
    "llm_decode_batch_size", "Chats decoded together in one step.", buckets=(1, 2, 4, 8, 16, 32)
)
STEP_SECONDS = Histogram(
    "llm_decode_step_seconds",
    "Time of one decoding step (all chats of the batch), in seconds.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PREFILL_SECONDS = Histogram(
    "llm_prefill_seconds",
    "Time to read one prompt, in seconds.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ACTIVE = Gauge("llm_active_generations", "Chats being decoded or waiting to be.")

PLAIN_TEMPLATE = "{system}\n\n{user}\n\nAnswer:"
PREFIXES_KEPT = 8


def auto_dtype(device: str) -> str:
    """bfloat16 where the hardware multiplies it natively (CUDA; CPUs with AVX-512 BF16 or
    AMX, via oneDNN), else float32."""
    import torch

    if device.startswith("cuda"):
        return "bfloat16"
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return "bfloat16" if native else "float32"


def _key_values(cache: Any) -> list[tuple[Any, Any]]:
    """Each layer's keys and values of a DynamicCache."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def _sliding(layer: Any) -> bool:
    return bool(getattr(layer, "is_sliding", False))


def _seed(layer: Any, keys: Any, values: Any) -> None:
    """A fresh cache layer holding ``keys``/``values`` (a chat's past). A sliding-window
    layer also counts them (its mask and cropping follow ``cumulative_length``); the chat
    stays within its window (``check``), so it attends to everything, as a full layer does."""
    layer.lazy_initialization(keys, values)
    layer.keys, layer.values = keys, values
    if _sliding(layer):
        layer.cumulative_length = int(keys.shape[-2])


def render_prompt(tokenizer: Any, messages: Sequence[tuple[str, str]]) -> str:
    """The model's own chat template when it has one; a plain layout otherwise."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": r, "content": c} for r, c in messages],
            tokenize=False,
            add_generation_prompt=True,
        )
        return str(text)
    system = "\n".join(c for r, c in messages if r == "system")
    user = "\n\n".join(c if r == "user" else f"Answer: {c}" for r, c in messages if r != "system")
    return PLAIN_TEMPLATE.format(system=system, user=user)


def token_texts(tokenizer: Any) -> list[str]:
    """Each token's text on its own (WordPiece continuation marks removed)."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return [t[2:] if t.startswith("##") else t for t in texts]


@dataclass
class _Chat:
    request: GenerationRequest
    prompt_ids: list[int]
    prefix_length: int
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[str | Finished | BaseException]
    state: CitationState
    cancelled: threading.Event = field(default_factory=threading.Event)
    cache: list[tuple[Any, Any]] = field(default_factory=list)
    length: int = 0  # tokens in the cache
    next_token: int = -1  # chosen, not yet in the cache
    generated: list[int] = field(default_factory=list)
    emitted: str = ""

    def send(self, item: str | Finished | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


class LocalBackend:
    """A causal LM from a folder (``models prepare`` writes one), served in-process."""

    def __init__(
        self,
        model_dir: Path,
        *,
        model_id: str,
        model_version: str,
        device: str = "cpu",
        dtype: str = "auto",
        max_batch_size: int = 8,
        max_waiting: int = 64,
        max_prompt_tokens: int = 1536,
        repetition_penalty: float = 1.1,
        threads: int = 0,
        require_citation: bool = True,
        prefix_cache: bool = True,
    ) -> None:
        self.model_dir = model_dir
        self.model_id, self.model_version = model_id, model_version
        self.device, self.dtype = device, dtype
        self.max_batch_size, self.max_waiting = max_batch_size, max_waiting
        self.max_prompt_tokens = max_prompt_tokens
        self.repetition_penalty = repetition_penalty
        self.threads = threads
        self.require_citation = require_citation
        self.prefix_cache = prefix_cache
        self.window: int | None = None  # tokens a chat may span (sliding-window models)
        # Keys and values of system messages, by (adapter, tokens): computed once each.
        self._prefixes: dict[tuple[str, tuple[int, ...]], list[tuple[Any, Any]]] = {}
        self._incoming: queue.Queue[_Chat] = queue.Queue()
        # Work that changes the model (loading an adapter) runs between steps, here.
        self._commands: queue.Queue[tuple[Callable[[], None], concurrent.futures.Future[None]]] = (
            queue.Queue()
        )
        self.peft: Any = None  # the PEFT wrapper once an adapter is loaded
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self.model: Any = None
        self.tokenizer: Any = None
        self.rules: CitationRules | None = None
        self._waiting = 0
        self._lock = threading.Lock()
        self._cache_arg = "past_key_values"
        # Forward arguments that ask for the last position's logits only, where supported.
        self._last_logits: dict[str, Any] = {}

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.threads:
            torch.set_num_threads(self.threads)
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        if self.dtype == "auto":
            self.dtype = auto_dtype(device)
        started = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        if self.dtype == "int8" and device != "cpu":
            raise ValueError("LLM_DTYPE=int8 (dynamic quantization) runs on the CPU only")
        weights = "float32" if self.dtype == "int8" else self.dtype
        model: Any = AutoModelForCausalLM.from_pretrained(
            self.model_dir, dtype=getattr(torch, weights)
        )
        self.model = model.to(device)
        self.model.eval()
        # The model's vocabulary may be padded beyond the tokenizer's: never generate those.
        self.vocab = self.model.get_output_embeddings().weight.shape[0]
        if self.dtype == "int8":
            # Every Linear's weights int8, activations quantized on the fly (CPU kernels);
            # PEFT's LoRA layers do not wrap these, so no adapter is served on them.
            self.model = torch.ao.quantization.quantize_dynamic(
                self.model, {torch.nn.Linear}, dtype=torch.qint8
            )
        texts = token_texts(self.tokenizer)
        eos = self.model.generation_config.eos_token_id
        eos_ids = {eos} if isinstance(eos, int) else set(eos or ())
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_ids = eos_ids
        self.rules = CitationRules(texts, sorted(eos_ids))
        self._prompt_ids = functools.lru_cache(maxsize=256)(self._prompt_ids)  # type: ignore[method-assign]
        self._system_ids = functools.lru_cache(maxsize=8)(self._system_ids)  # type: ignore[method-assign]
        self.special = [i for i in self.tokenizer.all_special_ids if i not in eos_ids]
        from transformers import DynamicCache

        # transformers 5.x renamed the forward's past_key_values to cache.
        parameters = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in parameters else "past_key_values"
        # A prompt's tokens need no logits but the last one's: the vocabulary projection
        # is a quarter of a small model's work per token (Qwen2.5-0.5B: 136M of 494M
        # weights), and every prompt token would otherwise pay it.
        self._last_logits = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
        probe = DynamicCache(config=self.model.config)
        windows = [
            int(getattr(layer, "sliding_window", 0)) for layer in probe.layers if _sliding(layer)
        ]
        # Sliding-window layers (Gemma 3) are stacked like full ones as long as a chat
        # never outgrows the window: ``check`` refuses longer prompt + answer budgets.
        self.window = min(windows) - 1 if windows else None
        if self.window is not None:
            log.info(
                "sliding-window attention: prompt and answer within %d tokens",
                self.window,
                extra={"model_id": self.model_id},
            )
        log.info(
            "llm loaded",
            extra={
                "model_id": self.model_id,
                "device": device,
                "dtype": self.dtype,
                "seconds": round(time.perf_counter() - started, 1),
            },
        )

    async def start(self) -> None:
        if self.model is None:
            await asyncio.to_thread(self.load)
        self._stopping.clear()
        self._worker = threading.Thread(target=self._run, name="llm-batcher", daemon=True)
        self._worker.start()

    async def stop(self) -> None:
        self._stopping.set()
        if self._worker is not None:
            await asyncio.to_thread(self._worker.join, 30)
            self._worker = None

    # ------------------------------------------------------------------ adapters

    def _load_adapter_now(self, adapter_id: str, path: Path) -> None:
        from peft import PeftModel

        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.model, path, adapter_name=adapter_id)
            self.peft.eval()
        else:
            self.peft.load_adapter(path, adapter_name=adapter_id)
        log.info("adapter loaded", extra={"adapter_id": adapter_id, "path": str(path)})

    async def load_adapter(self, adapter_id: str, path: Path) -> None:
        """Load a LoRA adapter beside the others (between decoding steps)."""
        if self.dtype == "int8":
            raise FailedPrecondition(
                "LoRA adapters are not served on int8 weights (LLM_DTYPE=int8)",
                reason="ADAPTER_LOAD_FAILED",
            )
        if self._worker is None:
            await asyncio.to_thread(self._load_adapter_now, adapter_id, path)
            return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._commands.put((lambda: self._load_adapter_now(adapter_id, path), done))
        await asyncio.wrap_future(done)

    def _run_commands(self) -> None:
        while True:
            try:
                command, done = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                command()
                done.set_result(None)
            except Exception as exc:  # noqa: BLE001 - the caller hears of it
                done.set_exception(exc)

    def _forward(self, chats: Sequence[_Chat], **inputs: Any) -> Any:
        if self.peft is None:
            return self.model(**inputs)
        names = [c.request.adapter_id or "__base__" for c in chats]
        return self.peft(**inputs, adapter_names=names)

    # ------------------------------------------------------------------ API

    def check(self, request: GenerationRequest) -> None:
        """Refuse a prompt over the budget before anything is streamed."""
        count = len(self._prompt_ids(request.messages))
        if count > self.max_prompt_tokens:
            raise InvalidArgument(
                f"the prompt is {count} tokens; the most is {self.max_prompt_tokens}",
                reason="PROMPT_TOO_LONG",
            )
        if self.window is not None and count + request.max_new_tokens > self.window:
            raise InvalidArgument(
                f"the prompt is {count} tokens and up to {request.max_new_tokens} may be "
                f"generated; {self.model_id} attends within {self.window} (its sliding window)",
                reason="PROMPT_TOO_LONG",
            )

    def _encode(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        if not getattr(self.tokenizer, "chat_template", None) and bos is not None:
            ids = [bos, *ids]
        return ids

    def _prompt_ids(self, messages: tuple[tuple[str, str], ...]) -> tuple[int, ...]:
        """The prompt's tokens; cached (``load``), since the core checks a prompt's length
        before the stream starts and ``generate`` then needs the same tokens."""
        return tuple(self._encode(render_prompt(self.tokenizer, messages)))

    def _system_ids(self, system: tuple[str, str]) -> tuple[int, ...]:
        """The tokens of a system message alone; cached (``load``): one per prompt kind."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                [{"role": system[0], "content": system[1]}], tokenize=False
            )
        else:
            text = render_prompt(self.tokenizer, (system,)).rsplit("\n\n", 1)[0]
        return tuple(self._encode(str(text)))

    def _prefix_length(self, request: GenerationRequest, ids: list[int]) -> int:
        """How many leading tokens are the system message alone (the same for every chat,
        so its keys and values are computed once); 0 when that is not a clean prefix."""
        if not self.prefix_cache or request.messages[0][0] != "system":
            return 0
        prefix = list(self._system_ids(request.messages[0]))
        if len(prefix) < len(ids) and ids[: len(prefix)] == prefix:
            return len(prefix)
        return 0

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str | Finished]:
        if self._worker is None:
            raise RuntimeError("the backend is not started")
        self.check(request)
        ids = list(self._prompt_ids(request.messages))
        with self._lock:
            if self._waiting >= self.max_waiting:
                raise ResourceExhausted(
                    "too many chats are being answered; retry later", reason="LLM_BUSY"
                )
            self._waiting += 1
        ACTIVE.inc()
        chat = _Chat(
            request=request,
            prompt_ids=ids,
            prefix_length=self._prefix_length(request, ids),
            loop=asyncio.get_running_loop(),
            out=asyncio.Queue(),
            state=CitationState(request.cards),
        )
        self._incoming.put(chat)
        try:
            while True:
                item = await chat.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            chat.cancelled.set()  # a client gone or a deadline passed: stop at the next step
            with self._lock:
                self._waiting -= 1
            ACTIVE.dec()

    # ------------------------------------------------------------------ the worker

    def _run(self) -> None:
        import torch

        active: list[_Chat] = []
        with torch.inference_mode():
            while not self._stopping.is_set():
                try:
                    self._run_commands()
                    active = self._admit(active)
                    active = [c for c in active if not self._finish_if_done(c)]
                    if active:
                        self._step(active)
                        active = [c for c in active if not self._finish_if_done(c)]
                except Exception as exc:  # noqa: BLE001 - every chat hears of it; the worker lives on
                    log.exception("generation failed", exc_info=exc)
                    for chat in active:
                        chat.send(RuntimeError("generation failed"))
                    active = []
        for chat in active:
            chat.send(Finished("cancelled", len(chat.prompt_ids), len(chat.generated)))

    def _admit(self, active: list[_Chat]) -> list[_Chat]:
        """Prefill newly arrived chats (one at a time) while there is room in the batch."""
        while len(active) < self.max_batch_size:
            try:
                chat = self._incoming.get(timeout=0.05 if not active else 0)
            except queue.Empty:
                break
            if chat.cancelled.is_set():
                continue
            self._prefill(chat)
            active.append(chat)
        return active

    def _prefill(self, chat: _Chat) -> None:
        import torch
        from transformers import DynamicCache

        started = time.perf_counter()
        known = chat.prefix_length
        key = (chat.request.adapter_id, tuple(chat.prompt_ids[:known]))
        prefix = self._prefixes.pop(key, None) if known else None
        if known and prefix is None:  # the first chat with this system message
            first = DynamicCache(config=self.model.config)
            head = torch.tensor([chat.prompt_ids[:known]], device=self.device)
            self._forward(
                [chat],
                input_ids=head,
                use_cache=True,
                **{self._cache_arg: first},
                **self._last_logits,
            )
            prefix = _key_values(first)
        cache = DynamicCache(config=self.model.config)
        if prefix is not None:
            self._prefixes[key] = prefix  # most recently used last
            while len(self._prefixes) > PREFIXES_KEPT:
                self._prefixes.pop(next(iter(self._prefixes)))
            layers: list[Any] = list(cache.layers)
            for layer, (keys, values) in zip(layers, prefix, strict=True):
                _seed(layer, keys, values)  # never changed in place: cat copies
        ids = torch.tensor([chat.prompt_ids[known:]], device=self.device)
        out = self._forward(
            [chat], input_ids=ids, use_cache=True, **{self._cache_arg: cache}, **self._last_logits
        )
        chat.cache = _key_values(cache)
        chat.length = len(chat.prompt_ids)
        PREFILL_SECONDS.observe(time.perf_counter() - started)
        self._choose(chat, out.logits[0, -1])

    def _step(self, chats: list[_Chat]) -> None:
        import torch
        import torch.nn.functional as functional
        from transformers import DynamicCache

        started = time.perf_counter()
        longest = max(c.length for c in chats)
        cache = DynamicCache(config=self.model.config)
        layers: list[Any] = list(cache.layers)
        for index, layer in enumerate(layers):
            keys = [functional.pad(c.cache[index][0], (0, 0, longest - c.length, 0)) for c in chats]
            values = [
                functional.pad(c.cache[index][1], (0, 0, longest - c.length, 0)) for c in chats
            ]
            _seed(layer, torch.cat(keys), torch.cat(values))
        mask = torch.zeros((len(chats), longest + 1), dtype=torch.long, device=self.device)
        for row, chat in enumerate(chats):
            mask[row, longest - chat.length :] = 1
        out = self._forward(
            chats,
            input_ids=torch.tensor([[c.next_token] for c in chats], device=self.device),
            attention_mask=mask,
            position_ids=torch.tensor([[c.length] for c in chats], device=self.device),
            use_cache=True,
            **{self._cache_arg: cache},
        )
        for row, chat in enumerate(chats):
            start = longest - chat.length
            chat.cache = [
                (layer.keys[row : row + 1, :, start:], layer.values[row : row + 1, :, start:])
                for layer in layers
            ]
            chat.length += 1
            self._choose(chat, out.logits[row, -1])
        STEP_BATCH.observe(len(chats))
        STEP_SECONDS.observe(time.perf_counter() - started)

    def _choose(self, chat: _Chat, logits: Any) -> None:
        """Pick the next token under the citation rules, and stream what it adds."""
        import torch

        assert self.rules is not None
        scores = logits.float().clone()
        if self.vocab > len(self.rules.texts):  # padded vocabulary: never generated
            scores[len(self.rules.texts) :] = float("-inf")
        if self.special:
            scores[self.special] = float("-inf")
        if chat.generated and self.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(chat.generated)), device=scores.device)
            picked = scores[seen]
            scores[seen] = torch.where(
                picked > 0, picked / self.repetition_penalty, picked * self.repetition_penalty
            )
        banned = self.rules.banned(chat.state)
        if banned is None:  # inside a citation: a card number or ']' only
            allowed = torch.tensor(self.rules.allowed(chat.state), device=scores.device)
            kept = scores[allowed]
            scores = torch.full_like(scores, float("-inf"))
            scores[allowed] = kept
        elif banned:
            scores[list(banned)] = float("-inf")
        if self.require_citation and chat.state.cited == 0 and chat.state.cards > 0:
            # An answer grounded on cards cites one: it cannot end before, and it opens a
            # citation while there are still tokens enough to finish one.
            scores[sorted(self.eos_ids)] = float("-inf")
            left = chat.request.max_new_tokens - len(chat.generated)
            if chat.state.inside is None and left <= len(str(chat.state.cards)) + 2:
                openers = torch.tensor(self.rules.openers, device=scores.device)
                if len(openers):
                    kept = scores[openers]
                    scores = torch.full_like(scores, float("-inf"))
                    scores[openers] = kept
        temperature = chat.request.temperature
        if temperature > 0:
            probs = torch.softmax(scores / temperature, dim=-1)
            token = int(torch.multinomial(probs, 1))
        else:
            token = int(torch.argmax(scores))
        chat.next_token = token
        chat.generated.append(token)
        TOKENS.inc()
        if token in self.eos_ids:
            return
        chat.state.feed(self.rules.texts[token])
        text = self.tokenizer.decode(chat.generated, skip_special_tokens=True)
        if not text.endswith("\ufffd") and len(text) > len(chat.emitted):
            delta = text[len(chat.emitted) :] if text.startswith(chat.emitted) else ""
            chat.emitted = text
            if delta:
                chat.send(delta)

    def _finish_if_done(self, chat: _Chat) -> bool:
        done = None
        if chat.cancelled.is_set():
            done = "cancelled"
        elif chat.generated and chat.generated[-1] in self.eos_ids:
            done = "stop"
        elif len(chat.generated) >= chat.request.max_new_tokens:
            done = "length"
        if done is None:
            return False
        completion = len(chat.generated) - (1 if done == "stop" else 0)
        chat.send(
            Finished(done, len(chat.prompt_ids), completion, chat.request.adapter_id)  # type: ignore[arg-type]
        )
        chat.cache = []
        return True
