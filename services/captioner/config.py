"""The captioner's settings: the only place it reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from styleloop.runtime.inputs import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS
from styleloop.runtime.settings import ServiceSettings

# The FROMAGe fashion paper's prompt.
FASHION_PROMPT = (
    "Summarize the object facts on the materials and colors of the clothes into one sentence."
)


class CaptionerSettings(ServiceSettings):
    service_name: str = "captioner"
    models_dir: Path = Field(description="A folder written by `styleloop models prepare`.")
    captioner_kind: Literal["auto", "generative", "attributes"] = Field(
        default="auto",
        description="auto: the manifest's image-to-text checkpoint when there is one, else "
        "the attribute heads of `styleloop train align`.",
    )
    captioner_prompt: str = Field(
        default=FASHION_PROMPT,
        description="Instruction for chat vision-language models; a caption prefix for "
        "captioning models (BLIP), where the default is no prefix.",
    )
    captioner_device: Literal["auto", "cpu", "cuda"] = "auto"
    max_new_tokens: int = Field(default=40, ge=1, le=512)
    min_confidence: float = Field(
        default=0.35,
        ge=0,
        le=1,
        description="Attribute heads: the least probability a value "
        "needs to appear in the caption.",
    )
    max_batch_size: int = Field(default=8, ge=1, le=256)
    max_batch_wait_ms: float = Field(default=5.0, ge=0)
    # Decoded images are at most 1024 px on their longer side (~3 MB): what waits to be
    # captioned stays under ~200 MB, what is being decoded under ~100 MB.
    max_queue_items: int = Field(default=64, ge=1)
    max_decode_items: int = Field(
        default=32, ge=1, description="Images decoding or waiting to; more are refused."
    )
    max_items_per_request: int = Field(default=32, ge=1)
    max_image_bytes: int = Field(default=DEFAULT_MAX_IMAGE_BYTES, ge=1)
    max_image_pixels: int = Field(default=DEFAULT_MAX_IMAGE_PIXELS, ge=1)
