"""The Triton backend against a real Triton Inference Server started by the test.

`tritonserver` comes from the nvidia-pytriton wheel in its own virtualenv (`make
install` builds `.venv-triton`); it serves the prepared models with Triton's dynamic
batcher. Never a mock.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from styleloop.processes import spawn
from styleloop.v1 import encoder_pb2, encoder_pb2_grpc
from tests.conftest import ROOT, catalog_images, encode_png, free_ports
from tests.unit.encoder.conftest import encoder_settings, start_encoder

pytestmark = pytest.mark.slow


def triton_python() -> str:
    path = os.environ.get("STYLELOOP_TRITON_PYTHON") or str(
        ROOT / ".venv-triton" / "bin" / "python"
    )
    if not Path(path).is_file():
        pytest.fail(f"no Triton environment at {path}: run `make install`")
    return path


@pytest.fixture(scope="module")
def models(tiny_models: Path) -> Path:
    return tiny_models


@pytest.fixture(scope="module")
def triton(models: Path) -> Iterator[dict]:
    grpc_port, http_port, metrics_port = free_ports(3)
    proc = spawn(
        [
            triton_python(),
            str(ROOT / "services" / "encoder" / "triton_server.py"),
            "--models-dir",
            str(models),
            "--grpc-port",
            str(grpc_port),
            "--http-port",
            str(http_port),
            "--metrics-port",
            str(metrics_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            for model in ("image_encoder", "text_encoder"):
                url = f"http://127.0.0.1:{http_port}/v2/models/{model}/ready"
                urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("tritonserver did not become ready")
    yield {"proc": proc, "url": f"127.0.0.1:{grpc_port}", "metrics": metrics_port}
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def triton_counter(port: int, name: str, model: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(f'{name}{{model="{model}"'):
            return float(line.split()[-1])
    return 0.0


async def embed_all(settings, images: list[bytes], texts: list[str]):
    server, encoder = await start_encoder(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            image_responses = await asyncio.gather(
                *(
                    stub.EmbedImages(encoder_pb2.EmbedImagesRequest(images=[d]), timeout=60)
                    for d in images
                )
            )
            text_response = await stub.EmbedTexts(
                encoder_pb2.EmbedTextsRequest(texts=texts), timeout=60
            )
            info = await stub.GetEncoderInfo(encoder_pb2.GetEncoderInfoRequest(), timeout=5)
    finally:
        await server.stop(grace=0)
        await encoder.stop()
    images_out = np.stack([np.asarray(r.results[0].embedding.values) for r in image_responses])
    texts_out = np.stack([np.asarray(r.embedding.values) for r in text_response.results])
    return images_out, texts_out, info.model


async def test_triton_backend_matches_onnxruntime_and_triton_batches(models, triton):
    images = [encode_png(image) for image in catalog_images(64)]
    texts = ["red floral dress", "black leather boots for winter", "gold clutch"]
    executions_before = triton_counter(
        triton["metrics"], "nv_inference_exec_count", "image_encoder"
    )
    requests_before = triton_counter(
        triton["metrics"], "nv_inference_request_success", "image_encoder"
    )
    via_triton = await embed_all(
        encoder_settings(models, encoder_backend="triton", triton_url=triton["url"]), images, texts
    )
    in_process = await embed_all(encoder_settings(models), images, texts)
    assert via_triton[2].backend == "triton"
    np.testing.assert_allclose(via_triton[0], in_process[0], atol=1e-5)
    np.testing.assert_allclose(via_triton[1], in_process[1], atol=1e-5)
    requests = (
        triton_counter(triton["metrics"], "nv_inference_request_success", "image_encoder")
        - requests_before
    )
    executions = (
        triton_counter(triton["metrics"], "nv_inference_exec_count", "image_encoder")
        - executions_before
    )
    assert requests >= 64  # plus the warm-up
    assert executions < requests  # Triton's dynamic batcher merged concurrent requests


async def test_triton_gone_means_unavailable_not_a_hang(models, triton):
    server, encoder = await start_encoder(
        encoder_settings(
            models, encoder_backend="triton", triton_url=triton["url"], triton_timeout_s=5
        )
    )
    try:
        triton["proc"].send_signal(signal.SIGTERM)
        triton["proc"].wait(timeout=60)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.EmbedTexts(
                    encoder_pb2.EmbedTextsRequest(texts=["red dress"]), timeout=30
                )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(grace=0)
        await encoder.stop()
