"""LlmService over gRPC: thin — proto in, core, proto out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from services.llm.adapters import AdapterInfo, AdapterManager
from services.llm.cards import CardItem
from services.llm.clients.events import FINISH
from services.llm.clients.recommender import item_proto
from services.llm.core import (
    ChatCore,
    ChatInput,
    Finish,
    Message,
    Reference,
    Retrieved,
    TextDelta,
)
from styleloop.runtime.errors import InvalidArgument
from styleloop.v1 import common_pb2, llm_pb2, llm_pb2_grpc

SERVICE_NAME = llm_pb2.DESCRIPTOR.services_by_name["LlmService"].full_name
ROLES = {llm_pb2.CHAT_ROLE_USER: "user", llm_pb2.CHAT_ROLE_ASSISTANT: "assistant"}
MAX_PAGE = 100


def scored(item: CardItem) -> common_pb2.ScoredItem:
    return common_pb2.ScoredItem(
        item=item_proto(item), score=item.score, similarity=item.similarity
    )


def adapter_proto(info: AdapterInfo) -> llm_pb2.Adapter:
    created = timestamp_pb2.Timestamp()
    created.FromNanoseconds(int(info.create_time * 1e9))
    return llm_pb2.Adapter(
        adapter_id=info.adapter_id,
        base_model_id=info.base_model_id,
        create_time=created,
        metrics=dict(info.metrics),
    )


def chat_input(request: llm_pb2.ChatRequest, context: grpc.aio.ServicerContext) -> ChatInput:
    messages = []
    for number, m in enumerate(request.messages, 1):
        if m.role not in ROLES:
            raise InvalidArgument(
                f"message {number} has no role (CHAT_ROLE_USER or CHAT_ROLE_ASSISTANT)",
                reason="BAD_ROLE",
            )
        messages.append(Message(ROLES[m.role], m.content))  # type: ignore[arg-type]
    remaining = context.time_remaining()
    return ChatInput(
        messages=messages,
        user_id=request.user_id,
        conversation_id=request.conversation_id,
        image=request.image,
        base_filter=request.filter if request.HasField("filter") else None,
        max_items=request.max_items,
        max_new_tokens=request.max_new_tokens,
        temperature=request.temperature,
        adapter_id=request.adapter_id,
        deadline=time.monotonic() + remaining if remaining is not None else None,
    )


class LlmServicer(llm_pb2_grpc.LlmServiceServicer):
    def __init__(self, core: ChatCore, adapters: AdapterManager) -> None:
        self.core = core
        self.adapters = adapters

    async def Chat(  # noqa: N802 - generated name
        self, request: llm_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm_pb2.ChatResponse]:
        async for event in self.core.chat(chat_input(request, context)):
            if isinstance(event, Retrieved):
                yield llm_pb2.ChatResponse(
                    retrieved=llm_pb2.RetrievedItems(items=[scored(i) for i in event.items])
                )
            elif isinstance(event, TextDelta):
                yield llm_pb2.ChatResponse(text_delta=event.text)
            elif isinstance(event, Reference):
                yield llm_pb2.ChatResponse(
                    item_reference=llm_pb2.ItemReference(item_id=event.item_id, reason=event.reason)
                )
            elif isinstance(event, Finish):
                yield llm_pb2.ChatResponse(
                    finish=llm_pb2.ChatFinish(
                        finish_reason=FINISH[event.reason],
                        answer_id=event.answer_id,
                        adapter_id=event.adapter_id,
                        prompt_tokens=event.prompt_tokens,
                        completion_tokens=event.completion_tokens,
                    )
                )

    async def ListAdapters(  # noqa: N802 - generated name
        self, request: llm_pb2.ListAdaptersRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.ListAdaptersResponse:
        size = request.page_size or 20
        if not 0 < size <= MAX_PAGE:
            raise InvalidArgument(f"page_size must be 1..{MAX_PAGE}", reason="BAD_PAGE_SIZE")
        try:
            offset = int(request.page_token or "0")
        except ValueError:
            raise InvalidArgument(
                "a page_token this service did not issue", reason="BAD_PAGE_TOKEN"
            ) from None
        everything = self.adapters.registry.list()
        page = everything[offset : offset + size]
        more = offset + size < len(everything)
        return llm_pb2.ListAdaptersResponse(
            adapters=[adapter_proto(a) for a in page],
            next_page_token=str(offset + size) if more else "",
        )

    async def GetActiveAdapter(  # noqa: N802 - generated name
        self, request: llm_pb2.GetActiveAdapterRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.GetActiveAdapterResponse:
        active = self.adapters.active
        backend = self.core.backend
        response = llm_pb2.GetActiveAdapterResponse(
            model=common_pb2.ModelInfo(
                model_id=backend.model_id, model_version=backend.model_version
            )
        )
        if active is not None:
            response.adapter.CopyFrom(adapter_proto(active))
        return response

    async def SetActiveAdapter(  # noqa: N802 - generated name
        self, request: llm_pb2.SetActiveAdapterRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.SetActiveAdapterResponse:
        info = await self.adapters.activate(request.adapter_id)
        response = llm_pb2.SetActiveAdapterResponse()
        if info is not None:
            response.adapter.CopyFrom(adapter_proto(info))
        return response


def register(core: ChatCore, adapters: AdapterManager) -> Any:
    """A registrar for :class:`styleloop.runtime.server.GrpcServer`."""

    def add(server: grpc.aio.Server) -> None:
        llm_pb2_grpc.add_LlmServiceServicer_to_server(LlmServicer(core, adapters), server)

    return add
