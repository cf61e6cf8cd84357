"""RecommenderService over gRPC: thin — proto in, core, proto out."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from google.protobuf import json_format, timestamp_pb2

from services.recommender.core import ITEM_FIELDS, Page, Recommender, UpsertInput
from services.recommender.store import Filters
from styleloop.runtime.errors import Unavailable
from styleloop.v1 import common_pb2, recommender_pb2, recommender_pb2_grpc

SERVICE_NAME = recommender_pb2.DESCRIPTOR.services_by_name["RecommenderService"].full_name

KEYWORD_FILTERS = {
    "categories": "category",
    "article_types": "article_type",
    "brands": "brand",
    "seasons": "season",
    "colours": "colour",
    "usages": "usage",
    "genders": "gender",
    "years": "year",
}
KIND_NAMES = {
    common_pb2.INTERACTION_KIND_IMPRESSION: "impression",
    common_pb2.INTERACTION_KIND_CLICK: "click",
    common_pb2.INTERACTION_KIND_LIKE: "like",
    common_pb2.INTERACTION_KIND_REJECT: "reject",
    common_pb2.INTERACTION_KIND_PURCHASE: "purchase",
}
OUTCOMES = {
    "created": recommender_pb2.UPSERT_OUTCOME_CREATED,
    "updated": recommender_pb2.UPSERT_OUTCOME_UPDATED,
    "unchanged": recommender_pb2.UPSERT_OUTCOME_UNCHANGED,
    "failed": recommender_pb2.UPSERT_OUTCOME_FAILED,
}


def to_filters(message: common_pb2.ItemFilter) -> Filters:
    price = message.price_range
    return Filters(
        keywords={
            key: list(getattr(message, name))
            for name, key in KEYWORD_FILTERS.items()
            if getattr(message, name)
        },
        min_price=price.min_price if price.HasField("min_price") else None,
        max_price=price.max_price if price.HasField("max_price") else None,
        in_stock_only=message.in_stock_only,
        excluded_ids=list(message.excluded_item_ids),
    )


def to_dict(item: common_pb2.Item) -> dict[str, Any]:
    data = json_format.MessageToDict(item, preserving_proto_field_name=True)
    data = {k: v for k, v in data.items() if k in ITEM_FIELDS}
    data["price"] = item.price
    data["in_stock"] = item.in_stock
    return data


def _timestamp(seconds: float | None) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    if seconds:
        stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def to_item(data: dict[str, Any]) -> common_pb2.Item:
    item = common_pb2.Item()
    json_format.ParseDict(
        {k: v for k, v in data.items() if k in ITEM_FIELDS and v is not None},
        item,
        ignore_unknown_fields=True,
    )
    item.create_time.CopyFrom(_timestamp(data.get("create_time")))
    item.update_time.CopyFrom(_timestamp(data.get("update_time")))
    return item


def scored(page: Page) -> list[common_pb2.ScoredItem]:
    similarity = page.similarity or [0.0] * len(page.items)
    return [
        common_pb2.ScoredItem(item=to_item(item), score=score, similarity=close)
        for (item, score), close in zip(page.items, similarity, strict=True)
    ]


class RecommenderServicer(recommender_pb2_grpc.RecommenderServiceServicer):
    """Serves a :class:`Recommender`, attached once it is ready (health says SERVING
    only then)."""

    def __init__(self, core: Recommender | None = None) -> None:
        self._core = core

    @property
    def core(self) -> Recommender:
        if self._core is None:
            raise Unavailable("the recommender is starting", reason="NOT_READY")
        return self._core

    def attach(self, core: Recommender) -> None:
        self._core = core

    def register(self, server: grpc.aio.Server) -> None:
        recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(self, server)

    async def UpsertItems(self, request, context):  # type: ignore[no-untyped-def] # noqa: N802
        inputs = [
            UpsertInput(
                item=to_dict(entry.item),
                image=entry.image,
                image_vector=list(entry.image_embedding.values),
                caption_vector=list(entry.caption_embedding.values),
                model_version=entry.embedding_model_version,
            )
            for entry in request.items
        ]
        results = await self.core.upsert(inputs)
        return recommender_pb2.UpsertItemsResponse(
            results=[
                recommender_pb2.UpsertItemResult(
                    item_id=item_id,
                    outcome=OUTCOMES[outcome],
                    error=common_pb2.ItemError(reason=f.reason, message=f.message) if f else None,
                )
                for item_id, outcome, f in results
            ]
        )

    async def DeleteItems(self, request, context):  # type: ignore[no-untyped-def] # noqa: N802
        deleted, missing = self.core.delete(list(request.item_ids))
        return recommender_pb2.DeleteItemsResponse(
            deleted_item_ids=deleted, missing_item_ids=missing
        )

    async def GetItem(self, request, context):  # type: ignore[no-untyped-def] # noqa: N802
        return recommender_pb2.GetItemResponse(item=to_item(self.core.get(request.item_id)))

    async def GetItemImage(self, request, context):  # type: ignore[no-untyped-def] # noqa: N802
        image, content_type, etag = self.core.item_image(request.item_id)
        return recommender_pb2.GetItemImageResponse(
            image=image, content_type=content_type, etag=etag
        )

    async def ListItems(self, request, context):  # type: ignore[no-untyped-def] # noqa: N802
        page = self.core.list_items(
            to_filters(request.filter), request.page_size, request.page_token
        )
        return recommender_pb2.ListItemsResponse(
            items=[to_item(item) for item, _ in page.items], next_page_token=page.next_token
        )

    async def SearchByImage(self, request, context):  # type: ignore[no-untyped-def] # noqa: N802
        page = await self.core.search_by_image(
            request.image,
            to_filters(request.filter),
            request.page_size,
            request.page_token,
            request.user_id,
        )
        return recommender_pb2.SearchByImageResponse(
            results=scored(page), next_page_token=page.next_token
        )

    async def SearchByText(self, request, context):  # type: ignore[no-untyped-def] # noqa: N802
        page = await self.core.search_by_text(
            request.query,
            to_filters(request.filter),
            request.page_size,
            request.page_token,
            request.user_id,
        )
        return recommender_pb2.SearchByTextResponse(
            results=scored(page), next_page_token=page.next_token
        )

    async def GetSimilarItems(self, request, context):  # type: ignore[no-untyped-def] # noqa: N802
        page = self.core.similar(
            request.item_id,
            to_filters(request.filter),
            request.page_size,
            request.page_token,
            request.user_id,
        )
        return recommender_pb2.GetSimilarItemsResponse(
            results=scored(page), next_page_token=page.next_token
        )

    async def CompleteOutfit(self, request, context):  # type: ignore[no-untyped-def] # noqa: N802
        page = self.core.complete_outfit(
            list(request.item_ids),
            request.wanted_category,
            to_filters(request.filter),
            request.page_size,
            request.page_token,
            request.user_id,
        )
        return recommender_pb2.CompleteOutfitResponse(
            results=scored(page),
            next_page_token=page.next_token,
            method=page.method,
            fallback_reason=page.fallback_reason,
        )

    async def GetRecommendations(self, request, context):  # type: ignore[no-untyped-def] # noqa: N802
        # Off the event loop: health checks and other RPCs go on while it ranks.
        page = await asyncio.to_thread(
            self.core.recommendations,
            request.user_id,
            list(request.positive_item_ids),
            list(request.negative_item_ids),
            to_filters(request.filter),
            request.page_size,
            request.page_token,
        )
        return recommender_pb2.GetRecommendationsResponse(
            results=scored(page), next_page_token=page.next_token
        )

    async def RecordInteraction(self, request, context):  # type: ignore[no-untyped-def] # noqa: N802
        when = request.event_time.ToNanoseconds() / 1e9 if request.HasField("event_time") else None
        applied = self.core.record(
            request.user_id,
            request.item_id,
            KIND_NAMES.get(request.kind, "unspecified"),
            when,
            request.event_id,
        )
        return recommender_pb2.RecordInteractionResponse(applied=applied)

    async def GetUserState(self, request, context):  # type: ignore[no-untyped-def] # noqa: N802
        state = self.core.user_state(request.user_id)

        def items(kind: str) -> list[recommender_pb2.UserItem]:
            return [
                recommender_pb2.UserItem(item_id=item_id, event_time=_timestamp(ts))
                for item_id, ts in state[kind]
            ]

        return recommender_pb2.GetUserStateResponse(
            user_id=request.user_id,
            liked_items=items("like"),
            rejected_items=items("reject"),
            purchased_items=items("purchase"),
        )

    async def GetFacets(self, request, context):  # type: ignore[no-untyped-def] # noqa: N802
        facets, total = self.core.facets(
            list(request.fields), to_filters(request.filter), request.max_values
        )
        return recommender_pb2.GetFacetsResponse(
            facets=[
                recommender_pb2.Facet(
                    field=name,
                    values=[recommender_pb2.FacetValue(value=v, count=c) for v, c in values],
                )
                for name, values in facets
            ],
            total_items=total,
        )
