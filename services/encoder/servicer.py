"""EncoderService over gRPC: thin — proto in, core, proto out."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from services.encoder.core import Encoder, Outcome
from styleloop.runtime.errors import ItemFailure
from styleloop.runtime.server import model_info
from styleloop.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc

SERVICE_NAME = encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"].full_name


def _results(outcomes: Sequence[Outcome]) -> list[encoder_pb2.EmbeddingResult]:
    results = []
    for outcome in outcomes:
        if isinstance(outcome, ItemFailure):
            error = common_pb2.ItemError(reason=outcome.reason, message=outcome.message)
            results.append(encoder_pb2.EmbeddingResult(error=error))
        else:
            vector = common_pb2.Embedding(values=outcome.tolist())
            results.append(encoder_pb2.EmbeddingResult(embedding=vector))
    return results


class EncoderServicer(encoder_pb2_grpc.EncoderServiceServicer):
    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    async def EmbedImages(  # noqa: N802 - generated name
        self, request: encoder_pb2.EmbedImagesRequest, context: grpc.aio.ServicerContext
    ) -> encoder_pb2.EmbedImagesResponse:
        outcomes = await self.encoder.embed_images(list(request.images))
        info = self.encoder.info
        return encoder_pb2.EmbedImagesResponse(
            model_id=info.model_id,
            model_version=info.model_version,
            dimension=info.image_dimension,
            results=_results(outcomes),
        )

    async def EmbedTexts(  # noqa: N802 - generated name
        self, request: encoder_pb2.EmbedTextsRequest, context: grpc.aio.ServicerContext
    ) -> encoder_pb2.EmbedTextsResponse:
        outcomes = await self.encoder.embed_texts(list(request.texts))
        info = self.encoder.info
        return encoder_pb2.EmbedTextsResponse(
            model_id=info.model_id,
            model_version=info.model_version,
            dimension=info.text_dimension,
            results=_results(outcomes),
        )

    async def GetEncoderInfo(  # noqa: N802 - generated name
        self, request: encoder_pb2.GetEncoderInfoRequest, context: grpc.aio.ServicerContext
    ) -> encoder_pb2.GetEncoderInfoResponse:
        info = self.encoder.info
        return encoder_pb2.GetEncoderInfoResponse(model=model_info(info))


def register(encoder: Encoder):  # type: ignore[no-untyped-def]
    """A registrar for :class:`styleloop.runtime.server.GrpcServer`."""

    def add(server: grpc.aio.Server) -> None:
        encoder_pb2_grpc.add_EncoderServiceServicer_to_server(EncoderServicer(encoder), server)

    return add
