"""The llm's view of the captioner: what an attached photo shows, in words.

A caption is a help, not a need: when the captioner is not configured, is down or cannot
read the photo, the chat goes on without one (logged and counted), since the photo is
embedded by the recommender either way."""

from __future__ import annotations

import logging
import time

import grpc
from prometheus_client import Counter

from styleloop.runtime.auth import aio_channel
from styleloop.runtime.logging import request_id_var
from styleloop.runtime.server import REQUEST_ID_METADATA_KEY
from styleloop.v1 import captioner_pb2, captioner_pb2_grpc

log = logging.getLogger(__name__)

FAILED = Counter(
    "llm_photo_captions_failed_total", "Photos answered without a caption.", ["reason"]
)


class PhotoCaptioner:
    def __init__(self, address: str, timeout_s: float, token: str = "") -> None:
        self.timeout_s = timeout_s
        self.channel = aio_channel(address, token)
        self.stub = captioner_pb2_grpc.CaptionerServiceStub(self.channel)

    async def caption(self, image: bytes, deadline: float | None = None) -> str:
        """The photo's caption, or "" when there is none to be had."""
        timeout = self.timeout_s
        if deadline is not None:
            timeout = max(0.01, min(timeout, deadline - time.monotonic()))
        request_id = request_id_var.get()
        metadata = ((REQUEST_ID_METADATA_KEY, request_id),) if request_id else ()
        try:
            reply = await self.stub.CaptionImages(
                captioner_pb2.CaptionImagesRequest(images=[image]),
                timeout=timeout,
                metadata=metadata,
            )
        except grpc.aio.AioRpcError as exc:
            FAILED.labels(exc.code().name).inc()
            log.warning("photo not captioned", extra={"code": exc.code().name})
            return ""
        result = reply.results[0] if reply.results else None
        if result is None or result.WhichOneof("result") != "caption":
            FAILED.labels(result.error.reason if result is not None else "EMPTY").inc()
            return ""
        return str(result.caption.text)

    async def close(self) -> None:
        await self.channel.close()
