"""Two kinds of captioner behind one interface.

* :class:`GenerativeCaptioner`: an image-to-text model from ``transformers`` (BLIP on the
  hub presets, a small random BLIP on ``tiny``, or a chat vision-language model), batched
  ``generate`` with greedy decoding; attributes are then read off the caption with the
  fashion vocabulary.
* :class:`AttributeCaptioner`: the attribute heads of `styleloop train align` (``offline``);
  the caption is written from their confident predictions ("a black casual t-shirt").

``caption_batch`` is blocking and runs in the micro-batcher's worker thread.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from PIL import Image

from styleloop.models.attributes import AttributePredictor, Prediction
from styleloop.models.manifest import CheckpointManifest
from styleloop.models.preprocess import to_rgb
from styleloop.vocabulary import describe, extract_attributes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One image to caption, with the request's prompt and token budget."""

    image: Image.Image
    prompt: str
    max_new_tokens: int


@dataclass(frozen=True)
class Attribute:
    name: str
    value: str
    confidence: float = 0.0


@dataclass(frozen=True)
class CaptionOut:
    text: str
    attributes: list[Attribute] = field(default_factory=list)
    generated_tokens: int = 0


class Captioner(Protocol):
    kind: str
    model_id: str
    model_version: str
    device: str
    default_prompt: str

    def caption_batch(self, jobs: list[Job]) -> list[CaptionOut]: ...


class GenerativeCaptioner:
    """A ``transformers`` image-to-text checkpoint saved by `styleloop models prepare`."""

    kind = "generative"

    def __init__(self, models_dir: Path, spec: CheckpointManifest, prompt: str, device: str):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self._torch = torch
        path = models_dir / spec.path
        want_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
        if device == "cuda" and not want_cuda:
            log.warning("CUDA requested but torch sees no GPU; captioning on CPU")
        self._device = torch.device("cuda" if want_cuda else "cpu")
        self.device = self._device.type
        self.processor: Any = AutoProcessor.from_pretrained(path)  # type: ignore[no-untyped-call]
        self.model = cast(Any, AutoModelForImageTextToText.from_pretrained(path))
        self.model.to(self._device).eval()
        self.model_id, self.model_version = spec.model_id, spec.model_version
        # Chat vision-language models follow an instruction; captioning models (BLIP)
        # continue a caption prefix, so an instruction would only derail them.
        self.chat = bool(getattr(self.processor, "chat_template", None))
        self.default_prompt = prompt if self.chat else ""

    def _inputs(self, images: list[Image.Image], prompt: str) -> Any:
        if self.chat:
            messages = [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
            ]
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
            return self.processor(
                images=images, text=[text] * len(images), return_tensors="pt", padding=True
            )
        if prompt:
            return self.processor(
                images=images, text=[prompt] * len(images), return_tensors="pt", padding=True
            )
        return self.processor(images=images, return_tensors="pt")

    def caption_batch(self, jobs: list[Job]) -> list[CaptionOut]:
        results: list[CaptionOut | None] = [None] * len(jobs)
        groups: dict[tuple[str, int], list[int]] = defaultdict(list)
        for index, job in enumerate(jobs):
            groups[(job.prompt or self.default_prompt, job.max_new_tokens)].append(index)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        for (prompt, max_new_tokens), indices in groups.items():
            images = [to_rgb(jobs[i].image) for i in indices]
            inputs = self._inputs(images, prompt).to(self._device)
            with self._torch.inference_mode():
                output = self.model.generate(
                    **inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1
                )
            if self.chat:  # decoder-only: the output repeats the prompt tokens first
                output = output[:, inputs["input_ids"].shape[1] :]
            for index, text in zip(
                indices, self.processor.batch_decode(output, skip_special_tokens=True), strict=True
            ):
                text = " ".join(text.split())
                if not self.chat and prompt and text.lower().startswith(prompt.lower()):
                    text = text[len(prompt) :].strip()
                tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
                results[index] = CaptionOut(
                    text=text,
                    attributes=[Attribute(k, v) for k, v in extract_attributes(text).items()],
                    generated_tokens=tokens,
                )
        return [r for r in results if r is not None]


# The attribute heads' names → the names captions and items use.
ATTRIBUTE_NAMES = {
    "article_type": "article_type",
    "base_colour": "colour",
    "usage": "usage",
    "sub_category": "category",
    "master_category": "master_category",
}


class AttributeCaptioner:
    """Captions from the attribute heads' confident predictions."""

    kind = "attributes"

    def __init__(self, models_dir: Path, min_confidence: float, threads: int = 0) -> None:
        self.predictor = AttributePredictor(models_dir, threads)
        alignment = self.predictor.spec.alignment
        self.model_id = f"styleloop/attribute-heads@{alignment.backbone_model_id}"
        self.model_version = self.predictor.spec.sha256[:12]
        providers = self.predictor.session.get_providers()
        self.device = "cuda" if "CUDAExecutionProvider" in providers else "cpu"
        self.default_prompt = ""
        self.min_confidence = min_confidence

    def caption(self, predictions: dict[str, Prediction]) -> CaptionOut:
        confident = {
            name: p.value
            for name, p in predictions.items()
            if p.probability >= self.min_confidence and p.value not in ("", "None", "NA")
        }
        article = confident.get("article_type") or confident.get("sub_category", "")
        text = describe(confident.get("base_colour", ""), confident.get("usage", ""), article)
        attributes = [
            Attribute(ATTRIBUTE_NAMES.get(name, name), p.value, round(p.probability, 4))
            for name, p in predictions.items()
            if name in confident
        ]
        return CaptionOut(text=text, attributes=attributes)

    def caption_batch(self, jobs: list[Job]) -> list[CaptionOut]:
        rows = self.predictor.predict_images([job.image for job in jobs])
        return [self.caption(row) for row in rows]
