"""Inference backends behind one small interface.

* ``onnxruntime`` (default): the exported ONNX towers in-process, CUDA when
  ``onnxruntime-gpu`` and a GPU are present, else CPU; dynamic micro-batching in front.
* ``torch``: the PyTorch towers the ONNX graphs were exported from — the reference.
* ``triton``: a remote Triton server serving the repository ``models prepare`` wrote;
  every request goes straight to it, so Triton's own dynamic batcher does the batching.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from styleloop.models.manifest import EncoderManifest
from styleloop.runtime.batching import MicroBatcher
from styleloop.runtime.errors import FailedPrecondition, Unavailable

log = logging.getLogger(__name__)


def pad_batch(token_ids: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id lists to the longest; returns ``input_ids`` and ``attention_mask``."""
    longest = max(len(ids) for ids in token_ids)
    input_ids = np.full((len(token_ids), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(token_ids), longest), dtype=np.int64)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    return input_ids, mask


class InferenceBackend(ABC):
    """Turns preprocessed images and tokenised texts into embedding rows."""

    name: str
    device: str

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load and warm up; called once before serving."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    @abstractmethod
    async def images(self, pixels: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One float32 [3, H, W] array per image → one row per image."""

    @abstractmethod
    async def texts(self, token_ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """One list of token ids per text → one row per text."""


class Runner(Protocol):
    """A blocking, in-process model: what the micro-batcher runs in its thread."""

    device: str

    def run_images(self, pixel_values: np.ndarray) -> np.ndarray: ...

    def run_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


class OnnxRuntimeRunner:
    def __init__(self, models_dir: Path, manifest: EncoderManifest, device: str, threads: int):
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif device == "cuda":
            log.warning(
                "CUDA requested but onnxruntime has no CUDA provider here; running on CPU",
                extra={"available_providers": available},
            )
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        self.image = ort.InferenceSession(
            str(models_dir / manifest.image.onnx), options, providers=providers
        )
        self.text = ort.InferenceSession(
            str(models_dir / manifest.text.onnx), options, providers=providers
        )
        self.device = "cuda" if self.image.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    def run_images(self, pixel_values: np.ndarray) -> np.ndarray:
        return np.asarray(self.image.run(None, {"pixel_values": pixel_values})[0])

    def run_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        return np.asarray(self.text.run(None, feeds)[0])


class TorchRunner:
    """The PyTorch towers, rebuilt from the same source the ONNX graphs came from."""

    def __init__(
        self, preset: str, models_dir: Path, manifest: EncoderManifest, device: str
    ) -> None:
        import torch

        from styleloop.models import presets
        from styleloop.models.prepare import load_towers

        if preset not in presets.PRESETS:
            raise FailedPrecondition(f"unknown preset {preset!r} in the manifest")
        image_tower, text_tower = load_towers(preset, models_dir, manifest)  # type: ignore[arg-type]
        want_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
        if device == "cuda" and not want_cuda:
            log.warning("CUDA requested but torch sees no GPU; running on CPU")
        self._torch = torch
        self._device = torch.device("cuda" if want_cuda else "cpu")
        self.image_tower = image_tower.to(self._device).eval()
        self.text_tower = text_tower.to(self._device).eval()
        self.device = self._device.type

    def run_images(self, pixel_values: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            out = self.image_tower(self._torch.from_numpy(pixel_values).to(self._device))
        return np.asarray(out.float().cpu().numpy())

    def run_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.text_tower(
                torch.from_numpy(input_ids).to(self._device),
                torch.from_numpy(attention_mask).to(self._device),
            )
        return np.asarray(out.float().cpu().numpy())


class InProcessBackend(InferenceBackend):
    """A blocking runner behind two micro-batchers (images, texts)."""

    def __init__(
        self,
        name: str,
        runner: Runner,
        pad_id: int,
        *,
        max_batch_size: int,
        max_image_batch_size: int,
        max_wait_s: float,
        max_queue_items: int,
    ) -> None:
        self.name = name
        self.runner = runner
        self.device = runner.device
        self.pad_id = pad_id
        if max_image_batch_size == 0:
            max_image_batch_size = max_batch_size if runner.device == "cuda" else 8
        knobs: dict[str, Any] = {"max_wait_s": max_wait_s, "max_queue_items": max_queue_items}
        self.image_batcher: MicroBatcher[np.ndarray, np.ndarray] = MicroBatcher(
            "encoder",
            "image",
            lambda items: list(runner.run_images(np.stack(items))),
            max_batch_size=min(max_image_batch_size, max_batch_size),
            **knobs,
        )
        self.text_batcher: MicroBatcher[Sequence[int], np.ndarray] = MicroBatcher(
            "encoder",
            "text",
            lambda items: list(runner.run_texts(*pad_batch(items, pad_id))),
            max_batch_size=max_batch_size,
            **knobs,
        )

    async def start(self) -> None:
        self.image_batcher.start()
        self.text_batcher.start()

    async def stop(self) -> None:
        await self.image_batcher.stop()
        await self.text_batcher.stop()

    async def images(self, pixels: Sequence[np.ndarray]) -> list[np.ndarray]:
        return await self.image_batcher.submit(pixels)

    async def texts(self, token_ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        return await self.text_batcher.submit(token_ids)


class TritonBackend(InferenceBackend):
    """A remote Triton server over gRPC (asyncio client); Triton batches across requests."""

    name = "triton"

    def __init__(
        self, url: str, manifest: EncoderManifest, pad_id: int, timeout_s: float, max_batch: int
    ) -> None:
        self.url = url
        self.manifest = manifest
        self.pad_id = pad_id
        self.timeout_s = timeout_s
        self.max_batch = max_batch
        self.device = f"triton@{url}"
        self._client: Any = None

    async def start(self) -> None:
        import tritonclient.grpc.aio as triton

        self._client = triton.InferenceServerClient(self.url)
        # Triton may be starting beside us: wait for both models up to the timeout.
        deadline = time.monotonic() + self.timeout_s
        for model in (self.manifest.image.triton_model, self.manifest.text.triton_model):
            problem = ""
            while True:
                try:
                    if await self._client.is_model_ready(model, client_timeout=self.timeout_s):
                        break
                    problem = f"Triton at {self.url} does not serve {model!r}"
                except Exception as exc:  # noqa: BLE001 - any transport failure
                    problem = f"Triton at {self.url} is unreachable: {exc}"
                if time.monotonic() > deadline:
                    raise Unavailable(problem)
                await asyncio.sleep(0.5)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def _infer(self, model: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        import tritonclient.grpc.aio as triton
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        inputs = []
        for name, array in feeds.items():
            tensor = triton.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        try:
            result = await self._client.infer(
                model,
                inputs,
                outputs=[triton.InferRequestedOutput("embeddings")],
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            raise Unavailable(f"Triton inference failed: {exc.message()}") from exc
        return np.asarray(result.as_numpy("embeddings"))

    async def images(self, pixels: Sequence[np.ndarray]) -> list[np.ndarray]:
        rows: list[np.ndarray] = []
        for start in range(0, len(pixels), self.max_batch):
            chunk = np.stack(pixels[start : start + self.max_batch])
            out = await self._infer(self.manifest.image.triton_model, {"pixel_values": chunk})
            rows.extend(out)
        return rows

    async def texts(self, token_ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        rows: list[np.ndarray] = []
        for start in range(0, len(token_ids), self.max_batch):
            ids, mask = pad_batch(token_ids[start : start + self.max_batch], self.pad_id)
            feeds = {"input_ids": ids, "attention_mask": mask}
            rows.extend(await self._infer(self.manifest.text.triton_model, feeds))
        return rows
