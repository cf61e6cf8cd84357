"""The llm service's settings: the only place it reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from styleloop.runtime.inputs import DEFAULT_MAX_IMAGE_BYTES
from styleloop.runtime.settings import ServiceSettings


class LlmSettings(ServiceSettings):
    service_name: str = "llm"
    models_dir: Path = Field(description="A folder written by `styleloop models prepare`.")
    recommender_addr: str = Field(description="host:port of the recommender service.")
    recommender_timeout_s: float = Field(default=10.0, gt=0)
    captioner_addr: str = Field(
        default="",
        description="host:port of the captioner: an attached photo is described in the "
        "prompt too; empty: photos are embedded only.",
    )
    captioner_timeout_s: float = Field(default=10.0, gt=0)
    recommender_wait_s: float = Field(default=120.0, ge=0, description="How long start-up waits.")
    backend: Literal["local", "openai"] = Field(
        default="local",
        description="local: transformers in-process; openai: an OpenAI-compatible server "
        "(vLLM, `transformers serve`) at OPENAI_BASE_URL.",
    )
    llm_device: Literal["auto", "cpu", "cuda"] = "auto"
    llm_dtype: Literal["auto", "float32", "bfloat16", "float16", "int8"] = Field(
        default="auto",
        description="Weights' type. auto: bfloat16 on CUDA and on CPUs with bf16 matrix "
        "instructions (measured here: 2.6x faster prefill, 1.9x faster decoding), else "
        "float32. int8: dynamic quantization of every Linear (CPU only, no adapters; "
        "faster, but its answers differ: see the README).",
    )
    llm_threads: int = Field(default=0, ge=0, description="torch threads; 0 keeps torch's own.")
    max_batch_size: int = Field(
        default=8, ge=1, le=256, description="Chats decoded together in one step."
    )
    max_waiting: int = Field(
        default=64, ge=1, description="Chats generating or waiting to; more are refused."
    )
    max_prompt_tokens: int = Field(default=1536, ge=16)
    repetition_penalty: float = Field(default=1.1, ge=1.0, le=2.0)
    require_citation: bool = Field(
        default=True,
        description="An answer grounded on cards cites at least one (enforced while decoding).",
    )
    default_max_items: int = Field(default=5, ge=1, le=20)
    max_items_limit: int = Field(default=10, ge=1, le=20)
    history_items: int = Field(
        default=3,
        ge=0,
        le=10,
        description="The shopper's newest rejected and liked items (this many of each, from "
        "the recommender's user state) shown to the model after the cards; 0: none.",
    )
    default_max_new_tokens: int = Field(default=96, ge=1)
    max_new_tokens_limit: int = Field(default=512, ge=1)
    max_messages: int = Field(default=20, ge=1, description="Turns a conversation may have.")
    max_message_chars: int = Field(default=2000, ge=1)
    max_image_bytes: int = Field(default=DEFAULT_MAX_IMAGE_BYTES, ge=1)
    min_similarity: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="A text search whose closest item is less similar than this finds "
        "nothing that fits; 0: the floor in CALIBRATION_FILE, if any.",
    )
    calibration_file: Path | None = Field(
        default=None,
        description="`styleloop calibrate`'s output (the catalog's similarity floor); "
        "read again when it changes.",
    )
    vocabulary_refresh_s: float = Field(
        default=300.0, gt=0, description="How often the catalog's facets are read again."
    )
    adapters_dir: Path = Field(
        default=Path(".styleloop/adapters"),
        description="The adapter registry (`styleloop train stylist` publishes into it).",
    )
    adapter_poll_s: float = Field(
        default=5.0, gt=0, description="How often the registry's active.json is read."
    )
    openai_base_url: str = Field(default="", description="e.g. http://127.0.0.1:8000/v1")
    openai_model: str = Field(default="", description="The served model's name.")
    openai_api_key: str = Field(default="", description="Bearer key of the server, if any.")
    openai_dialect: Literal["openai", "transformers"] = Field(
        default="openai",
        description="How token biases are sent: openai (logit_bias: vLLM, OpenAI) or "
        "transformers (`transformers serve`: generation_config.sequence_bias).",
    )
    openai_tokenizer: Path | None = Field(
        default=None,
        description="The served model's tokenizer folder; default: MODELS_DIR's LLM folder.",
    )
    openai_timeout_s: float = Field(default=60.0, gt=0)
    kafka_bootstrap: str = Field(
        default="", description="Kafka bootstrap servers; empty publishes no chat events."
    )
    chat_topic: str = "styleloop.chat.v1"
    kafka_timeout_s: float = Field(default=5.0, gt=0)
    spool_dir: Path = Field(
        default=Path(".styleloop/llm/spool"),
        description="Durable spool for chat events while Kafka is unreachable.",
    )
    spool_replay_interval_s: float = Field(default=2.0, gt=0)
