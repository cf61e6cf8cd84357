"""A Triton model repository for the exported towers (ONNX Runtime backend).

Layout: ``<repo>/<model>/config.pbtxt`` and ``<repo>/<model>/1/model.onnx``. Each config
states ``max_batch_size``, ``dynamic_batching`` and ``instance_group``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from styleloop.models.manifest import TensorSpec

_TRITON_TYPES = {"float32": "TYPE_FP32", "int64": "TYPE_INT64"}


def _tensor_block(specs: list[TensorSpec]) -> str:
    entries = []
    for spec in specs:
        # The first axis is the batch axis, which Triton leaves out of `dims`.
        dims = ", ".join(str(d) if isinstance(d, int) else "-1" for d in spec.shape[1:])
        entries.append(
            f'  {{\n    name: "{spec.name}"\n    data_type: {_TRITON_TYPES[spec.dtype]}\n'
            f"    dims: [ {dims} ]\n  }}"
        )
    return ",\n".join(entries)


def render_config(
    name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    max_batch_size: int,
    max_queue_delay_us: int,
    instance_kind: str,
    instance_count: int = 1,
) -> str:
    return (
        f'name: "{name}"\n'
        'platform: "onnxruntime_onnx"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [\n{_tensor_block(inputs)}\n]\n"
        f"output [\n{_tensor_block(outputs)}\n]\n"
        "dynamic_batching {\n"
        f"  max_queue_delay_microseconds: {max_queue_delay_us}\n"
        "}\n"
        "instance_group [\n"
        f"  {{\n    count: {instance_count}\n    kind: {instance_kind}\n  }}\n"
        "]\n"
        "version_policy: { latest: { num_versions: 1 } }\n"
    )


def write_model(
    repository: Path,
    name: str,
    onnx_path: Path,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    *,
    max_batch_size: int,
    max_queue_delay_us: int,
    instance_kind: str,
) -> Path:
    """Write ``config.pbtxt`` and place the ONNX file as version 1; returns the model folder."""
    folder = repository / name
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    target = version / "model.onnx"
    target.unlink(missing_ok=True)
    try:
        os.link(onnx_path, target)
    except OSError:
        shutil.copyfile(onnx_path, target)
    (folder / "config.pbtxt").write_text(
        render_config(name, inputs, outputs, max_batch_size, max_queue_delay_us, instance_kind),
        encoding="utf-8",
    )
    return folder
