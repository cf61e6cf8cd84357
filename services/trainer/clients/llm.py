"""The llm service as the trainer uses it: make a published adapter serve."""

from __future__ import annotations

import grpc

from styleloop.runtime.auth import aio_channel
from styleloop.runtime.errors import Unavailable
from styleloop.v1 import llm_pb2, llm_pb2_grpc


class LlmAdapters:
    def __init__(self, address: str, timeout_s: float, token: str = "") -> None:
        self.channel = aio_channel(address, token)
        self.stub = llm_pb2_grpc.LlmServiceStub(self.channel)
        self.timeout_s = timeout_s

    async def activate(self, adapter_id: str) -> None:
        try:
            await self.stub.SetActiveAdapter(
                llm_pb2.SetActiveAdapterRequest(adapter_id=adapter_id), timeout=self.timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                f"llm SetActiveAdapter({adapter_id}): {exc.code().name} {exc.details()}",
                reason="LLM_UNAVAILABLE",
            ) from None

    async def close(self) -> None:
        await self.channel.close()
