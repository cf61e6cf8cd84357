"""The recommender as the trainer uses it: RecordInteraction over gRPC.

Transport failures and a busy or starting recommender are :class:`Transient` (the event
is retried and stays uncommitted); an unknown item or a refused event is a domain error
(the event is dead-lettered with the reason).
"""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.trainer.core import Transient
from styleloop.runtime.auth import aio_channel
from styleloop.runtime.errors import InvalidArgument, NotFound
from styleloop.runtime.server import status_reason
from styleloop.v1 import recommender_pb2, recommender_pb2_grpc


class RecommenderInteractions:
    def __init__(self, address: str, timeout_s: float, token: str = "") -> None:
        self.channel = aio_channel(address, token)
        self.stub = recommender_pb2_grpc.RecommenderServiceStub(self.channel)
        self.timeout_s = timeout_s

    async def record(
        self, user_id: str, item_id: str, kind: int, event_time: float | None, event_id: str
    ) -> bool:
        request = recommender_pb2.RecordInteractionRequest(
            user_id=user_id,
            item_id=item_id,
            kind=kind,  # type: ignore[arg-type]
            event_id=event_id,
        )
        if event_time is not None:
            stamp = Timestamp()
            stamp.FromNanoseconds(int(event_time * 1e9))
            request.event_time.CopyFrom(stamp)
        try:
            reply = await self.stub.RecordInteraction(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            code, reason = exc.code(), status_reason(exc) or ""
            if code == grpc.StatusCode.NOT_FOUND:
                raise NotFound(exc.details() or "not found", reason=reason or "NOT_FOUND") from None
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument(
                    exc.details() or "invalid", reason=reason or "INVALID_ARGUMENT"
                ) from None
            # Unavailable, deadline, busy, a wrong token: never drop the event for it.
            raise Transient(f"{code.name}: {exc.details()}") from None
        return bool(reply.applied)

    async def close(self) -> None:
        await self.channel.close()
