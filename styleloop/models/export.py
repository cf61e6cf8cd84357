"""ONNX export of towers, the same for every preset, and an ONNX Runtime parity check."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from styleloop.models.manifest import TensorSpec

OPSET = 17


class ExportMismatch(RuntimeError):
    """The exported graph does not reproduce the PyTorch module."""


def export_onnx(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    path: Path,
) -> None:
    """Export with named inputs/outputs; string dims (``batch``, ``sequence``) are dynamic."""
    dynamic_axes = {
        spec.name: {axis: dim for axis, dim in enumerate(spec.shape) if isinstance(dim, str)}
        for spec in [*inputs, *outputs]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.tmp")
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example_inputs,
            str(tmp),
            input_names=[spec.name for spec in inputs],
            output_names=[spec.name for spec in outputs],
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
        )
    tmp.replace(path)


def check_parity(
    module: torch.nn.Module,
    path: Path,
    inputs: dict[str, np.ndarray],
    min_cosine: float = 0.999,
) -> float:
    """Run both on the same inputs; raise unless every row agrees. Returns the worst cosine."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, inputs)[0]
    with torch.no_grad():
        want = module(*(torch.from_numpy(value) for value in inputs.values())).numpy()
    cosine = float(
        np.min(
            np.sum(got * want, axis=1)
            / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        )
    )
    if not cosine > min_cosine:
        raise ExportMismatch(f"{path.name}: ONNX and PyTorch disagree (cosine {cosine:.6f})")
    return cosine
