"""Backend selection details that need no server."""

from __future__ import annotations

import logging

import numpy as np

from services.encoder.backends import OnnxRuntimeRunner, pad_batch
from styleloop.models.manifest import load_manifest


def test_cuda_requested_without_a_gpu_falls_back_to_cpu_with_a_warning(tiny_models, caplog):
    import onnxruntime as ort

    manifest = load_manifest(tiny_models)
    with caplog.at_level(logging.WARNING):
        runner = OnnxRuntimeRunner(tiny_models, manifest.encoder, "cuda", threads=1)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert runner.device == "cuda"
    else:
        assert runner.device == "cpu"
        assert any("running on CPU" in r.getMessage() for r in caplog.records)
    out = runner.run_images(np.zeros((2, 3, 64, 64), np.float32))
    assert out.shape == (2, 32)


def test_pad_batch_pads_right_and_masks():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0)
    np.testing.assert_array_equal(ids, [[5, 6, 7], [8, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0]])
