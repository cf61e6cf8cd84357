"""The llm service as the trainer uses it: make a published adapter serve, and ask it the
chat evaluation's questions with a chosen adapter."""

from __future__ import annotations

import time
from typing import Any

import grpc

from services.llm.clients.events import FINISH
from styleloop.chat_questions import Question
from styleloop.eval_chat import Outcome, score
from styleloop.runtime.auth import aio_channel
from styleloop.runtime.errors import Unavailable
from styleloop.v1 import llm_pb2, llm_pb2_grpc

ITEM_FIELDS = ("title", "brand", "article_type", "colour", "season", "usage", "gender", "year")
FINISH_NAMES = {proto: name for name, proto in FINISH.items()}  # the llm's own table, reversed


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

    async def ask(
        self, question: Question, adapter_id: str, max_new_tokens: int = 48, timeout_s: float = 120
    ) -> Outcome:
        """One evaluation question answered by ``adapter_id`` (BASE_MODEL: the base model)."""
        out = Outcome(question.text, question.kind, question.answerable)
        items: dict[str, dict[str, Any]] = {}
        request = llm_pb2.ChatRequest(
            messages=[llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content=question.text)],
            user_id=f"trainer-eval-{adapter_id}",
            max_new_tokens=max_new_tokens,
            adapter_id=adapter_id,
        )
        started, first_text_at = time.perf_counter(), None
        try:
            async for chunk in self.stub.Chat(request, timeout=timeout_s):
                kind = chunk.WhichOneof("chunk")
                if kind == "retrieved":
                    items = {
                        s.item.item_id: {f: getattr(s.item, f) for f in ITEM_FIELDS}
                        for s in chunk.retrieved.items
                    }
                    out.retrieved = list(items)
                elif kind == "text_delta":
                    first_text_at = first_text_at or time.perf_counter()
                    out.text += chunk.text_delta
                elif kind == "item_reference":
                    out.cited.append(chunk.item_reference.item_id)
                elif kind == "finish":
                    out.finish = FINISH_NAMES.get(chunk.finish.finish_reason, "stop")
                    out.adapter_id = chunk.finish.adapter_id
                    out.answer_id = chunk.finish.answer_id
                    out.completion_tokens = chunk.finish.completion_tokens
        except grpc.aio.AioRpcError as exc:
            out.error = f"{exc.code().name}: {exc.details()}"
            return out
        return score(out, question, items, started, first_text_at)

    async def close(self) -> None:
        await self.channel.close()
