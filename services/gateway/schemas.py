"""The gateway's JSON shapes (they are its OpenAPI document) and their proto conversions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from google.protobuf import timestamp_pb2
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
)

from styleloop.v1 import common_pb2

ID = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")
Name = Field(min_length=1, max_length=100)


def _text_only(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 date-time string, e.g. 2026-12-01T19:23:41Z")
    return value


def _no_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("must be an integer, not true or false")
    return value


# At least one character that is not white space, spelled out so that the schema's regex
# engine (ECMA-262), pydantic's and Python's str.strip() (the services') agree exactly.
NOT_BLANK = r"[^\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
# JSON integers (2 and 2.0 alike), never booleans.
Count = Annotated[int, BeforeValidator(_no_bool)]
# A string only (no Unix numbers), with an offset, and a real calendar instant.
EventTime = Annotated[AwareDatetime, BeforeValidator(_text_only)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemFilter(Strict):
    """Restricts results; empty lists and unset prices restrict nothing."""

    categories: list[str] = Field(default_factory=list, max_length=50)
    article_types: list[str] = Field(default_factory=list, max_length=50)
    brands: list[str] = Field(default_factory=list, max_length=50)
    seasons: list[str] = Field(default_factory=list, max_length=10)
    colours: list[str] = Field(default_factory=list, max_length=50)
    usages: list[str] = Field(default_factory=list, max_length=20)
    genders: list[str] = Field(default_factory=list, max_length=10)
    years: list[str] = Field(default_factory=list, max_length=20, examples=[["2011"]])
    min_price: float | None = Field(default=None, ge=0, le=1e9, strict=True)
    max_price: float | None = Field(default=None, ge=0, le=1e9, strict=True)
    in_stock_only: StrictBool = False
    excluded_item_ids: list[str] = Field(default_factory=list, max_length=500)

    def to_proto(self) -> common_pb2.ItemFilter:
        price = common_pb2.PriceRange()
        if self.min_price is not None:
            price.min_price = self.min_price
        if self.max_price is not None:
            price.max_price = self.max_price
        return common_pb2.ItemFilter(
            categories=self.categories,
            article_types=self.article_types,
            brands=self.brands,
            seasons=self.seasons,
            colours=self.colours,
            usages=self.usages,
            genders=self.genders,
            years=self.years,
            price_range=price,
            in_stock_only=self.in_stock_only,
            excluded_item_ids=self.excluded_item_ids,
        )


class Item(BaseModel):
    item_id: str
    title: str
    description: str
    brand: str
    category: str
    article_type: str
    colour: str
    season: str
    usage: str
    gender: str
    price: float
    currency_code: str
    in_stock: bool
    image_uri: str
    caption: str
    attributes: dict[str, str]
    create_time: datetime | None = None
    update_time: datetime | None = None
    year: str = ""

    @classmethod
    def from_proto(cls, item: common_pb2.Item) -> Item:
        return cls(
            item_id=item.item_id,
            title=item.title,
            description=item.description,
            brand=item.brand,
            category=item.category,
            article_type=item.article_type,
            colour=item.colour,
            season=item.season,
            usage=item.usage,
            gender=item.gender,
            price=item.price,
            currency_code=item.currency_code,
            in_stock=item.in_stock,
            image_uri=item.image_uri,
            caption=item.caption,
            attributes=dict(item.attributes),
            year=item.year,
            create_time=_utc(item.create_time) if item.HasField("create_time") else None,
            update_time=_utc(item.update_time) if item.HasField("update_time") else None,
        )


def _utc(stamp: timestamp_pb2.Timestamp) -> datetime:
    """An RFC 3339 instant (with its offset, UTC), as the OpenAPI date-time promises."""
    return stamp.ToDatetime(tzinfo=UTC)


class ScoredItem(BaseModel):
    item: Item
    score: float = Field(description="Higher is better; comparable within one response only.")
    similarity: float = Field(
        default=0.0,
        description="The query's cosine similarity to the item, comparable across "
        "responses (0 where no single query ranked the results).",
    )

    @classmethod
    def from_proto(cls, scored: object) -> ScoredItem:
        return cls(
            item=Item.from_proto(scored.item),  # type: ignore[attr-defined]
            score=scored.score,  # type: ignore[attr-defined]
            similarity=scored.similarity,  # type: ignore[attr-defined]
        )


FacetField = Literal[
    "category", "article_type", "brand", "season", "colour", "usage", "gender", "year"
]


class FacetValue(BaseModel):
    value: str
    count: int


class Facet(BaseModel):
    field: str = Field(examples=["brand"])
    values: list[FacetValue] = Field(description="Most frequent first (ties by value).")


class Facets(BaseModel):
    facets: list[Facet]

    @classmethod
    def from_proto(cls, response: Any) -> Facets:
        return cls(
            facets=[
                Facet(
                    field=f.field,
                    values=[FacetValue(value=v.value, count=v.count) for v in f.values],
                )
                for f in response.facets
            ]
        )


class Page(BaseModel):
    results: list[ScoredItem]
    next_page_token: str = Field(description="Pass it back for the next page; empty at the end.")

    @classmethod
    def from_proto(cls, response: object) -> Page:
        return cls(
            results=[
                ScoredItem.from_proto(r)
                for r in response.results  # type: ignore[attr-defined]
            ],
            next_page_token=getattr(response, "next_page_token", ""),
        )


class OutfitPage(Page):
    method: str = Field(
        description='How the candidates were ranked: "trained:<scorer id>" (the trained '
        'outfit compatibility scorer) or "vector_sum" (summed image-vector similarity, the '
        "fallback)."
    )
    fallback_reason: str = Field(
        default="", description="Why the trained scorer did not rank them; empty when it did."
    )

    @classmethod
    def from_proto(cls, response: object) -> OutfitPage:
        return cls(
            **Page.from_proto(response).model_dump(),
            method=getattr(response, "method", ""),
            fallback_reason=getattr(response, "fallback_reason", ""),
        )


class TextSearch(Strict):
    query: str = Field(
        min_length=1, max_length=500, pattern=NOT_BLANK, examples=["red floral summer dress"]
    )
    user_id: str = Field(
        default="",
        max_length=128,
        pattern=r"^[A-Za-z0-9._:\-]*$",
        description="Personalise for this shopper: items they rejected, and near-duplicates "
        "of them, never come back.",
    )
    filter: ItemFilter = Field(default_factory=ItemFilter)
    page_size: Count = Field(default=10, ge=1, le=100)
    page_token: str = Field(default="", max_length=200)


class OutfitCompletion(Strict):
    item_ids: list[str] = Field(min_length=1, max_length=10, description="The partial outfit.")
    category: str = Field(min_length=1, max_length=100, pattern=NOT_BLANK, examples=["Shoes"])
    filter: ItemFilter = Field(default_factory=ItemFilter)
    page_size: Count = Field(default=10, ge=1, le=100)
    page_token: str = Field(default="", max_length=200)


class RecommendationRequest(Strict):
    user_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")
    positive_item_ids: list[str] = Field(default_factory=list, max_length=50)
    negative_item_ids: list[str] = Field(default_factory=list, max_length=50)
    filter: ItemFilter = Field(default_factory=ItemFilter)
    page_size: Count = Field(default=10, ge=1, le=100)
    page_token: str = Field(default="", max_length=200)


class ChatMessage(Strict):
    role: Literal["user", "assistant"]
    content: str = Field(
        max_length=2000, examples=["Can you recommend clothes based on Puma fall 2011?"]
    )


class ChatRequest(Strict):
    """A conversation; the last message is the shopper's question (role ``user``)."""

    user_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")
    messages: list[ChatMessage] = Field(
        min_length=1,
        max_length=20,
        description="The conversation so far, oldest first; at most 20 messages.",
    )
    conversation_id: str = Field(default="", max_length=128)
    image_base64: str = Field(
        default="",
        max_length=14_000_000,
        description="An optional photo the question is about: a JPEG, PNG or WebP, base64.",
    )
    filter: ItemFilter = Field(default_factory=ItemFilter)
    max_items: Count = Field(default=0, ge=0, le=10, description="Cards to ground on; 0: 5.")
    max_new_tokens: Count = Field(default=0, ge=0, le=512, description="0: the default (96).")
    temperature: float = Field(default=0.0, ge=0, le=2, description="0: greedy decoding.")


class ChatFinishOut(BaseModel):
    finish_reason: Literal["stop", "length", "no_items"]
    answer_id: str = Field(description="Name it in feedback (context.answer_id).")
    adapter_id: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatReference(BaseModel):
    item_id: str
    reason: str


class ChatText(BaseModel):
    text: str


class ChatRetrieved(BaseModel):
    items: list[ScoredItem]


Kind = Literal["impression", "click", "like", "reject", "purchase"]
Source = Literal[
    "search_by_image",
    "search_by_text",
    "similar_items",
    "complete_outfit",
    "recommendations",
    "chat",
    "item_page",
]


class FeedbackContext(Strict):
    source: Source | None = None
    query: str = Field(default="", max_length=500)
    recommended_item_ids: list[str] = Field(default_factory=list, max_length=100)
    position: Count = Field(default=0, ge=0, le=10_000)
    answer_id: str = Field(default="", max_length=128)
    adapter_id: str = Field(default="", max_length=128)
    reason: str = Field(default="", max_length=500)


class FeedbackIn(Strict):
    user_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")
    item_id: str = Field(min_length=1, max_length=128)
    kind: Kind
    session_id: str = Field(default="", max_length=128)
    event_time: EventTime | None = Field(
        default=None,
        description="When it happened (client): an RFC 3339 date-time with its offset, "
        "e.g. 2026-12-01T19:23:41Z.",
    )
    context: FeedbackContext = Field(default_factory=FeedbackContext)

    @field_validator("event_time")
    @classmethod
    def _representable(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        try:
            return value.astimezone(UTC)
        except OverflowError:  # beyond year 9999 once in UTC
            raise ValueError("the time is out of range") from None


class FeedbackBatch(Strict):
    events: list[FeedbackIn] = Field(min_length=1, max_length=100)


class FeedbackAccepted(BaseModel):
    accepted: int
    event_ids: list[str] = Field(description="One per event, in order; consumers de-duplicate.")
    spooled: bool = Field(description="True when the broker was unreachable: kept durably and "
                          "delivered once it is back.")  # fmt: skip


class ErrorBody(BaseModel):
    reason: str = Field(examples=["NOT_FOUND"])
    message: str
    request_id: str
