"""The recommender's view of the encoder service: a gRPC client with deadlines."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import grpc

from styleloop.runtime.auth import aio_channel
from styleloop.runtime.errors import InvalidArgument, ItemFailure, Unavailable
from styleloop.runtime.logging import request_id_var
from styleloop.runtime.server import REQUEST_ID_METADATA_KEY
from styleloop.v1 import encoder_pb2, encoder_pb2_grpc

Vector = list[float]


@dataclass(frozen=True)
class EncoderModel:
    model_id: str
    model_version: str
    image_dimension: int
    text_dimension: int
    shared_space: bool


class EncoderClient:
    """Calls EncoderService with a timeout on every call; transport problems become
    :class:`Unavailable`, never a hang."""

    def __init__(
        self, address: str, timeout_s: float, batch_limit: int = 64, token: str = ""
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.batch_limit = batch_limit
        self.channel = aio_channel(address, token)
        self.stub = encoder_pb2_grpc.EncoderServiceStub(self.channel)
        self.model: EncoderModel | None = None

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        request_id = request_id_var.get()
        return ((REQUEST_ID_METADATA_KEY, request_id),) if request_id else ()

    async def connect(self, wait_s: float) -> EncoderModel:
        """Learn which model the encoder serves, retrying while it starts (up to ``wait_s``)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                info = await self.stub.GetEncoderInfo(
                    encoder_pb2.GetEncoderInfoRequest(), timeout=self.timeout_s
                )
                break
            except grpc.aio.AioRpcError as exc:
                if time.monotonic() > deadline:
                    raise Unavailable(
                        f"the encoder at {self.address} is unavailable: {exc.code().name}"
                    ) from None
                await asyncio.sleep(0.5)
        model = info.model
        self.model = EncoderModel(
            model.model_id,
            model.model_version,
            model.image_dimension,
            model.text_dimension,
            model.shared_space,
        )
        return self.model

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout_s, metadata=self._metadata())
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument(f"the encoder refused the request: {exc.details()}") from None
            raise Unavailable(
                f"the encoder is unavailable ({exc.code().name}); retry",
                reason="ENCODER_UNAVAILABLE",
            ) from None

    @staticmethod
    def _unpack(results: Any) -> list[Vector | ItemFailure]:
        return [
            list(r.embedding.values)
            if r.WhichOneof("result") == "embedding"
            else ItemFailure(r.error.reason, r.error.message)
            for r in results
        ]

    async def embed_images(self, images: list[bytes]) -> list[Vector | ItemFailure]:
        out: list[Vector | ItemFailure] = []
        for start in range(0, len(images), self.batch_limit):
            request = encoder_pb2.EmbedImagesRequest(
                images=images[start : start + self.batch_limit]
            )
            out += self._unpack((await self._call(self.stub.EmbedImages, request)).results)
        return out

    async def embed_texts(self, texts: list[str]) -> list[Vector | ItemFailure]:
        out: list[Vector | ItemFailure] = []
        for start in range(0, len(texts), self.batch_limit):
            request = encoder_pb2.EmbedTextsRequest(texts=texts[start : start + self.batch_limit])
            out += self._unpack((await self._call(self.stub.EmbedTexts, request)).results)
        return out

    async def close(self) -> None:
        await self.channel.close()
