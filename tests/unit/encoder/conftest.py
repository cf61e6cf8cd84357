"""Encoder fixtures: tiny models prepared once, an encoder service on 127.0.0.1:0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from services.encoder.config import EncoderSettings
from services.encoder.core import build_encoder
from services.encoder.servicer import SERVICE_NAME, register
from styleloop.runtime.server import GrpcServer


def encoder_settings(models_dir: Path, **overrides) -> EncoderSettings:
    values = {
        "models_dir": models_dir,
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_port": -1,
        **overrides,
    }
    return EncoderSettings(**values)


async def start_encoder(settings: EncoderSettings) -> tuple[GrpcServer, object]:
    encoder = build_encoder(settings)
    server = GrpcServer(settings, register(encoder), [SERVICE_NAME])
    await server.start()
    try:
        await encoder.start()
    except BaseException:
        await server.stop(grace=0)
        await encoder.stop()
        raise
    await server.set_ready()
    return server, encoder


@pytest.fixture
async def encoder_channel(tiny_models: Path) -> AsyncIterator[grpc.aio.Channel]:
    server, encoder = await start_encoder(encoder_settings(tiny_models, max_batch_wait_ms=20))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield channel
    finally:
        await server.stop(grace=0)
        await encoder.stop()
