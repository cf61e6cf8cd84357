"""Reading the attribute graph that `styleloop train align` exports: image → the most
likely value of each attribute (article type, colour, usage …) with its calibrated
probability. The `offline` captioner writes its captions from these."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from styleloop.models.manifest import AttributeModel, load_manifest
from styleloop.models.preprocess import preprocess_image


@dataclass(frozen=True)
class Prediction:
    value: str
    probability: float


class AttributesUnavailable(RuntimeError):
    """The models directory holds no attribute graph (no heads trained yet)."""


class AttributePredictor:
    """The exported attribute graph in ONNX Runtime (CPU, or CUDA when available)."""

    def __init__(self, models_dir: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        manifest = load_manifest(models_dir)
        if manifest is None or manifest.attributes is None:
            raise AttributesUnavailable(
                f"no attribute model in {models_dir}; run `styleloop train align --catalog DIR`"
            )
        self.spec: AttributeModel = manifest.attributes
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = ort.InferenceSession(
            str(models_dir / self.spec.onnx), options, providers=providers
        )
        self.names = [a.name for a in self.spec.attributes]

    def probabilities(self, pixel_values: np.ndarray) -> dict[str, np.ndarray]:
        """attribute → [batch, classes] probabilities."""
        outputs = self.session.run(
            [a.output for a in self.spec.attributes], {self.spec.inputs[0].name: pixel_values}
        )
        return dict(zip(self.names, outputs, strict=True))

    def predict(self, pixel_values: np.ndarray) -> list[dict[str, Prediction]]:
        """The most likely value of every attribute, one dict per image."""
        rows: list[dict[str, Prediction]] = [{} for _ in range(len(pixel_values))]
        for attribute, probs in zip(
            self.spec.attributes, self.probabilities(pixel_values).values(), strict=True
        ):
            for row, p in zip(rows, probs, strict=True):
                best = int(np.argmax(p))
                row[attribute.name] = Prediction(attribute.classes[best], float(p[best]))
        return rows

    def predict_images(self, images: Sequence[Image.Image]) -> list[dict[str, Prediction]]:
        pixels = np.stack([preprocess_image(im, self.spec.preprocessing) for im in images])
        return self.predict(pixels)
