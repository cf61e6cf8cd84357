"""The encoder's settings: the only place it reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from styleloop.runtime.inputs import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS
from styleloop.runtime.settings import ServiceSettings


class EncoderSettings(ServiceSettings):
    service_name: str = "encoder"
    models_dir: Path = Field(description="A folder written by `styleloop models prepare`.")
    encoder_backend: Literal["onnxruntime", "torch", "triton"] = "onnxruntime"
    encoder_device: Literal["auto", "cpu", "cuda"] = "auto"
    max_batch_size: int = Field(default=32, ge=1, le=1024)
    max_image_batch_size: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="Image batch cap; 0 = auto: 8 on CPU (convnets gain nothing from larger "
        "CPU batches, measured), MAX_BATCH_SIZE on GPU.",
    )
    max_batch_wait_ms: float = Field(default=2.0, ge=0)
    max_queue_items: int = Field(default=1024, ge=1)
    max_items_per_request: int = Field(default=64, ge=1)
    max_image_bytes: int = Field(default=DEFAULT_MAX_IMAGE_BYTES, ge=1)
    max_image_pixels: int = Field(default=DEFAULT_MAX_IMAGE_PIXELS, ge=1)
    max_text_chars: int = Field(default=2000, ge=1)
    ort_threads: int = Field(default=0, ge=0, description="ONNX Runtime intra-op threads; 0 auto.")
    preprocess_threads: int = Field(default=2, ge=1)
    max_preprocess_items: int = Field(
        default=256, ge=1, description="Images decoding or waiting to; more are refused."
    )
    triton_url: str = "127.0.0.1:8001"
    triton_timeout_s: float = Field(default=10.0, gt=0)
