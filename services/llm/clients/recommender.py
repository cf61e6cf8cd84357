"""The llm's view of the catalog: RecommenderService over gRPC, with deadlines.

Every call has a timeout (the setting, or less when the chat's own deadline is nearer)
and carries the request id. A recommender error with a StyleLoop reason keeps it (an
unknown item stays ``ITEM_NOT_FOUND``, a bad photo ``IMAGE_CORRUPT``); transport
problems become :class:`Unavailable`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import grpc

from services.llm.cards import CardItem, History
from styleloop.runtime.auth import aio_channel
from styleloop.runtime.errors import InvalidArgument, NotFound, Unavailable
from styleloop.runtime.logging import request_id_var
from styleloop.runtime.server import REQUEST_ID_METADATA_KEY, status_reason
from styleloop.v1 import common_pb2, recommender_pb2, recommender_pb2_grpc

Filters = Mapping[str, Sequence[str]]
# The planner's field names and ItemFilter's repeated fields.
FILTER_FIELDS = {
    "brand": "brands",
    "article_type": "article_types",
    "category": "categories",
    "colour": "colours",
    "gender": "genders",
    "usage": "usages",
    "season": "seasons",
    "year": "years",
}


class Catalog(Protocol):
    """What chat needs of the catalog."""

    async def facets(self) -> dict[str, list[tuple[str, int]]]: ...

    async def search(
        self, query: str, filters: Filters, size: int, **kw: Any
    ) -> list[CardItem]: ...

    async def search_image(
        self, image: bytes, filters: Filters, size: int, **kw: Any
    ) -> list[CardItem]: ...

    async def similar(
        self, item_id: str, filters: Filters, size: int, **kw: Any
    ) -> list[CardItem]: ...

    async def complete_outfit(
        self, item_ids: Sequence[str], category: str, filters: Filters, size: int, **kw: Any
    ) -> list[CardItem]: ...

    async def history(self, user_id: str, most: int, deadline: float | None) -> History: ...

    async def close(self) -> None: ...


def to_item_filter(
    filters: Filters, max_price: float | None = None, base: common_pb2.ItemFilter | None = None
) -> common_pb2.ItemFilter:
    """The plan's filters as an ``ItemFilter``; a field the caller's ``base`` filter also
    restricts keeps only the values both allow."""
    out = common_pb2.ItemFilter()
    if base is not None:
        out.CopyFrom(base)
    for name, values in filters.items():
        target = getattr(out, FILTER_FIELDS[name])
        given = list(target)
        wanted = [v for v in values if not given or v in given]
        del target[:]
        # Nothing in common: a value no item has, so the answer is "nothing fits".
        target.extend(wanted or ["\u0000none"])
    if max_price is not None:
        current = out.price_range.max_price if out.price_range.HasField("max_price") else None
        out.price_range.max_price = min(max_price, current) if current is not None else max_price
    return out


def card_item(scored: common_pb2.ScoredItem) -> CardItem:
    return item_card(scored.item, scored.score, scored.similarity)


def item_card(item: common_pb2.Item, score: float = 0.0, similarity: float = 0.0) -> CardItem:
    return CardItem(
        item_id=item.item_id,
        title=item.title,
        brand=item.brand,
        article_type=item.article_type,
        category=item.category,
        colour=item.colour,
        gender=item.gender,
        season=item.season,
        year=item.year,
        usage=item.usage,
        caption=item.caption,
        price=item.price,
        currency_code=item.currency_code,
        score=score,
        similarity=similarity,
    )


def item_proto(card: CardItem) -> common_pb2.Item:
    """The catalog fields a card holds, as an ``Item`` again (for responses and events)."""
    return common_pb2.Item(
        item_id=card.item_id,
        title=card.title,
        brand=card.brand,
        category=card.category,
        article_type=card.article_type,
        colour=card.colour,
        season=card.season,
        usage=card.usage,
        gender=card.gender,
        price=card.price,
        currency_code=card.currency_code,
        caption=card.caption,
        year=card.year,
    )


class RecommenderCatalog:
    def __init__(self, address: str, timeout_s: float, token: str = "") -> None:
        self.address, self.timeout_s = address, timeout_s
        self.channel = aio_channel(address, token)
        self.stub = recommender_pb2_grpc.RecommenderServiceStub(self.channel)
        self.base_filter: common_pb2.ItemFilter | None = None

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        request_id = request_id_var.get()
        return ((REQUEST_ID_METADATA_KEY, request_id),) if request_id else ()

    async def _call(self, method: Any, request: Any, deadline: float | None = None) -> Any:
        timeout = self.timeout_s
        if deadline is not None:
            timeout = max(0.01, min(timeout, deadline - time.monotonic()))
        try:
            return await method(request, timeout=timeout, metadata=self._metadata())
        except grpc.aio.AioRpcError as exc:
            reason = status_reason(exc)
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument(exc.details() or "invalid", reason=reason) from None
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(exc.details() or "not found", reason=reason) from None
            raise Unavailable(
                f"the catalog is unavailable ({exc.code().name}); retry",
                reason="RECOMMENDER_UNAVAILABLE",
            ) from None

    @staticmethod
    def _filter(filters: Filters, kw: Mapping[str, Any]) -> common_pb2.ItemFilter:
        return to_item_filter(filters, kw.get("max_price"), kw.get("base"))

    async def wait_ready(self, wait_s: float) -> None:
        """Retry GetFacets while the recommender starts (up to ``wait_s``)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                await self._call(self.stub.GetFacets, recommender_pb2.GetFacetsRequest())
                return
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def facets(self) -> dict[str, list[tuple[str, int]]]:
        response = await self._call(self.stub.GetFacets, recommender_pb2.GetFacetsRequest())
        return {f.field: [(v.value, v.count) for v in f.values] for f in response.facets}

    async def search(self, query: str, filters: Filters, size: int, **kw: Any) -> list[CardItem]:
        request = recommender_pb2.SearchByTextRequest(
            query=query,
            filter=self._filter(filters, kw),
            page_size=size,
            page_token=kw.get("page_token", ""),
            user_id=kw.get("user_id", ""),
        )
        response = await self._call(self.stub.SearchByText, request, kw.get("deadline"))
        return [card_item(r) for r in response.results]

    async def search_image(
        self, image: bytes, filters: Filters, size: int, **kw: Any
    ) -> list[CardItem]:
        request = recommender_pb2.SearchByImageRequest(
            image=image,
            filter=self._filter(filters, kw),
            page_size=size,
            user_id=kw.get("user_id", ""),
        )
        response = await self._call(self.stub.SearchByImage, request, kw.get("deadline"))
        return [card_item(r) for r in response.results]

    async def similar(self, item_id: str, filters: Filters, size: int, **kw: Any) -> list[CardItem]:
        request = recommender_pb2.GetSimilarItemsRequest(
            item_id=item_id,
            filter=self._filter(filters, kw),
            page_size=size,
            page_token=kw.get("page_token", ""),
            user_id=kw.get("user_id", ""),
        )
        response = await self._call(self.stub.GetSimilarItems, request, kw.get("deadline"))
        return [card_item(r) for r in response.results]

    async def complete_outfit(
        self, item_ids: Sequence[str], category: str, filters: Filters, size: int, **kw: Any
    ) -> list[CardItem]:
        request = recommender_pb2.CompleteOutfitRequest(
            item_ids=list(item_ids),
            wanted_category=category,
            filter=self._filter(filters, kw),
            page_size=size,
            page_token=kw.get("page_token", ""),
            user_id=kw.get("user_id", ""),
        )
        response = await self._call(self.stub.CompleteOutfit, request, kw.get("deadline"))
        return [card_item(r) for r in response.results]

    async def history(self, user_id: str, most: int, deadline: float | None) -> History:
        """The shopper's ``most`` newest rejected and liked items (GetUserState, then
        GetItem for each); an item deleted from the catalog since is left out."""
        state = await self._call(
            self.stub.GetUserState, recommender_pb2.GetUserStateRequest(user_id=user_id), deadline
        )
        rejected = [u.item_id for u in state.rejected_items[:most]]
        liked = [u.item_id for u in state.liked_items[:most]]

        async def get(item_id: str) -> CardItem | None:
            try:
                response = await self._call(
                    self.stub.GetItem, recommender_pb2.GetItemRequest(item_id=item_id), deadline
                )
            except NotFound:
                return None
            return item_card(response.item)

        found = await asyncio.gather(*(get(i) for i in rejected + liked))
        cards = dict(zip(rejected + liked, found, strict=True))
        return History(
            [c for i in rejected if (c := cards[i]) is not None],
            [c for i in liked if (c := cards[i]) is not None],
        )

    async def close(self) -> None:
        await self.channel.close()
