"""The gateway is exactly what its OpenAPI document says: schemathesis' own CLI
(`st run --checks all`) against the gateway, recommender and encoder running as
processes on 127.0.0.1 (tiny preset, real catalog rows), with an API key, bounded in
time. Zero failures, or this test fails with schemathesis' report.

Chat is in the run too, answered by the llm service (tiny model) as server-sent events;
the one custom check is in ``tests/contract/schemathesis_hooks.py``."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from styleloop.stack import Service
from styleloop.v1 import recommender_pb2_grpc
from tests.conftest import ROOT, free_ports
from tests.unit.recommender.test_recommender import catalog, upsert_request

KEY = "contract-test-key"
SECONDS = int(os.environ.get("CONTRACT_SECONDS", "150"))  # the run's time budget
SEED = os.environ.get("CONTRACT_SEED", "20261201")


@pytest.fixture(scope="module")
def gateway_url(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("contract")
    enc, rec, llm_port, gw = free_ports(4)
    encoder = Service(
        "encoder", "services.encoder", enc, -1, {"MODELS_DIR": str(tiny_models)},
        state / "encoder.log",
    )  # fmt: skip
    recommender = Service(
        "recommender", "services.recommender", rec, -1,
        {"ENCODER_ADDR": encoder.address, "DATA_DIR": str(state / "edge")},
        state / "recommender.log",
    )  # fmt: skip
    llm = Service(
        "llm", "services.llm", llm_port, -1,
        {"MODELS_DIR": str(tiny_models), "RECOMMENDER_ADDR": recommender.address,
         "ADAPTERS_DIR": str(state / "adapters"), "DEFAULT_MAX_NEW_TOKENS": "16"},
        state / "llm.log",
    )  # fmt: skip
    gateway = Service(
        "gateway", "services.gateway", gw, -1,
        {"RECOMMENDER_ADDR": recommender.address, "LLM_ADDR": llm.address,
         "KAFKA_BOOTSTRAP": "127.0.0.1:1",
         "KAFKA_TIMEOUT_S": "0.5", "SPOOL_DIR": str(state / "spool"),
         "API_KEY_SHA256": hashlib.sha256(KEY.encode()).hexdigest(),
         # The key is exempt from limiting in practice: the run must reach every operation.
         "RATE_LIMIT_PER_MINUTE": "1000000", "RATE_LIMIT_BURST": "100000"},
        state / "gateway.log", http=True,
    )  # fmt: skip
    started = []
    try:
        for service in (encoder, recommender, llm, gateway):
            service.start()
            started.append(service)
            service.wait_ready(120)
        with grpc.insecure_channel(recommender.address) as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            stub.UpsertItems(upsert_request(catalog(12)), timeout=60)
        yield f"http://{gateway.address}"
    finally:
        for service in reversed(started):
            service.stop()


def test_schemathesis_cli_finds_no_failure(gateway_url: str, tmp_path: Path):
    st = Path(os.sys.executable).with_name("st")
    command = [
        str(st), "run", f"{gateway_url}/openapi.json",
        "--checks", "all",
        # Replaced by the hook's check, which accepts only the documented semantic 400s.
        "--exclude-checks", "positive_data_acceptance",
        "-H", f"X-API-Key: {KEY}",
        "--max-time", str(SECONDS),
        "--seed", SEED,
        "--workers", "2",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.contract.schemathesis_hooks",
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SECONDS + 180
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert "passed" in report and "failures" not in report.lower().split("summary")[-1], report
