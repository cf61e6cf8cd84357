"""The captioner's domain logic, free of gRPC: validate, decode, batch, caption.

Every bad image becomes an :class:`ItemFailure`; the good images of the same request are
captioned regardless.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image
from prometheus_client import Counter

from services.captioner.captioners import (
    AttributeCaptioner,
    Captioner,
    CaptionOut,
    GenerativeCaptioner,
    Job,
)
from services.captioner.config import CaptionerSettings
from styleloop.models.manifest import Manifest, load_manifest
from styleloop.runtime.batching import Admission, MicroBatcher
from styleloop.runtime.errors import FailedPrecondition, InvalidArgument, ItemFailure
from styleloop.runtime.inputs import (
    DEFAULT_MAX_DECODED_SIDE,
    InputLimits,
    check_item_count,
    decode_image,
)

CAPTIONS = Counter("captioner_captions_total", "Images captioned.", ["kind"])
TOKENS = Counter("captioner_generated_tokens_total", "Caption tokens generated.", ["kind"])
FAILED_ITEMS = Counter(
    "captioner_failed_items_total", "Images refused as bad input, by reason.", ["reason"]
)
MAX_PROMPT_CHARS = 1000
MAX_NEW_TOKENS_LIMIT = 512

Outcome = CaptionOut | ItemFailure


@dataclass(frozen=True)
class CaptionerInfo:
    model_id: str
    model_version: str
    preset: str
    backend: str
    device: str
    max_batch_size: int
    default_prompt: str


class CaptionerCore:
    """Captions images with one captioner, gathering concurrent requests into batches."""

    def __init__(self, captioner: Captioner, preset: str, settings: CaptionerSettings) -> None:
        self.captioner, self.preset, self.settings = captioner, preset, settings
        # Decoded images wait for a batch: kept small (1024 px on the longer side).
        self.limits = InputLimits(
            settings.max_image_bytes, settings.max_image_pixels, 0, DEFAULT_MAX_DECODED_SIDE
        )
        self.batcher: MicroBatcher[Job, CaptionOut] = MicroBatcher(
            "captioner",
            "image",
            captioner.caption_batch,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_batch_wait_ms / 1000,
            max_queue_items=settings.max_queue_items,
        )
        self._decode_pool = ThreadPoolExecutor(2, thread_name_prefix="decode")
        self._decoding = Admission("captioner", "decoding", settings.max_decode_items)

    @property
    def info(self) -> CaptionerInfo:
        c = self.captioner
        return CaptionerInfo(
            model_id=c.model_id,
            model_version=c.model_version,
            preset=self.preset,
            backend=c.kind,
            device=c.device,
            max_batch_size=self.settings.max_batch_size,
            default_prompt=c.default_prompt,
        )

    async def start(self) -> None:
        self.batcher.start()
        # Warm up, so the first request does not pay for lazy initialisation.
        await self.batcher.submit([Job(Image.new("RGB", (64, 64), "white"), "", 2)])

    async def stop(self) -> None:
        await self.batcher.stop()
        self._decode_pool.shutdown(wait=False, cancel_futures=True)

    async def caption(self, images: list[bytes], prompt: str, max_new_tokens: int) -> list[Outcome]:
        check_item_count(len(images), self.settings.max_items_per_request, "images")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidArgument(
                f"the prompt has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}",
                reason="PROMPT_TOO_LONG",
            )
        if not 0 <= max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise InvalidArgument(
                f"max_new_tokens must be between 0 (the default, {self.settings.max_new_tokens})"
                f" and {MAX_NEW_TOKENS_LIMIT}",
                reason="MAX_NEW_TOKENS_OUT_OF_RANGE",
            )
        budget = max_new_tokens or self.settings.max_new_tokens
        loop = asyncio.get_running_loop()
        with self._decoding.take(len(images)):  # bounded over all requests
            decoded: list[Image.Image | ItemFailure] = await asyncio.gather(
                *(
                    loop.run_in_executor(self._decode_pool, decode_image, d, self.limits)
                    for d in images
                )
            )
        jobs = [Job(im, prompt, budget) for im in decoded if not isinstance(im, ItemFailure)]
        captions = iter(await self.batcher.submit(jobs) if jobs else [])
        outcomes: list[Outcome] = []
        for item in decoded:
            if isinstance(item, ItemFailure):
                FAILED_ITEMS.labels(item.reason).inc()
                outcomes.append(item)
            else:
                caption = next(captions)
                CAPTIONS.labels(self.captioner.kind).inc()
                TOKENS.labels(self.captioner.kind).inc(caption.generated_tokens)
                outcomes.append(caption)
        return outcomes


def build_captioner(settings: CaptionerSettings) -> CaptionerCore:
    manifest: Manifest | None = load_manifest(settings.models_dir)
    if manifest is None:
        raise FailedPrecondition(
            f"no models in {settings.models_dir}; run `styleloop models prepare --out "
            f"{settings.models_dir}`"
        )
    kind = settings.captioner_kind
    if kind == "auto":
        kind = "generative" if manifest.captioner is not None else "attributes"
    captioner: Captioner
    if kind == "generative":
        if manifest.captioner is None:
            raise FailedPrecondition(
                f"{settings.models_dir} has no image-to-text checkpoint (preset "
                f"{manifest.preset}); set CAPTIONER_KIND=attributes or prepare a hub preset"
            )
        captioner = GenerativeCaptioner(
            settings.models_dir,
            manifest.captioner,
            settings.captioner_prompt,
            settings.captioner_device,
        )
    else:
        if manifest.attributes is None:
            raise FailedPrecondition(
                f"{settings.models_dir} has no captioner yet: {manifest.captioner_pending or ''}"
                " (run `styleloop train align --catalog DIR`)"
            )
        captioner = AttributeCaptioner(settings.models_dir, settings.min_confidence)
    return CaptionerCore(captioner, manifest.preset, settings)
