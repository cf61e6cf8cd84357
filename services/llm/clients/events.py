"""Chat-turn events into Kafka (``styleloop.chat.v1``, keyed by user id) through the same
durable producer the gateway's feedback uses: nothing is lost while the broker is away."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from services.llm.clients.recommender import item_proto
from services.llm.core import ChatTurn
from styleloop.runtime.logging import request_id_var
from styleloop.runtime.producer import DurableProducer
from styleloop.v1 import events_pb2, llm_pb2

FINISH = {
    "stop": llm_pb2.FINISH_REASON_STOP,
    "length": llm_pb2.FINISH_REASON_LENGTH,
    "no_items": llm_pb2.FINISH_REASON_NO_ITEMS,
}


def to_event(turn: ChatTurn) -> events_pb2.ChatTurnEvent:
    event = events_pb2.ChatTurnEvent(
        event_id=uuid.uuid4().hex,
        answer_id=turn.answer_id,
        user_id=turn.user_id,
        conversation_id=turn.conversation_id,
        request_id=request_id_var.get() or "",
        conversation=[
            events_pb2.ChatTurnMessage(role=m.role, content=m.content) for m in turn.messages
        ],
        prompt=[events_pb2.ChatTurnMessage(role=r, content=c) for r, c in turn.prompt],
        cards=[
            events_pb2.ChatCard(
                number=n,
                score=i.score,
                similarity=i.similarity,
                item=item_proto(i),
            )
            for n, i in enumerate(turn.items, 1)
        ],
        text=turn.text,
        cited_item_ids=turn.cited_ids,
        finish_reason=FINISH[turn.finish],
        adapter_id=turn.adapter_id,
        model_id=turn.model_id,
        model_version=turn.model_version,
        prompt_tokens=turn.prompt_tokens,
        completion_tokens=turn.completion_tokens,
    )
    if turn.plan is not None:
        event.constraints.extend(
            events_pb2.ChatConstraint(field=f, values=list(v)) for f, v in turn.plan.filters.items()
        )
        event.missing.extend(m.asked for m in turn.plan.missing)
    event.event_time.FromDatetime(datetime.now(UTC))
    return event


class ChatEvents:
    """Publishes each chat turn; while Kafka is unreachable, turns wait in the spool."""

    def __init__(self, producer: DurableProducer) -> None:
        self.producer = producer

    async def publish(self, turn: ChatTurn) -> None:
        event = to_event(turn)
        await self.producer.publish([(turn.user_id.encode(), event.SerializeToString())])
