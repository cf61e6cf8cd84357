"""The encoder and the recommender as real processes: start order, readiness, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from styleloop.processes import spawn as spawn_process
from styleloop.v1 import common_pb2, recommender_pb2, recommender_pb2_grpc
from tests.conftest import ROOT, catalog_images, encode_png, free_ports, run_failing_service
from tests.unit.runtime.test_server import wait_for_health


def spawn(module: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return spawn_process(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_recommender_waits_for_the_encoder_then_serves_and_keeps_data(
    tiny_models: Path, tmp_path: Path
):
    encoder_port, recommender_port = free_ports(2)
    common = {"GRPC_HOST": "127.0.0.1", "METRICS_PORT": "-1"}
    recommender_env = {
        **common,
        "GRPC_PORT": str(recommender_port),
        "ENCODER_ADDR": f"127.0.0.1:{encoder_port}",
        "DATA_DIR": str(tmp_path / "data"),
    }
    # Started first: it must report NOT_SERVING until the encoder is there, not crash.
    recommender = spawn("services.recommender", recommender_env)
    encoder = spawn(
        "services.encoder",
        {**common, "GRPC_PORT": str(encoder_port), "MODELS_DIR": str(tiny_models)},
    )
    processes = [recommender, encoder]
    try:
        wait_for_health(recommender_port, health_pb2.HealthCheckResponse.SERVING, timeout=90)
        image = encode_png(catalog_images(1)[0])
        with grpc.insecure_channel(f"127.0.0.1:{recommender_port}") as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            stub.UpsertItems(
                recommender_pb2.UpsertItemsRequest(
                    items=[
                        recommender_pb2.UpsertItem(
                            item=common_pb2.Item(item_id="p1", title="a photo", category="Topwear"),
                            image=image,
                        )
                    ]
                ),
                timeout=30,
            )
        recommender.send_signal(signal.SIGTERM)
        assert recommender.wait(timeout=30) == 0
        logs = [
            json.loads(line)
            for line in recommender.stdout.read().splitlines()
            if line.startswith("{")
        ]
        indexed = [line for line in logs if line["message"] == "catalog indexed"]
        assert indexed and indexed[0]["service"] == "recommender"
        # A new recommender process finds the catalog on disk.
        recommender = spawn("services.recommender", recommender_env)
        processes.append(recommender)
        wait_for_health(recommender_port, health_pb2.HealthCheckResponse.SERVING, timeout=90)
        with grpc.insecure_channel(f"127.0.0.1:{recommender_port}") as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            hits = stub.SearchByImage(recommender_pb2.SearchByImageRequest(image=image), timeout=30)
        assert hits.results[0].item.item_id == "p1"
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "missing required setting ENCODER_ADDR"),
        ({"ENCODER_ADDR": "127.0.0.1:1", "ENCODER_WAIT_S": "1"}, "is unavailable"),
    ],
)
def test_bad_configuration_stops_with_a_clear_message(env, message, tmp_path: Path):
    output = run_failing_service(
        "services.recommender", {"DATA_DIR": str(tmp_path), **env}, drop=["ENCODER_ADDR"]
    )
    assert message in output
