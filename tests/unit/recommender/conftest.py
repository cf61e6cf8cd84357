"""A real encoder (tiny) and a real recommender, both served on 127.0.0.1:0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.recommender.config import RecommenderSettings
from services.recommender.core import build_recommender
from services.recommender.servicer import SERVICE_NAME, RecommenderServicer
from styleloop.runtime.server import GrpcServer
from styleloop.v1 import common_pb2, recommender_pb2, recommender_pb2_grpc
from tests.unit.encoder.conftest import encoder_settings, start_encoder


@dataclass
class Stack:
    stub: recommender_pb2_grpc.RecommenderServiceStub
    encoder_server: GrpcServer
    settings: RecommenderSettings
    servicer: RecommenderServicer


async def start_recommender(
    settings: RecommenderSettings,
) -> tuple[GrpcServer, RecommenderServicer]:
    servicer = RecommenderServicer()
    server = GrpcServer(settings, servicer.register, [SERVICE_NAME])
    await server.start()
    servicer.attach(await build_recommender(settings))
    await server.set_ready()
    return server, servicer


def recommender_settings(
    encoder_port: int, tmp_path: Path, **overrides: Any
) -> RecommenderSettings:
    """A recommender on 127.0.0.1:0 with its stores under ``tmp_path``, calling the encoder
    on ``encoder_port``."""
    values: dict[str, Any] = {
        "encoder_addr": f"127.0.0.1:{encoder_port}",
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_port": -1,
        "store_backend": "edge",
        "data_dir": tmp_path / "edge",
        "qdrant_url": str(tmp_path / "qdrant-local"),
        "encoder_timeout_s": 5,
        "encoder_wait_s": 5,
    }
    return RecommenderSettings(**{**values, **overrides})


@pytest.fixture(params=["edge", "qdrant"])
async def stack(request, tiny_models: Path, tmp_path: Path) -> AsyncIterator[Stack]:
    enc_server, encoder = await start_encoder(encoder_settings(tiny_models))
    settings = recommender_settings(enc_server.port, tmp_path, store_backend=request.param)
    server, servicer = await start_recommender(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield Stack(
                recommender_pb2_grpc.RecommenderServiceStub(channel), enc_server, settings, servicer
            )
    finally:
        await server.stop(grace=0)
        await servicer.core.close()
        await enc_server.stop(grace=0)
        await encoder.stop()


async def upsert_vectors(
    stub: recommender_pb2_grpc.RecommenderServiceStub,
    version: str,
    rows: list[tuple[str, str, str, list[float], list[float]]],
) -> None:
    """Stores ``(item id, title, category, image vector, caption vector)`` rows."""
    await stub.UpsertItems(
        recommender_pb2.UpsertItemsRequest(
            items=[
                recommender_pb2.UpsertItem(
                    item=common_pb2.Item(item_id=i, title=t, category=c),
                    image_embedding=common_pb2.Embedding(values=image),
                    caption_embedding=common_pb2.Embedding(values=caption),
                    embedding_model_version=version,
                )
                for i, t, c, image, caption in rows
            ]
        ),
        timeout=30,
    )
