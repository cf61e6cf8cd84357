"""CaptionerService over gRPC: thin — proto in, core, proto out."""

from __future__ import annotations

import grpc

from services.captioner.core import CaptionerCore
from styleloop.runtime.errors import ItemFailure
from styleloop.runtime.server import model_info
from styleloop.v1 import captioner_pb2, captioner_pb2_grpc, common_pb2

SERVICE_NAME = captioner_pb2.DESCRIPTOR.services_by_name["CaptionerService"].full_name


class CaptionerServicer(captioner_pb2_grpc.CaptionerServiceServicer):
    def __init__(self, core: CaptionerCore) -> None:
        self.core = core

    async def CaptionImages(  # noqa: N802 - generated name
        self, request: captioner_pb2.CaptionImagesRequest, context: grpc.aio.ServicerContext
    ) -> captioner_pb2.CaptionImagesResponse:
        outcomes = await self.core.caption(
            list(request.images), request.prompt, request.max_new_tokens
        )
        results = []
        for outcome in outcomes:
            if isinstance(outcome, ItemFailure):
                error = common_pb2.ItemError(reason=outcome.reason, message=outcome.message)
                results.append(captioner_pb2.CaptionResult(error=error))
            else:
                caption = captioner_pb2.Caption(
                    text=outcome.text,
                    attributes=[
                        captioner_pb2.CaptionAttribute(
                            name=a.name, value=a.value, confidence=a.confidence
                        )
                        for a in outcome.attributes
                    ],
                    generated_tokens=outcome.generated_tokens,
                )
                results.append(captioner_pb2.CaptionResult(caption=caption))
        info = self.core.info
        return captioner_pb2.CaptionImagesResponse(
            model_id=info.model_id, model_version=info.model_version, results=results
        )

    async def GetCaptionerInfo(  # noqa: N802 - generated name
        self, request: captioner_pb2.GetCaptionerInfoRequest, context: grpc.aio.ServicerContext
    ) -> captioner_pb2.GetCaptionerInfoResponse:
        info = self.core.info
        return captioner_pb2.GetCaptionerInfoResponse(
            model=model_info(info),
            default_prompt=info.default_prompt,
        )


def register(core: CaptionerCore):  # type: ignore[no-untyped-def]
    """A registrar for :class:`styleloop.runtime.server.GrpcServer`."""

    def add(server: grpc.aio.Server) -> None:
        captioner_pb2_grpc.add_CaptionerServiceServicer_to_server(CaptionerServicer(core), server)

    return add
