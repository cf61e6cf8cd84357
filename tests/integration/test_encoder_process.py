"""`python -m services.encoder` as a real process: start, serve, stop; bad config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from styleloop.processes import spawn
from styleloop.v1 import encoder_pb2, encoder_pb2_grpc
from tests.conftest import ROOT, catalog_images, encode_png, run_failing_service
from tests.unit.runtime.test_server import wait_for_health


def start(env: dict[str, str]) -> subprocess.Popen[str]:
    return spawn(
        [sys.executable, "-m", "services.encoder"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_serves_then_stops_on_sigterm(tiny_models: Path, free_port: int):
    proc = start(
        {
            "MODELS_DIR": str(tiny_models),
            "GRPC_HOST": "127.0.0.1",
            "GRPC_PORT": str(free_port),
            "METRICS_PORT": "-1",
        }
    )
    try:
        wait_for_health(free_port, health_pb2.HealthCheckResponse.SERVING, timeout=60)
        with grpc.insecure_channel(f"127.0.0.1:{free_port}") as channel:
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            images = [encode_png(image) for image in catalog_images(2)]
            response = stub.EmbedImages(encoder_pb2.EmbedImagesRequest(images=images), timeout=30)
            vectors = [np.asarray(r.embedding.values) for r in response.results]
            assert len(vectors) == 2 and all(v.shape == (32,) for v in vectors)
            assert response.model_version
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    logs = [json.loads(line) for line in proc.stdout.read().splitlines() if line.startswith("{")]
    assert {line["service"] for line in logs} == {"encoder"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "missing required setting MODELS_DIR"),
        ({"MODELS_DIR": "/nonexistent/models"}, "no models in /nonexistent/models"),
        (
            {"MODELS_DIR": "/tmp", "ENCODER_BACKEND": "tensorflow"},
            "invalid setting ENCODER_BACKEND",
        ),
    ],
)
def test_bad_configuration_stops_with_a_clear_message(env, message):
    output = run_failing_service("services.encoder", env, drop=["MODELS_DIR", "ENCODER_BACKEND"])
    assert message in output
