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
    _annotate_shapes(tmp, [*inputs, *outputs])
    tmp.replace(path)


def _annotate_shapes(path: Path, specs: list[TensorSpec]) -> None:
    """Write the declared shapes into the graph: the tracer may leave static axes symbolic
    (e.g. after a normalisation), which Triton and shape-checking clients then cannot trust."""
    import onnx

    model = onnx.load(str(path))
    by_name = {spec.name: spec for spec in specs}
    for value in [*model.graph.input, *model.graph.output]:
        spec = by_name.get(value.name)
        if spec is None:
            continue
        dims = value.type.tensor_type.shape.dim
        for dim, want in zip(dims, spec.shape, strict=True):
            if isinstance(want, int):
                dim.ClearField("dim_param")
                dim.dim_value = want
            else:
                dim.ClearField("dim_value")
                dim.dim_param = want
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def check_parity(
    module: torch.nn.Module,
    path: Path,
    inputs: dict[str, np.ndarray],
    min_cosine: float = 0.999,
) -> float:
    """Run both on the same inputs; raise unless every row of every output agrees.
    Returns the worst cosine."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, inputs)
    with torch.no_grad():
        result = module(*(torch.from_numpy(value) for value in inputs.values()))
    want = [t.numpy() for t in (result if isinstance(result, tuple) else (result,))]
    if len(got) != len(want):
        raise ExportMismatch(f"{path.name}: {len(got)} outputs, PyTorch gives {len(want)}")
    cosine = min(
        float(
            np.min(np.sum(g * w, axis=1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(w, axis=1)))
        )
        for g, w in zip(got, want, strict=True)
    )
    if not cosine > min_cosine:
        raise ExportMismatch(f"{path.name}: ONNX and PyTorch disagree (cosine {cosine:.6f})")
    return cosine
