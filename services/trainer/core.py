"""What the trainer does with one event, without Kafka or gRPC.

A feedback event (``styleloop.feedback.v1``) is checked, applied at once to the shopper's
state in the recommender when it is a like, rejection or purchase (the immediate path:
the next recommendations, searches and chat retrieval of that shopper change), and, when
it names a chat answer, kept to make preference pairs. A chat turn
(``styleloop.chat.v1``) is kept for the same pairs. Each event's effects are durable
(:class:`~services.trainer.ledger.Ledger`) before :meth:`TrainerCore.handle` returns, so
the consumer may commit its offset then.

An event that cannot be decoded or that refers to nothing is answered with a
dead-letter reason; a recommender that cannot be reached is retried with backoff, for as
long as it takes (the event is not committed meanwhile), until the trainer stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from google.protobuf.message import DecodeError
from prometheus_client import Counter, Histogram

from services.llm.cards import answer_citing
from services.trainer.ledger import AnswerFeedback, Ledger, Pair, pair_id, split_of
from styleloop.runtime.errors import InvalidArgument, NotFound
from styleloop.v1 import common_pb2, events_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")

CONSUMED = Counter(
    "trainer_events_consumed_total",
    "Events handled, by topic and outcome (applied, already_applied, stored, duplicate, "
    "dead_lettered).",
    ["topic", "outcome"],
)
RETRIES = Counter(
    "trainer_event_retries_total", "Attempts that failed and were retried, by cause.", ["cause"]
)
PAIRS = Counter(
    "trainer_pairs_total", "Preference pairs added to the dataset, by split.", ["split"]
)
EFFECT_LATENCY = Histogram(
    "trainer_event_to_effect_seconds",
    "From the gateway receiving a feedback event to its effect in the recommender.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)


def kind_name(kind: int) -> str | None:
    """ "reject" for INTERACTION_KIND_REJECT (the proto's own names); None when unknown."""
    if kind == common_pb2.INTERACTION_KIND_UNSPECIFIED:
        return None
    try:
        return common_pb2.InteractionKind.Name(kind).removeprefix("INTERACTION_KIND_").lower()  # type: ignore[arg-type]
    except ValueError:
        return None


# What changes the shopper's state in the recommender.
APPLIED = frozenset({"like", "reject", "purchase"})
# What makes an answer the chosen side of a pair, and the rejected side.
WANTED = frozenset({"like", "click", "purchase"})


class Stopping(Exception):
    """The trainer is stopping while an event waits to be retried: it stays uncommitted."""


class Transient(Exception):
    """The recommender could not take the event now; try again later."""


class Interactions(Protocol):
    """The recommender as the trainer needs it."""

    async def record(
        self, user_id: str, item_id: str, kind: int, event_time: float | None, event_id: str
    ) -> bool:
        """True when applied, False when the event id had been applied before; raises
        :class:`Transient`, or :class:`NotFound` / :class:`InvalidArgument` for an event
        that refers to nothing."""
        ...


@dataclass(frozen=True)
class Outcome:
    outcome: str
    reason: str = ""  # why it was dead-lettered
    pairs: tuple[Pair, ...] = ()

    @property
    def dead_letter(self) -> bool:
        return self.outcome == "dead_lettered"


def pairs_for(
    turn: events_pb2.ChatTurnEvent,
    feedback: Sequence[AnswerFeedback],
    eval_percent: int,
    created: float,
) -> list[Pair]:
    """Every (wanted card, rejected card) of one answer as two answers to its exact
    prompt, each citing one card in the form of the served answer
    (:func:`~services.llm.cards.answer_citing`). An item's latest feedback is what
    counts."""
    if not turn.prompt or not turn.cards:
        return []
    cards = {c.item.item_id: c for c in turn.cards}
    latest: dict[str, AnswerFeedback] = {}
    for f in feedback:
        if f.item_id in cards:
            latest.pop(f.item_id, None)
            latest[f.item_id] = f
    wanted = [f for f in latest.values() if f.kind in WANTED]
    rejected = [f for f in latest.values() if f.kind == "reject"]
    prompt = [(m.role, m.content) for m in turn.prompt]
    shown = "\n".join(m.content for m in turn.prompt if m.role == "user")
    answers = {  # each judged card's one-card answer, once (a card is in many pairs)
        i: answer_citing(cards[i].number, cards[i].item.title, turn.text, shown) for i in latest
    }
    split = split_of(turn.answer_id, eval_percent)
    out = []
    for good in wanted:
        for bad in rejected:
            out.append(
                Pair(
                    pair_id=pair_id(turn.answer_id, good.item_id, bad.item_id),
                    answer_id=turn.answer_id,
                    split=split,
                    prompt=prompt,
                    chosen=answers[good.item_id],
                    rejected=answers[bad.item_id],
                    chosen_item_id=good.item_id,
                    rejected_item_id=bad.item_id,
                    provenance={
                        "turn_event_id": turn.event_id,
                        "chosen_event_id": good.event_id,
                        "rejected_event_id": bad.event_id,
                        "user_id": turn.user_id,
                        "model_id": turn.model_id,
                        "model_version": turn.model_version,
                    },
                    adapter_id=turn.adapter_id,
                    created=created,
                )
            )
    return out


class TrainerCore:
    def __init__(
        self,
        ledger: Ledger,
        interactions: Interactions,
        *,
        feedback_topic: str,
        chat_topic: str,
        immediate: bool = True,
        eval_percent: int = 20,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        self.ledger = ledger
        self.interactions = interactions
        self.feedback_topic, self.chat_topic = feedback_topic, chat_topic
        self.immediate = immediate
        self.eval_percent = eval_percent
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self.stopping = asyncio.Event()

    async def _disk(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(call, *args)

    async def handle(self, topic: str, value: bytes | None) -> Outcome:
        """The event's outcome once its effects are durable; :class:`Stopping` when the
        trainer stops before it could be applied."""
        if topic == self.feedback_topic:
            outcome = await self._feedback(value or b"")
        elif topic == self.chat_topic:
            outcome = await self._turn(value or b"")
        else:
            outcome = Outcome("dead_lettered", f"no handler for topic {topic!r}")
        CONSUMED.labels(topic, outcome.outcome).inc()
        for p in outcome.pairs:
            PAIRS.labels(p.split).inc()
        return outcome

    # ------------------------------------------------------------------ feedback

    async def _feedback(self, value: bytes) -> Outcome:
        try:
            event = events_pb2.FeedbackEvent.FromString(value)
        except DecodeError as exc:
            return Outcome("dead_lettered", f"not a FeedbackEvent: {exc}")
        missing = [f for f in ("event_id", "user_id", "item_id") if not getattr(event, f).strip()]
        if missing:
            return await self._dead(event.event_id, f"missing {', '.join(missing)}")
        kind = kind_name(event.kind)
        if kind is None:
            return await self._dead(event.event_id, f"unknown interaction kind {event.kind}")
        if await self._disk(self.ledger.seen, event.event_id):
            return Outcome("duplicate")
        outcome = "stored"
        if self.immediate and kind in APPLIED:
            when = event.event_time.ToNanoseconds() / 1e9 if event.HasField("event_time") else None
            try:
                applied = await self._retrying(
                    lambda: self.interactions.record(
                        event.user_id, event.item_id, event.kind, when, event.event_id
                    )
                )
            except NotFound as exc:
                return await self._dead(event.event_id, f"unknown item: {exc.message}")
            except InvalidArgument as exc:
                return await self._dead(event.event_id, f"refused: {exc.message}")
            outcome = "applied" if applied else "already_applied"
            if event.HasField("receive_time"):
                EFFECT_LATENCY.observe(
                    max(0.0, time.time() - event.receive_time.ToNanoseconds() / 1e9)
                )
        now = time.time()

        def pairs(turn: bytes, feedback: list[AnswerFeedback]) -> list[Pair]:
            answered = events_pb2.ChatTurnEvent.FromString(turn)
            return pairs_for(answered, feedback, self.eval_percent, now)

        added = await self._disk(
            self.ledger.record_feedback,
            event.event_id,
            self.feedback_topic,
            outcome,
            event.context.answer_id,
            event.user_id,
            event.item_id,
            kind,
            pairs,
        )
        return Outcome(outcome, pairs=tuple(added))

    async def _retrying(self, call: Callable[[], Awaitable[bool]]) -> bool:
        wait = self.retry_initial_s
        while True:
            try:
                return await call()
            except Transient as exc:
                RETRIES.labels("recommender").inc()
                log.warning(
                    "recommender unavailable; retrying", extra={"error": str(exc), "wait_s": wait}
                )
            if self.stopping.is_set():
                raise Stopping()
            try:
                await asyncio.wait_for(self.stopping.wait(), wait)
                raise Stopping()
            except TimeoutError:
                pass
            wait = min(self.retry_max_s, wait * 2)

    async def _dead(self, event_id: str, reason: str) -> Outcome:
        if event_id.strip():
            await self._disk(
                self.ledger.record_event, event_id, self.feedback_topic, "dead_lettered"
            )
        return Outcome("dead_lettered", reason)

    # ------------------------------------------------------------------ chat turns

    async def _turn(self, value: bytes) -> Outcome:
        try:
            turn = events_pb2.ChatTurnEvent.FromString(value)
        except DecodeError as exc:
            return Outcome("dead_lettered", f"not a ChatTurnEvent: {exc}")
        missing = [f for f in ("event_id", "answer_id") if not getattr(turn, f).strip()]
        if missing:
            return Outcome("dead_lettered", f"missing {', '.join(missing)}")
        if await self._disk(self.ledger.seen, turn.event_id):
            return Outcome("duplicate")
        now = time.time()
        added = await self._disk(
            self.ledger.record_turn,
            turn.event_id,
            self.chat_topic,
            turn.answer_id,
            turn.user_id,
            value,
            lambda feedback: pairs_for(turn, feedback, self.eval_percent, now),
        )
        return Outcome("stored", pairs=tuple(added))
