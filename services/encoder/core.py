"""The encoder's domain logic, free of gRPC: validate, preprocess, tokenise, embed.

Every bad item becomes an :class:`ItemFailure`; good items of the same request are
embedded regardless.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client import Counter
from tokenizers import Tokenizer

from services.encoder.backends import (
    InferenceBackend,
    InProcessBackend,
    OnnxRuntimeRunner,
    Runner,
    TorchRunner,
    TritonBackend,
)
from services.encoder.config import EncoderSettings
from styleloop.models.manifest import Manifest, load_manifest
from styleloop.models.preprocess import preprocess_image
from styleloop.runtime.batching import Admission
from styleloop.runtime.errors import FailedPrecondition, ItemFailure
from styleloop.runtime.inputs import InputLimits, check_item_count, check_text, decode_image

EMBEDDED = Counter("encoder_embeddings_total", "Items embedded.", ["modality"])
FAILED_ITEMS = Counter(
    "encoder_failed_items_total", "Items refused as bad input, by reason.", ["modality", "reason"]
)

Outcome = np.ndarray | ItemFailure


@dataclass(frozen=True)
class EncoderInfo:
    model_id: str
    model_version: str
    preset: str
    backend: str
    device: str
    image_dimension: int
    text_dimension: int
    max_batch_size: int
    max_text_tokens: int
    shared_space: bool


class Encoder:
    """Embeds images and texts with the model of one manifest and one backend."""

    def __init__(
        self,
        manifest: Manifest,
        models_dir: Path,
        backend: InferenceBackend,
        settings: EncoderSettings,
    ) -> None:
        if manifest.encoder is None:
            raise FailedPrecondition(f"{models_dir} has no encoder; run `styleloop models prepare`")
        self.manifest = manifest
        self.spec = manifest.encoder
        self.backend = backend
        self.settings = settings
        self.limits = InputLimits(
            settings.max_image_bytes, settings.max_image_pixels, settings.max_text_chars
        )
        self.tokenizer = Tokenizer.from_file(str(models_dir / self.spec.text.tokenizer))
        self.tokenizer.enable_truncation(self.spec.text.max_length)
        self.tokenizer.no_padding()
        self._preprocess_pool = ThreadPoolExecutor(
            settings.preprocess_threads, thread_name_prefix="preprocess"
        )
        self._decoding = Admission("encoder", "decoding", settings.max_preprocess_items)

    @property
    def info(self) -> EncoderInfo:
        return EncoderInfo(
            model_id=self.spec.model_id,
            model_version=self.spec.model_version,
            preset=self.manifest.preset,
            backend=self.backend.name,
            device=self.backend.device,
            image_dimension=self.spec.image.dimension,
            text_dimension=self.spec.text.dimension,
            max_batch_size=self.settings.max_batch_size,
            max_text_tokens=self.spec.text.max_length,
            shared_space=self.spec.shared_space,
        )

    async def start(self) -> None:
        await self.backend.start()
        # Warm up both towers, so the first request does not pay for lazy initialisation.
        height = self.spec.image.preprocessing.crop_height
        width = self.spec.image.preprocessing.crop_width
        await self.backend.images([np.zeros((3, height, width), np.float32)])
        await self.backend.texts([self.tokenizer.encode("warm up").ids])

    async def stop(self) -> None:
        await self.backend.stop()
        self._preprocess_pool.shutdown(wait=False, cancel_futures=True)

    def _check_count(self, count: int, what: str) -> None:
        check_item_count(count, self.settings.max_items_per_request, what)

    def _prepare_image(self, data: bytes) -> np.ndarray | ItemFailure:
        image = decode_image(data, self.limits)
        if isinstance(image, ItemFailure):
            return image
        return preprocess_image(image, self.spec.image.preprocessing)

    async def embed_images(self, images: list[bytes]) -> list[Outcome]:
        self._check_count(len(images), "images")
        loop = asyncio.get_running_loop()
        with self._decoding.take(len(images)):  # bounded over all requests
            prepared = await asyncio.gather(
                *(
                    loop.run_in_executor(self._preprocess_pool, self._prepare_image, d)
                    for d in images
                )
            )
        return await self._embed("image", prepared, self.backend.images)

    async def embed_texts(self, texts: list[str]) -> list[Outcome]:
        self._check_count(len(texts), "texts")
        checked = [check_text(text, self.limits) for text in texts]
        good = [text for text in checked if isinstance(text, str)]
        encodings = iter(self.tokenizer.encode_batch(good) if good else [])
        prepared: list[list[int] | ItemFailure] = [
            c if isinstance(c, ItemFailure) else next(encodings).ids for c in checked
        ]
        return await self._embed("text", prepared, self.backend.texts)

    async def _embed(self, modality: str, prepared: list, run) -> list[Outcome]:  # type: ignore[no-untyped-def, type-arg]
        good = [item for item in prepared if not isinstance(item, ItemFailure)]
        rows = iter(await run(good) if good else [])
        outcomes: list[Outcome] = []
        for item in prepared:
            if isinstance(item, ItemFailure):
                FAILED_ITEMS.labels(modality, item.reason).inc()
                outcomes.append(item)
            else:
                outcomes.append(next(rows))
        EMBEDDED.labels(modality).inc(len(good))
        return outcomes


def build_backend(settings: EncoderSettings, manifest: Manifest) -> InferenceBackend:
    spec = manifest.encoder
    if spec is None:
        raise FailedPrecondition("the manifest has no encoder")
    if settings.encoder_backend == "triton":
        return TritonBackend(
            settings.triton_url,
            spec,
            spec.text.pad_token_id,
            settings.triton_timeout_s,
            settings.max_batch_size,
        )
    runner: Runner
    if settings.encoder_backend == "torch":
        runner = TorchRunner(manifest.preset, settings.models_dir, spec, settings.encoder_device)
    else:
        runner = OnnxRuntimeRunner(
            settings.models_dir, spec, settings.encoder_device, settings.ort_threads
        )
    return InProcessBackend(
        settings.encoder_backend,
        runner,
        spec.text.pad_token_id,
        max_batch_size=settings.max_batch_size,
        max_image_batch_size=settings.max_image_batch_size,
        max_wait_s=settings.max_batch_wait_ms / 1000,
        max_queue_items=settings.max_queue_items,
    )


def build_encoder(settings: EncoderSettings) -> Encoder:
    manifest = load_manifest(settings.models_dir)
    if manifest is None:
        raise FailedPrecondition(
            f"no models in {settings.models_dir}; run `styleloop models prepare --out "
            f"{settings.models_dir}`"
        )
    return Encoder(manifest, settings.models_dir, build_backend(settings, manifest), settings)
