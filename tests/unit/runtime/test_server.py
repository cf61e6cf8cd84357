"""The service runtime, exercised through a real aio gRPC server on port 0."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status

from styleloop.processes import spawn
from styleloop.runtime.auth import aio_channel
from styleloop.runtime.logging import configure
from styleloop.runtime.server import GrpcServer
from styleloop.runtime.settings import ServiceSettings
from styleloop.v1 import encoder_pb2, encoder_pb2_grpc
from tests.support.probe_service import SERVICE_NAME, register

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def server():
    settings = ServiceSettings(
        service_name="probe", grpc_host="127.0.0.1", grpc_port=0, metrics_port=0
    )
    srv = GrpcServer(settings, register, [SERVICE_NAME])
    await srv.start()
    yield srv
    await srv.stop(grace=0)


@pytest.fixture
async def channel(server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan


async def health_status(channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return response.status


async def test_health_not_serving_until_ready(server, channel):
    assert await health_status(channel, "") == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await health_status(channel, SERVICE_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING
    await server.set_ready()
    assert await health_status(channel, "") == health_pb2.HealthCheckResponse.SERVING
    assert await health_status(channel, SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING


def list_services(port: int) -> list[str]:
    """The services reflection lists; a sync client, so run it off the event loop."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
        return list(ProtoReflectionDescriptorDatabase(chan).get_services())


async def test_reflection_lists_the_service(server):
    services = await asyncio.to_thread(list_services, server.port)
    assert SERVICE_NAME in services
    assert "grpc.health.v1.Health" in services


async def test_reflection_is_off_in_production():
    settings = ServiceSettings(
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_port=-1,
        environment="production",
        service_token="t",
    )
    srv = GrpcServer(settings, register, [SERVICE_NAME])
    await srv.start()
    try:
        with pytest.raises(grpc.RpcError) as err:
            await asyncio.to_thread(list_services, srv.port)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await srv.stop(grace=0)


async def test_domain_error_maps_to_status_with_error_info(channel):
    stub = encoder_pb2_grpc.EncoderServiceStub(channel)
    call = stub.EmbedTexts(encoder_pb2.EmbedTextsRequest(texts=["missing"]), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "no item with id 'missing'"
    status = await rpc_status.aio.from_call(call)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "ITEM_NOT_FOUND"
    assert info.domain == "styleloop.v1"
    assert dict(info.metadata) == {"id": "x"}


async def test_unexpected_error_is_internal_generic_and_logged(channel):
    buffer = io.StringIO()
    configure("probe", "INFO", stream=buffer)
    try:
        stub = encoder_pb2_grpc.EncoderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.EmbedTexts(
                encoder_pb2.EmbedTextsRequest(texts=["boom"]),
                metadata=(("x-request-id", "req-42"),),
                timeout=5,
            )
    finally:
        logging.getLogger().handlers.clear()
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert err.value.details() == "internal error"
    assert "secret" not in err.value.details()
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    errors = [line for line in lines if line["severity"] == "ERROR"]
    assert errors, lines
    assert "secret internal detail" in errors[0]["exception"]
    assert errors[0]["request_id"] == "req-42"
    assert errors[0]["service"] == "probe"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def counter_value(text: str, method: str, code: str) -> float:
    prefix = (
        f'grpc_server_handled_total{{grpc_code="{code}",grpc_method="{method}",'
        f'grpc_service="{SERVICE_NAME}"}}'
    )
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


async def test_metrics_count_rpcs_by_method_and_code(server, channel):
    stub = encoder_pb2_grpc.EncoderServiceStub(channel)
    before_ok = counter_value(scrape(server.metrics.port), "EmbedTexts", "OK")
    before_nf = counter_value(scrape(server.metrics.port), "EmbedTexts", "NOT_FOUND")
    await stub.EmbedTexts(encoder_pb2.EmbedTextsRequest(texts=["a"]), timeout=5)
    await stub.EmbedTexts(encoder_pb2.EmbedTextsRequest(texts=["b"]), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.EmbedTexts(encoder_pb2.EmbedTextsRequest(texts=["missing"]), timeout=5)
    text = scrape(server.metrics.port)
    assert counter_value(text, "EmbedTexts", "OK") == before_ok + 2
    assert counter_value(text, "EmbedTexts", "NOT_FOUND") == before_nf + 1
    assert "grpc_server_handling_seconds_bucket" in text


def wait_for_health(port: int, want: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
                response = health_pb2_grpc.HealthStub(chan).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            if response.status == want:
                return
            last = response.status
        except grpc.RpcError as exc:
            last = exc.code()
        time.sleep(0.1)
    raise AssertionError(f"health never became {want}; last {last}")


def test_sigterm_lets_in_flight_rpc_finish_then_stops(free_port):
    env = {
        **os.environ,
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(free_port),
        "METRICS_PORT": "-1",
        "SHUTDOWN_GRACE_S": "10",
    }
    proc = spawn(
        [sys.executable, "-m", "tests.support.probe_service"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_health(free_port, health_pb2.HealthCheckResponse.SERVING)
        with grpc.insecure_channel(f"127.0.0.1:{free_port}") as chan:
            stub = encoder_pb2_grpc.EncoderServiceStub(chan)
            future = stub.EmbedTexts.future(
                encoder_pb2.EmbedTextsRequest(texts=["slow:1.5"]), timeout=20
            )
            time.sleep(0.5)  # the RPC is now in flight
            proc.send_signal(signal.SIGTERM)
            response = future.result()
        assert response.model_id == "probe"
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    logs = [json.loads(line) for line in proc.stdout.read().splitlines() if line.startswith("{")]
    messages = [line["message"] for line in logs]
    assert "graceful shutdown" in messages
    assert messages.index("graceful shutdown") < messages.index("grpc server stopped")


def test_new_rpcs_are_refused_during_shutdown(free_port):
    env = {
        **os.environ,
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(free_port),
        "METRICS_PORT": "-1",
        "SHUTDOWN_GRACE_S": "10",
    }
    proc = spawn(
        [sys.executable, "-m", "tests.support.probe_service"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_health(free_port, health_pb2.HealthCheckResponse.SERVING)
        with grpc.insecure_channel(f"127.0.0.1:{free_port}") as chan:
            stub = encoder_pb2_grpc.EncoderServiceStub(chan)
            slow = stub.EmbedTexts.future(encoder_pb2.EmbedTextsRequest(texts=["slow:2"]))
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            with pytest.raises(grpc.RpcError) as err:
                stub.EmbedTexts(encoder_pb2.EmbedTextsRequest(texts=["a"]), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert slow.result(timeout=20).model_id == "probe"
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_missing_required_setting_stops_naming_it(free_port):
    code = (
        "from pydantic import Field\n"
        "from styleloop.runtime.settings import ServiceSettings, load_settings\n"
        "class S(ServiceSettings):\n"
        "    encoder_addr: str = Field()\n"
        "load_settings(S)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ENCODER_ADDR"}
    env["GRPC_PORT"] = "not-a-port"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "missing required setting ENCODER_ADDR" in result.stderr
    assert "invalid setting GRPC_PORT" in result.stderr
    assert "Traceback" not in result.stderr


async def probe_server(**settings: object) -> GrpcServer:
    """A started probe server on a free port, without metrics, with these settings."""
    values = {"service_name": "probe", "grpc_host": "127.0.0.1", "grpc_port": 0}
    srv = GrpcServer(
        ServiceSettings(**{**values, "metrics_port": -1, **settings}), register, [SERVICE_NAME]
    )
    await srv.start()
    return srv


async def test_a_service_token_is_required_for_every_rpc_but_health():
    srv = await probe_server(service_token="s3cret-token")
    await srv.set_ready()
    address = f"127.0.0.1:{srv.port}"
    request = encoder_pb2.EmbedTextsRequest(texts=["hello"])
    try:
        for token in ("", "wrong-token"):
            async with aio_channel(address, token) as chan:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await encoder_pb2_grpc.EncoderServiceStub(chan).EmbedTexts(request, timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                # Probes send no metadata: health answers all the same.
                assert await health_status(chan, "") == health_pb2.HealthCheckResponse.SERVING
        async with aio_channel(address, "s3cret-token") as chan:
            reply = await encoder_pb2_grpc.EncoderServiceStub(chan).EmbedTexts(request, timeout=5)
            assert reply.model_id == "probe"
    finally:
        await srv.stop(grace=0)


def test_production_needs_a_service_token_and_the_default_address_is_loopback():
    from pydantic import ValidationError

    assert ServiceSettings().grpc_host == "127.0.0.1"
    with pytest.raises(ValidationError, match="SERVICE_TOKEN"):
        ServiceSettings(environment="production")
    assert ServiceSettings(environment="production", service_token="t").environment


async def test_concurrent_rpcs_beyond_the_bound_are_refused_not_queued():
    srv = await probe_server(grpc_max_concurrent_rpcs=2)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as chan:
            stub = encoder_pb2_grpc.EncoderServiceStub(chan)
            slow = [
                asyncio.ensure_future(
                    stub.EmbedTexts(encoder_pb2.EmbedTextsRequest(texts=["slow:1.5"]), timeout=10)
                )
                for _ in range(2)
            ]
            await asyncio.sleep(0.5)  # both are being served
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.EmbedTexts(encoder_pb2.EmbedTextsRequest(texts=["x"]), timeout=5)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert all(r.model_id == "probe" for r in await asyncio.gather(*slow))
    finally:
        await srv.stop(grace=0)
