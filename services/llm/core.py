"""Grounded chat, with no gRPC: plan → retrieve → answer from numbered cards → publish.

1. The conversation becomes a retrieval plan (:mod:`services.llm.planner`) over the
   catalog's own vocabularies (``GetFacets``, refreshed every ``VOCABULARY_REFRESH_S``).
2. A request for what the catalog lacks, or one no item fits (filters that match nothing,
   or a text search whose closest item is under the similarity floor that `styleloop
   calibrate` drew from the catalog), is answered plainly with ``no_items`` and no
   generation.
3. Otherwise the items come from the recommender, personalised for the shopper (their
   rejected and bought items and near-duplicates of rejected ones never come back; their
   likes pull), go into the prompt as numbered cards (followed by the shopper's newest
   rejected and liked items, ``HISTORY_ITEMS`` of each), and the backend generates an answer
   whose citations are constrained while decoding; each completed citation becomes a
   :class:`Reference`, and :func:`services.llm.grounding.guard` checks the final text.
4. The finished answer is published as a chat-turn event for the trainer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import Counter, Histogram

from services.llm.backends import Backend, Finished, GenerationRequest
from services.llm.calibration import SimilarityFloor, closest_similarity
from services.llm.cards import CardItem, History, build_messages, reason_for
from services.llm.clients.recommender import Catalog
from services.llm.config import LlmSettings
from services.llm.grounding import CitationState, guard
from services.llm.planner import Plan, Turn, Vocabulary, plan_conversation
from styleloop.runtime.errors import InvalidArgument, Unavailable

log = logging.getLogger(__name__)

ANSWERS = Counter("llm_answers_total", "Chat answers by how they ended.", ["finish"])
BELOW_FLOOR = Counter(
    "llm_below_similarity_floor_total",
    "Text searches whose closest item was under the similarity floor (answered no_items).",
)
TTFT = Histogram(
    "llm_time_to_first_token_seconds",
    "From the request to the first generated text, in seconds.",
    buckets=(0.1, 0.25, 0.5, 1, 1.5, 2.5, 5, 10, 30),
)

EMPTY_REFRESH_S = 2.0
# The piece that completes an outfit when the shopper names none: by the anchor's category.
COMPLEMENT = {
    "Topwear": "Bottomwear",
    "Bottomwear": "Topwear",
    "Dress": "Shoes",
    "Shoes": "Bottomwear",
    "Sandal": "Bottomwear",
    "Flip Flops": "Bottomwear",
}
FinishReason = Literal["stop", "length", "no_items"]


@dataclass(frozen=True)
class Message:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class ChatInput:
    messages: Sequence[Message]
    user_id: str = ""
    conversation_id: str = ""
    image: bytes = b""
    base_filter: Any = None  # the caller's ItemFilter, intersected with the plan's
    max_items: int = 0
    max_new_tokens: int = 0
    temperature: float = 0.0
    deadline: float | None = None  # time.monotonic() by which the answer must be done
    adapter_id: str = ""  # a published adapter instead of the serving one ("base": none)


@dataclass(frozen=True)
class Retrieved:
    items: list[CardItem]


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Reference:
    item_id: str
    reason: str


@dataclass(frozen=True)
class Finish:
    reason: FinishReason
    answer_id: str
    adapter_id: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


Event = Retrieved | TextDelta | Reference | Finish


@dataclass
class ChatTurn:
    """What one answer was, for the chat-turn event."""

    answer_id: str
    user_id: str
    conversation_id: str
    messages: Sequence[Message]
    prompt: Sequence[tuple[str, str]]
    items: list[CardItem]
    text: str
    cited_ids: list[str]
    finish: FinishReason
    adapter_id: str
    model_id: str
    model_version: str
    plan: Plan | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


Publish = Callable[[ChatTurn], Awaitable[None]]


def describe(plan: Plan) -> str:
    """The constraints of a plan in words: "Puma Men Fall 2011"."""
    f = plan.filters
    words = [
        *f.get("brand", ())[:1],
        *f.get("gender", ())[:1],
        *f.get("colour", ()),
        " / ".join(f.get("season", ())),
        *f.get("year", ()),
        *(f.get("article_type", ()) or f.get("category", ())),
    ]
    return " ".join(w for w in words if w) or f"“{plan.query}”"


def no_items_text(plan: Plan | None) -> str:
    if plan is not None and plan.missing:
        lacks = []
        for field_name, words in (
            ("brand", "no {} items"),
            ("article_type", "no {}"),
            ("season", "nothing from {}"),
            ("year", "nothing from {}"),
        ):
            asked = list(dict.fromkeys(m.asked for m in plan.missing if m.field == field_name))
            if asked:
                lacks.append(words.format(" or ".join(asked)))
        return f"I don't know: the StyleLoop catalog has {' and '.join(dict.fromkeys(lacks))}."
    what = describe(plan) if plan is not None else "that"
    return f"I don't know of anything in the catalog that fits {what}."


class ChatCore:
    def __init__(
        self,
        settings: LlmSettings,
        catalog: Catalog,
        backend: Backend,
        publish: Publish | None = None,
        adapter: Callable[[str], Awaitable[str]] | None = None,
        captioner: Any = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.backend = backend
        self.publish = publish
        self.adapter = adapter  # asked id ("" = the serving one) -> the id to answer with
        self.captioner = captioner  # clients.captioner.PhotoCaptioner, or None
        self.vocabulary: Vocabulary | None = None
        self._vocabulary_time = 0.0
        self.floor = SimilarityFloor(settings.min_similarity, settings.calibration_file)

    async def refresh_vocabulary(self) -> Vocabulary:
        self.vocabulary = Vocabulary.from_facets(await self.catalog.facets())
        self._vocabulary_time = time.monotonic()
        return self.vocabulary

    async def _current_vocabulary(self) -> Vocabulary:
        age = time.monotonic() - self._vocabulary_time
        empty = self.vocabulary is not None and not any(self.vocabulary.values.values())
        # An empty catalog (still being ingested) is looked at again every few seconds.
        stale = age > (EMPTY_REFRESH_S if empty else self.settings.vocabulary_refresh_s)
        if self.vocabulary is None or stale:
            try:
                return await self.refresh_vocabulary()
            except Unavailable:
                if self.vocabulary is None:
                    raise
        return self.vocabulary

    # ------------------------------------------------------------------ validation

    def check(self, request: ChatInput) -> None:
        s = self.settings
        if not request.messages:
            raise InvalidArgument("the conversation is empty", reason="NO_MESSAGES")
        if len(request.messages) > s.max_messages:
            raise InvalidArgument(
                f"the conversation has {len(request.messages)} messages; the most is "
                f"{s.max_messages}",
                reason="TOO_MANY_MESSAGES",
            )
        for number, message in enumerate(request.messages, 1):
            if message.role not in ("user", "assistant"):
                raise InvalidArgument(
                    f"message {number} has no role (user or assistant)", reason="BAD_ROLE"
                )
            if len(message.content) > s.max_message_chars:
                raise InvalidArgument(
                    f"message {number} is {len(message.content)} characters; the most is "
                    f"{s.max_message_chars}",
                    reason="MESSAGE_TOO_LONG",
                )
        if request.messages[-1].role != "user":
            raise InvalidArgument(
                "the last message must be the shopper's (role user)", reason="LAST_NOT_USER"
            )
        if not request.messages[-1].content.strip():
            raise InvalidArgument("the question is empty", reason="EMPTY_MESSAGE")
        if not 0 <= request.max_items <= s.max_items_limit:
            raise InvalidArgument(
                f"max_items must be 0..{s.max_items_limit}", reason="BAD_MAX_ITEMS"
            )
        if not 0 <= request.max_new_tokens <= s.max_new_tokens_limit:
            raise InvalidArgument(
                f"max_new_tokens must be 0..{s.max_new_tokens_limit}", reason="BAD_MAX_TOKENS"
            )
        if not 0 <= request.temperature <= 2:
            raise InvalidArgument("temperature must be 0..2", reason="BAD_TEMPERATURE")
        if len(request.image) > s.max_image_bytes:
            raise InvalidArgument("the photo is over the size limit", reason="IMAGE_TOO_LARGE")

    # ------------------------------------------------------------------ retrieval

    async def retrieve(
        self, request: ChatInput, plan: Plan, size: int, anchor_category: str = ""
    ) -> list[CardItem]:
        """The plan's items for this shopper, best first (``size`` at most)."""
        common = {
            "user_id": request.user_id,
            "base": request.base_filter,
            "max_price": plan.cheaper_than,
            "deadline": request.deadline,
        }
        depth = size * (plan.page + 1)  # "show me more": the next ``size`` of the ranking
        filters = plan.filters
        items: list[CardItem] = []
        if plan.intent == "photo" and request.image:
            items = await self.catalog.search_image(request.image, filters, depth, **common)
        elif plan.intent == "similar" and plan.item_ids:
            items = await self.catalog.similar(plan.item_ids[0], filters, depth, **common)
        elif plan.intent == "complete_outfit":
            anchor = list(plan.item_ids)
            if not anchor and (plan.anchor_query or plan.anchor_filters):
                found = await self.catalog.search(
                    plan.anchor_query or plan.query,
                    plan.anchor_filters,
                    1,
                    **{**common, "max_price": None},
                )
                anchor = [found[0].item_id] if found else []
                anchor_category = found[0].category if found else ""
            wanted = plan.wanted_category or COMPLEMENT.get(anchor_category, "Shoes")
            if anchor:
                outfit_filters = {k: v for k, v in filters.items() if k != "category"}
                items = await self.catalog.complete_outfit(
                    anchor, wanted, outfit_filters, depth, **common
                )
        else:
            query = plan.search_text(request.messages[-1].content)
            items = await self.catalog.search(query, filters, depth, **common)
            floor = self.floor.value()
            if items and floor > 0:
                closest = await closest_similarity(self.catalog, plan, **common)
                if closest is not None and closest < floor:
                    # Even the closest item is further from what was asked than the
                    # calibrated floor: the catalog sells nothing like it ("a lawn mower").
                    BELOW_FLOOR.inc()
                    items = []
        return items[size * plan.page :][:size]

    # ------------------------------------------------------------------ the answer

    async def chat(self, request: ChatInput) -> AsyncIterator[Event]:
        self.check(request)
        started = time.perf_counter()
        answer_id = uuid.uuid4().hex
        vocabulary = await self._current_vocabulary()
        turns = [Turn(m.role, m.content) for m in request.messages]
        photo_id, photo_caption, photo_category = "", "", ""
        if request.image:
            # Embedded (its nearest catalog item anchors "what goes with this") and, when a
            # captioner is configured, described in the prompt.
            nearest = await self.catalog.search_image(
                request.image, {}, 1, base=request.base_filter, deadline=request.deadline
            )
            photo_id = nearest[0].item_id if nearest else ""
            photo_category = nearest[0].category if nearest else ""
            if self.captioner is not None:
                photo_caption = await self.captioner.caption(request.image, request.deadline)
        plan = plan_conversation(turns, vocabulary, photo_item_id=photo_id)
        size = request.max_items or self.settings.default_max_items
        items: list[CardItem] = []
        if not plan.knows_nothing_fits:
            items = await self.retrieve(request, plan, size, photo_category)
        adapter_id = await self.adapter(request.adapter_id) if self.adapter else ""
        history = History()
        if items and request.user_id and self.settings.history_items:
            history = await self.catalog.history(
                request.user_id, self.settings.history_items, request.deadline
            )
        prompt = (
            build_messages(request.messages[-1].content, items, photo_caption, history)
            if items
            else ()
        )
        generation = GenerationRequest(
            messages=prompt,
            cards=len(items),
            max_new_tokens=request.max_new_tokens or self.settings.default_max_new_tokens,
            temperature=request.temperature,
            adapter_id=adapter_id,
        )
        if items:
            self.backend.check(generation)  # before the stream starts: a plain error
        yield Retrieved(items)
        if not items:
            text = no_items_text(plan)
            yield TextDelta(text)
            ANSWERS.labels("no_items").inc()
            await self._publish(
                ChatTurn(
                    answer_id,
                    request.user_id,
                    request.conversation_id,
                    request.messages,
                    (),
                    [],
                    text,
                    [],
                    "no_items",
                    adapter_id,
                    self.backend.model_id,
                    self.backend.model_version,
                    plan,
                )
            )
            yield Finish("no_items", answer_id, adapter_id)
            return

        state = CitationState(len(items))
        referenced: set[int] = set()
        pieces: list[str] = []
        finished: Finished | None = None
        first = True
        stream = self.backend.generate(generation)
        try:
            async for piece in stream:
                if isinstance(piece, Finished):
                    finished = piece
                    break
                if first:
                    TTFT.observe(time.perf_counter() - started)
                    first = False
                pieces.append(piece)
                yield TextDelta(piece)
                for number in state.feed(piece):
                    if number not in referenced:
                        referenced.add(number)
                        item = items[number - 1]
                        yield Reference(item.item_id, reason_for(item, plan.filters))
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        if finished is None or finished.reason == "cancelled":
            raise asyncio.CancelledError  # the client went away or the deadline passed
        checked = guard("".join(pieces), len(items))
        reason: FinishReason = "length" if finished.reason == "length" else "stop"
        adapter_id = finished.adapter_id
        ANSWERS.labels(reason).inc()
        await self._publish(
            ChatTurn(
                answer_id,
                request.user_id,
                request.conversation_id,
                request.messages,
                prompt,
                items,
                checked.text,
                [items[n - 1].item_id for n in checked.cited],
                reason,
                adapter_id,
                self.backend.model_id,
                self.backend.model_version,
                plan,
                finished.prompt_tokens,
                finished.completion_tokens,
            )
        )
        yield Finish(
            reason, answer_id, adapter_id, finished.prompt_tokens, finished.completion_tokens
        )

    async def _publish(self, turn: ChatTurn) -> None:
        if self.publish is None:
            return
        try:
            await self.publish(turn)
        except Exception as exc:  # noqa: BLE001 - the answer stands; the sink spools or logs
            log.error("chat event not published", exc_info=exc)
