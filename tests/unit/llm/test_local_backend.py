"""The in-process backend: chats decoded together give what each gives alone; a cancelled
chat stops and frees its slot; too many chats are refused; LoRA adapters serve side by
side in one batch, each chat on the adapter it started with."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.llm.backends import Finished, GenerationRequest
from services.llm.backends.local import ACTIVE, STEP_BATCH, TOKENS, LocalBackend
from services.llm.cards import CardItem, build_messages
from styleloop.runtime.errors import FailedPrecondition, InvalidArgument, ResourceExhausted

QUESTIONS = ("puma tee", "a red skirt for summer please", "what goes with white sneakers?")


def request(question: str, tokens: int = 16, adapter_id: str = "") -> GenerationRequest:
    items = [CardItem(str(n), title=f"{question} {n}", brand="Puma") for n in range(3)]
    return GenerationRequest(build_messages(question, items), 3, tokens, adapter_id=adapter_id)


async def collect(backend: LocalBackend, req: GenerationRequest) -> tuple[str, Finished]:
    text = []
    async for piece in backend.generate(req):
        if isinstance(piece, Finished):
            return "".join(text), piece
        text.append(piece)
    raise AssertionError("no Finished")


@pytest.fixture
async def backend(tiny_models: Path):
    # float32: results compared for equality must not depend on the CPU's bf16 support.
    b = LocalBackend(
        tiny_models / "llm", model_id="tiny", model_version="v", max_waiting=4, dtype="float32"
    )
    await b.start()
    yield b
    await b.stop()


async def test_chats_decoded_together_answer_as_they_do_alone(backend: LocalBackend):
    alone = [await collect(backend, request(q)) for q in QUESTIONS]
    before = STEP_BATCH._sum.get()
    together = await asyncio.gather(*(collect(backend, request(q)) for q in QUESTIONS))
    assert [t for t, _ in together] == [t for t, _ in alone]
    assert [f.completion_tokens for _, f in together] == [f.completion_tokens for _, f in alone]
    # They really shared steps: more than one chat per decoding step on average.
    steps = sum(f.completion_tokens for _, f in together)
    assert STEP_BATCH._sum.get() - before >= steps - len(QUESTIONS) > 0


async def test_the_system_message_is_read_once_and_answers_do_not_change(
    backend: LocalBackend, tiny_models: Path
):
    cached = [await collect(backend, request(q)) for q in QUESTIONS]
    assert len(backend._prefixes) == 1  # one system message, read once
    plain = LocalBackend(
        tiny_models / "llm", model_id="t", model_version="v", prefix_cache=False, dtype="float32"
    )
    await plain.start()
    try:
        uncached = [await collect(plain, request(q)) for q in QUESTIONS]
    finally:
        await plain.stop()
    assert [t for t, _ in cached] == [t for t, _ in uncached]
    assert not plain._prefixes


async def test_a_prompt_is_read_without_the_logits_of_all_but_its_last_token(
    backend: LocalBackend,
):
    """The vocabulary projection of every prompt token but the last is wasted work (a
    quarter of Qwen2.5-0.5B's weights): the prefill asks for the last position only, and
    the answers are the same as with every position's logits."""
    shapes: list[tuple[int, ...]] = []
    forward = backend._forward

    def spy(chats, **inputs):
        out = forward(chats, **inputs)
        shapes.append((inputs["input_ids"].shape[1], *out.logits.shape))
        return out

    backend._forward = spy  # type: ignore[method-assign]
    last_only = [await collect(backend, request(q)) for q in QUESTIONS]
    prompts = [s for s in shapes if s[0] > 1]  # the prompt reads, not the decode steps
    assert prompts and all(s[2] == 1 for s in prompts), prompts
    backend._last_logits = {}
    backend._prefixes.clear()
    every = [await collect(backend, request(q)) for q in QUESTIONS]
    assert [t for t, _ in last_only] == [t for t, _ in every]


async def test_a_cancelled_chat_stops_generating_and_frees_its_slot(backend: LocalBackend):
    long = request(QUESTIONS[0], tokens=400)
    stream = backend.generate(long)
    assert isinstance(await anext(stream), str)  # generating
    assert ACTIVE._value.get() == 1
    await stream.aclose()  # the client went away
    assert ACTIVE._value.get() == 0
    generated = TOKENS._value.get()
    text, finish = await collect(backend, request(QUESTIONS[1], tokens=8))
    assert finish.reason in ("stop", "length")
    # Only the new chat's tokens (and at most the one step the cancelled chat was in)
    # were generated since: the cancelled chat's 400-token budget was dropped.
    assert TOKENS._value.get() - generated <= finish.completion_tokens + 2


async def test_a_deadline_cancels_the_generation(backend: LocalBackend):
    async def consume() -> None:
        await collect(backend, request(QUESTIONS[0], tokens=400))

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(consume(), 0.3)
    await asyncio.sleep(0.2)
    assert ACTIVE._value.get() == 0


async def test_more_chats_than_the_queue_holds_are_refused(backend: LocalBackend):
    streams = [backend.generate(request(q, tokens=300)) for q in (*QUESTIONS, "x")]
    for s in streams:
        await anext(s)
    with pytest.raises(ResourceExhausted) as refused:
        await anext(backend.generate(request("one too many")))
    assert refused.value.reason == "LLM_BUSY"
    for s in streams:
        await s.aclose()


def make_adapter(tiny_models: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter for the tiny model with random (non-zero) weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(tiny_models / "llm")
    config = LoraConfig(
        r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(model, config).save_pretrained(out)
    return out


async def test_adapters_serve_side_by_side_each_chat_on_its_own(
    backend: LocalBackend, tiny_models: Path, tmp_path: Path
):
    base_alone = await collect(backend, request(QUESTIONS[0]))
    await backend.load_adapter("a1", make_adapter(tiny_models, tmp_path / "a1", 1))
    await backend.load_adapter("a2", make_adapter(tiny_models, tmp_path / "a2", 2))
    one = await collect(backend, request(QUESTIONS[0], adapter_id="a1"))
    two = await collect(backend, request(QUESTIONS[0], adapter_id="a2"))
    assert len({base_alone[0], one[0], two[0]}) == 3  # the adapters change the answer
    mixed = await asyncio.gather(
        collect(backend, request(QUESTIONS[0])),
        collect(backend, request(QUESTIONS[0], adapter_id="a1")),
        collect(backend, request(QUESTIONS[0], adapter_id="a2")),
    )
    assert [m[0] for m in mixed] == [base_alone[0], one[0], two[0]]
    assert [m[1].adapter_id for m in mixed] == ["", "a1", "a2"]


@pytest.fixture
async def sliding(tmp_path: Path):
    """A small random Gemma 3 (sliding-window and full attention layers, as the offline
    candidate google/gemma-3-270m has), saved as `models prepare` saves an LLM."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from styleloop.models.presets import tiny_hf_tokenizer

    tok = tiny_hf_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=320,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=512,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    Gemma3ForCausalLM(config).save_pretrained(tmp_path / "gemma")
    tok.save_pretrained(tmp_path / "gemma")
    b = LocalBackend(
        tmp_path / "gemma", model_id="tiny-gemma3", model_version="v", max_waiting=4,
        dtype="float32",
    )  # fmt: skip
    await b.start()
    yield b
    await b.stop()


async def test_a_sliding_window_model_is_batched_within_its_window(sliding: LocalBackend):
    """Gemma 3's sliding-window layers were refused by the step batcher; within the window
    they attend to everything, so chats decoded together answer as they do alone, and a
    budget that would outgrow the window is refused before anything streams."""
    assert sliding.window == 319
    requests = [request(q, tokens=12) for q in QUESTIONS]
    alone = [await collect(sliding, r) for r in requests]
    together = await asyncio.gather(*(collect(sliding, r) for r in requests))
    assert [t for t, _ in together] == [t for t, _ in alone]
    assert all(f.completion_tokens == 12 for _, f in alone)
    with pytest.raises(InvalidArgument) as refused:
        sliding.check(request(QUESTIONS[0], tokens=150))
    assert refused.value.reason == "PROMPT_TOO_LONG" and "sliding window" in refused.value.message


async def test_int8_weights_answer_with_quantized_linears_and_refuse_adapters(
    tiny_models: Path, tmp_path: Path
):
    import torch

    b = LocalBackend(
        tiny_models / "llm", model_id="tiny", model_version="v", max_waiting=4, dtype="int8"
    )
    await b.start()
    try:
        quantized = [
            m for m in b.model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)
        ]
        assert quantized and not any(type(m) is torch.nn.Linear for m in b.model.modules())
        text, finished = await collect(b, request(QUESTIONS[0], tokens=8))
        assert finished.completion_tokens == 8 and text
        together = await asyncio.gather(*(collect(b, request(q, tokens=8)) for q in QUESTIONS))
        assert together[0][0] == text  # batched as the float weights are
        with pytest.raises(FailedPrecondition) as refused:
            await b.load_adapter("a1", make_adapter(tiny_models, tmp_path / "a1", 1))
        assert "int8" in refused.value.message
    finally:
        await b.stop()
