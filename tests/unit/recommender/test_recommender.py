"""RecommenderService with a real encoder and real Qdrant (Edge on disk, and qdrant-client)."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from styleloop.v1 import common_pb2, recommender_pb2, recommender_pb2_grpc
from tests.conftest import data_dir, encode_png, error_reason, synthetic_garment
from tests.unit.recommender.conftest import start_recommender, upsert_vectors

CATEGORIES = ["Topwear", "Bottomwear", "Shoes"]


def catalog(count: int) -> list[tuple[dict, bytes]]:
    """Real products with their photos when the sample data is there, else drawn ones."""
    root = data_dir()
    rows = []
    if root is not None:
        folder = root / "fashion-product-images"
        with (folder / "products.jsonl").open() as handle:
            for line in handle:
                row = json.loads(line)
                rows.append(
                    (
                        {
                            "item_id": row["id"],
                            "title": row["title"],
                            "category": row["sub_category"],
                            "article_type": row["article_type"],
                            "colour": row["base_colour"],
                            "usage": row["usage"],
                            "price": 10.0 + len(rows),
                        },
                        (folder / row["image"]).read_bytes(),
                    )
                )
                if len(rows) == count:
                    break
        return rows
    for i in range(count):
        item = {
            "item_id": f"syn-{i}",
            "title": f"drawn garment {i}",
            "category": CATEGORIES[i % 3],
            "price": 10.0 + i,
        }
        rows.append((item, encode_png(synthetic_garment(i))))
    return rows


def upsert_request(rows) -> recommender_pb2.UpsertItemsRequest:
    return recommender_pb2.UpsertItemsRequest(
        items=[
            recommender_pb2.UpsertItem(item=common_pb2.Item(**item), image=image)
            for item, image in rows
        ]
    )


async def test_upsert_is_idempotent_and_search_by_image_finds_the_item_first(stack):
    rows = catalog(24)
    first = await stack.stub.UpsertItems(upsert_request(rows), timeout=60)
    assert {r.outcome for r in first.results} == {recommender_pb2.UPSERT_OUTCOME_CREATED}
    again = await stack.stub.UpsertItems(upsert_request(rows), timeout=60)
    assert {r.outcome for r in again.results} == {recommender_pb2.UPSERT_OUTCOME_UNCHANGED}
    item, image = rows[5]
    hits = await stack.stub.SearchByImage(
        recommender_pb2.SearchByImageRequest(image=image, page_size=3), timeout=30
    )
    assert hits.results[0].item.item_id == item["item_id"]
    assert hits.results[0].item.title == item["title"]
    created = await stack.stub.GetItem(recommender_pb2.GetItemRequest(item_id=item["item_id"]))
    changed = dict(item, title=item["title"] + " (new season)")
    update = await stack.stub.UpsertItems(upsert_request([(changed, image)]), timeout=30)
    assert update.results[0].outcome == recommender_pb2.UPSERT_OUTCOME_UPDATED
    after = await stack.stub.GetItem(recommender_pb2.GetItemRequest(item_id=item["item_id"]))
    assert after.item.title.endswith("(new season)")
    assert after.item.create_time == created.item.create_time


async def test_text_search_and_similar_items_filter_and_paginate(stack):
    rows = catalog(30)
    await stack.stub.UpsertItems(upsert_request(rows), timeout=60)
    category = rows[0][0]["category"]
    in_category = {item["item_id"] for item, _ in rows if item["category"] == category}
    flt = common_pb2.ItemFilter(categories=[category])
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = await stack.stub.SearchByText(
            recommender_pb2.SearchByTextRequest(
                query="a black shirt", filter=flt, page_size=2, page_token=token
            ),
            timeout=30,
        )
        seen += [r.item.item_id for r in page.results]
        token = page.next_page_token
        if not token:
            break
    assert set(seen) == in_category and len(seen) == len(in_category)
    similar = await stack.stub.GetSimilarItems(
        recommender_pb2.GetSimilarItemsRequest(
            item_id=rows[0][0]["item_id"],
            page_size=50,
            filter=common_pb2.ItemFilter(price_range=common_pb2.PriceRange(max_price=20.0)),
        ),
        timeout=30,
    )
    ids = [r.item.item_id for r in similar.results]
    assert rows[0][0]["item_id"] not in ids
    assert ids and all(r.item.price <= 20.0 for r in similar.results)
    scores = [r.score for r in similar.results]
    assert scores == sorted(scores, reverse=True)


async def test_list_items_pages_through_the_filtered_catalog_once(stack):
    rows = catalog(20)
    await stack.stub.UpsertItems(upsert_request(rows), timeout=60)
    category = rows[0][0]["category"]
    wanted = {item["item_id"] for item, _ in rows if item["category"] == category}
    seen: list[str] = []
    token = ""
    for _ in range(20):
        page = await stack.stub.ListItems(
            recommender_pb2.ListItemsRequest(
                filter=common_pb2.ItemFilter(categories=[category]), page_size=3, page_token=token
            )
        )
        assert len(page.items) <= 3
        seen += [item.item_id for item in page.items]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(wanted)
    search = await stack.stub.SearchByText(
        recommender_pb2.SearchByTextRequest(query="shirt", page_size=1), timeout=30
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.stub.ListItems(
            recommender_pb2.ListItemsRequest(page_token=search.next_page_token)
        )
    assert error_reason(err.value) == "BAD_PAGE_TOKEN"


async def test_catalog_survives_a_restart(stack):
    rows = catalog(6)
    await stack.stub.UpsertItems(upsert_request(rows), timeout=60)
    await stack.servicer.core.close()  # the first instance goes away
    server, servicer = await start_recommender(stack.settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            listed = await stub.ListItems(recommender_pb2.ListItemsRequest(page_size=50))
            hits = await stub.SearchByImage(
                recommender_pb2.SearchByImageRequest(image=rows[2][1], page_size=1)
            )
    finally:
        await server.stop(grace=0)
        await servicer.core.close()
    assert {i.item_id for i in listed.items} == {item["item_id"] for item, _ in rows}
    assert hits.results[0].item.item_id == rows[2][0]["item_id"]


def unit(*components: float, dim: int) -> list[float]:
    vector = np.zeros(dim, np.float32)
    vector[: len(components)] = components
    return (vector / np.linalg.norm(vector)).tolist()


async def put_vectors(stack, items: dict[str, tuple[str, list[float]]]) -> None:
    model = stack.servicer.core.model
    caption = unit(1.0, dim=model.text_dimension)
    rows = [(i, i, category, vector, caption) for i, (category, vector) in items.items()]
    await upsert_vectors(stack.stub, model.model_version, rows)


async def test_outfit_completion_ranks_by_the_whole_outfit(stack):
    dim = stack.servicer.core.model.image_dimension
    await put_vectors(
        stack,
        {
            "top": ("Topwear", unit(1, 0, 0, dim=dim)),
            "trousers": ("Bottomwear", unit(0, 1, 0, dim=dim)),
            "bag": ("Bags", unit(0, 0, 1, dim=dim)),
            # Matches the whole outfit a little…
            "shoes-all": ("Shoes", unit(1, 1, 1, dim=dim)),
            # …while these match one piece very well and the rest not at all.
            "shoes-top": ("Shoes", unit(1, 0, 0, 0.05, dim=dim)),
            "shoes-bag": ("Shoes", unit(0, 0, 1, 0.05, dim=dim)),
            "shirt-like-top": ("Topwear", unit(1, 0.1, 0.1, dim=dim)),
        },
    )
    result = await stack.stub.CompleteOutfit(
        recommender_pb2.CompleteOutfitRequest(
            item_ids=["top", "trousers", "bag"], wanted_category="Shoes", page_size=5
        ),
        timeout=30,
    )
    ranked = [r.item.item_id for r in result.results]
    assert ranked[0] == "shoes-all"
    assert set(ranked) == {"shoes-all", "shoes-top", "shoes-bag"}


async def test_rejection_excludes_the_item_and_its_near_duplicates_at_once(stack):
    dim = stack.servicer.core.model.image_dimension
    await put_vectors(
        stack,
        {
            "liked-1": ("Topwear", unit(1, 0, 0, dim=dim)),
            "liked-2": ("Topwear", unit(1, 0.2, 0, dim=dim)),
            "like-neighbour": ("Topwear", unit(1, 0.1, 0.05, dim=dim)),
            "rejected": ("Topwear", unit(0.6, 0, 1, dim=dim)),
            "near-duplicate": ("Topwear", unit(0.6, 0.02, 1, dim=dim)),
            "other": ("Topwear", unit(0, 1, 0, dim=dim)),
            "far": ("Topwear", unit(0, 0, 0, 1, dim=dim)),
        },
    )

    async def record(item_id: str, kind: int, event_id: str) -> bool:
        response = await stack.stub.RecordInteraction(
            recommender_pb2.RecordInteractionRequest(
                user_id="u1", item_id=item_id, kind=kind, event_id=event_id
            ),
            timeout=10,
        )
        return response.applied

    before = await stack.stub.GetRecommendations(
        recommender_pb2.GetRecommendationsRequest(user_id="u1", page_size=10), timeout=10
    )
    assert "rejected" in [r.item.item_id for r in before.results]
    assert await record("liked-1", common_pb2.INTERACTION_KIND_LIKE, "e1")
    assert await record("liked-2", common_pb2.INTERACTION_KIND_LIKE, "e2")
    assert await record("rejected", common_pb2.INTERACTION_KIND_REJECT, "e3")
    assert not await record("rejected", common_pb2.INTERACTION_KIND_REJECT, "e3")  # replay
    after = await stack.stub.GetRecommendations(
        recommender_pb2.GetRecommendationsRequest(user_id="u1", page_size=10), timeout=10
    )
    ids = [r.item.item_id for r in after.results]
    assert "rejected" not in ids and "near-duplicate" not in ids
    assert "liked-1" not in ids and "liked-2" not in ids  # already liked: not news
    assert ids[0] == "like-neighbour"
    state = await stack.stub.GetUserState(recommender_pb2.GetUserStateRequest(user_id="u1"))
    assert [i.item_id for i in state.rejected_items] == ["rejected"]
    assert {i.item_id for i in state.liked_items} == {"liked-1", "liked-2"}


async def test_with_personalise_off_interactions_are_recorded_but_searches_ignore_them(stack):
    """PERSONALISE=false (how `styleloop simulate` measures the chat model): a rejection is
    in the user's state, yet their searches still return it and its near-duplicate."""
    dim = stack.servicer.core.model.image_dimension
    await put_vectors(
        stack,
        {
            "anchor": ("Topwear", unit(1, 0, 0, dim=dim)),
            "rejected": ("Topwear", unit(1, 0.1, 0, dim=dim)),
            "near-duplicate": ("Topwear", unit(1, 0.11, 0, dim=dim)),
            "other": ("Topwear", unit(0, 1, 0, dim=dim)),
        },
    )
    await stack.stub.RecordInteraction(
        recommender_pb2.RecordInteractionRequest(
            user_id="u1", item_id="rejected", kind=common_pb2.INTERACTION_KIND_REJECT
        ),
        timeout=10,
    )

    async def similar() -> list[str]:
        page = await stack.stub.GetSimilarItems(
            recommender_pb2.GetSimilarItemsRequest(item_id="anchor", user_id="u1", page_size=10),
            timeout=10,
        )
        return [r.item.item_id for r in page.results]

    personalised = await similar()
    assert "rejected" not in personalised and "near-duplicate" not in personalised
    core = stack.servicer.core
    core.settings = core.settings.model_copy(update={"personalise": False})
    unpersonalised = await similar()
    assert {"rejected", "near-duplicate"} <= set(unpersonalised)
    state = await stack.stub.GetUserState(recommender_pb2.GetUserStateRequest(user_id="u1"))
    assert [i.item_id for i in state.rejected_items] == ["rejected"]


@pytest.mark.parametrize(
    ("call", "code", "reason"),
    [
        (
            lambda s: s.GetItem(recommender_pb2.GetItemRequest(item_id="nope")),
            grpc.StatusCode.NOT_FOUND,
            "ITEM_NOT_FOUND",
        ),
        (
            lambda s: s.GetSimilarItems(recommender_pb2.GetSimilarItemsRequest(item_id="nope")),
            grpc.StatusCode.NOT_FOUND,
            "ITEM_NOT_FOUND",
        ),
        (
            lambda s: s.ListItems(recommender_pb2.ListItemsRequest(page_size=1000)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "BAD_PAGE_SIZE",
        ),
        (
            lambda s: s.ListItems(recommender_pb2.ListItemsRequest(page_token="???")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "BAD_PAGE_TOKEN",
        ),
        (
            lambda s: s.SearchByText(
                recommender_pb2.SearchByTextRequest(
                    query="dress",
                    filter=common_pb2.ItemFilter(
                        price_range=common_pb2.PriceRange(min_price=50, max_price=10)
                    ),
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "BAD_FILTER",
        ),
        (
            lambda s: s.SearchByText(recommender_pb2.SearchByTextRequest(query="  ")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "TEXT_EMPTY",
        ),
        (
            lambda s: s.SearchByImage(recommender_pb2.SearchByImageRequest(image=b"not an image")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "IMAGE_UNREADABLE",
        ),
        (
            lambda s: s.RecordInteraction(
                recommender_pb2.RecordInteractionRequest(
                    user_id="u", item_id="x", kind=common_pb2.INTERACTION_KIND_UNSPECIFIED
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "BAD_KIND",
        ),
    ],
)
async def test_bad_requests_get_the_right_status(stack, call, code, reason):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(stack.stub)
    assert err.value.code() == code
    assert error_reason(err.value) == reason
    assert err.value.details()


async def test_vectors_of_the_wrong_dimension_model_or_values_are_refused(stack):
    model = stack.servicer.core.model

    def request(values, version):
        return recommender_pb2.UpsertItemsRequest(
            items=[
                recommender_pb2.UpsertItem(
                    item=common_pb2.Item(item_id="v1"),
                    image_embedding=common_pb2.Embedding(values=values),
                    embedding_model_version=version,
                )
            ]
        )

    for values, version, reason in (
        ([0.1] * (model.image_dimension + 3), model.model_version, "VECTOR_DIMENSION_MISMATCH"),
        ([0.1] * model.image_dimension, "some-other-model", "MODEL_VERSION_MISMATCH"),
        # Cosine of a NaN, infinite or all-zero vector is NaN: it would poison every ranking.
        ([float("nan")] + [0.1] * (model.image_dimension - 1), model.model_version, "BAD_VECTOR"),
        ([float("inf")] + [0.1] * (model.image_dimension - 1), model.model_version, "BAD_VECTOR"),
        ([0.0] * model.image_dimension, model.model_version, "BAD_VECTOR"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stack.stub.UpsertItems(request(values, version), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(err.value) == reason
    listed = await stack.stub.ListItems(recommender_pb2.ListItemsRequest())
    assert not listed.items  # nothing half-written


async def test_encoder_down_is_unavailable_not_a_hang(stack):
    await stack.encoder_server.stop(grace=0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.stub.SearchByText(
            recommender_pb2.SearchByTextRequest(query="red dress"), timeout=30
        )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(err.value) == "ENCODER_UNAVAILABLE"


def test_the_near_duplicate_filter_is_the_cosine_rule_vectorised():
    from services.recommender.core import not_near_duplicates
    from services.recommender.store import Stored

    rng = np.random.default_rng(3)
    negatives = rng.normal(size=(40, 16)).astype(np.float32)
    close = negatives[:5] + rng.normal(scale=0.01, size=(5, 16))
    vectors = np.vstack([rng.normal(size=(200, 16)), close])
    candidates = [Stored(f"c{i}", {}, {"image": v.tolist()}, 0.0) for i, v in enumerate(vectors)]
    candidates.append(Stored("no-vector", {}, {}, 0.0))

    def cosine(a, b):
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    expected = [
        c.key
        for c in candidates
        if not c.vectors or all(cosine(np.array(c.vectors["image"]), n) < 0.95 for n in negatives)
    ]
    kept = [c.key for c in not_near_duplicates(candidates, negatives.tolist(), 0.95)]
    assert kept == expected
    assert {f"c{i}" for i in range(200, 205)}.isdisjoint(kept)  # the five near-duplicates
    assert not_near_duplicates(candidates, [], 0.95) == candidates


async def test_hundreds_of_rejections_are_all_honoured_and_the_lists_are_bounded(stack):
    """300 rejections: none of them, and no near-duplicate of even the oldest, comes back;
    the query uses only the newest examples; a user's lists keep the newest entries."""
    dim = stack.servicer.core.model.image_dimension
    rng = np.random.default_rng(11)
    vectors = rng.normal(size=(400, dim))
    items = {f"r{i}": ("Topwear", unit(*vectors[i], dim=dim)) for i in range(300)}
    items |= {f"x{i}": ("Topwear", unit(*vectors[i], dim=dim)) for i in range(300, 400)}
    # Near-duplicates of the ten oldest rejections (far beyond the query's 64 examples).
    items |= {
        f"dup{i}": ("Topwear", unit(*(vectors[i] + rng.normal(scale=0.02, size=dim)), dim=dim))
        for i in range(10)
    }
    names = list(items)
    for start in range(0, len(names), 200):
        await put_vectors(stack, {n: items[n] for n in names[start : start + 200]})
    for i in range(300):
        request = recommender_pb2.RecordInteractionRequest(
            user_id="picky", item_id=f"r{i}", kind=common_pb2.INTERACTION_KIND_REJECT
        )
        request.event_time.FromSeconds(1_700_000_000 + i)
        await stack.stub.RecordInteraction(request, timeout=10)
    page = await stack.stub.GetRecommendations(
        recommender_pb2.GetRecommendationsRequest(user_id="picky", page_size=100), timeout=30
    )
    ids = [r.item.item_id for r in page.results]
    assert len(ids) == 100 and all(i.startswith("x") for i in ids), ids

    stack.servicer.core.settings.max_user_items = 50
    request = recommender_pb2.RecordInteractionRequest(
        user_id="picky", item_id="x300", kind=common_pb2.INTERACTION_KIND_REJECT
    )
    request.event_time.FromSeconds(1_800_000_000)
    await stack.stub.RecordInteraction(request, timeout=10)
    state = await stack.stub.GetUserState(recommender_pb2.GetUserStateRequest(user_id="picky"))
    kept = [i.item_id for i in state.rejected_items]
    assert kept == ["x300", *[f"r{i}" for i in range(299, 250, -1)]]


async def test_facets_count_the_catalog_and_years_filter(stack):
    model = stack.servicer.core.model
    dim = model.image_dimension
    rows = [
        ("p1", "Puma", "Tshirts", "Fall", "2011"),
        ("p2", "Puma", "Casual Shoes", "Fall", "2011"),
        ("p3", "Puma", "Tshirts", "Summer", "2012"),
        ("n1", "Nike", "Tshirts", "Fall", "2011"),
        ("x1", "", "Watches", "", ""),
    ]
    await stack.stub.UpsertItems(
        recommender_pb2.UpsertItemsRequest(
            items=[
                recommender_pb2.UpsertItem(
                    item=common_pb2.Item(
                        item_id=i, title=i, brand=b, article_type=t, season=s, year=y
                    ),
                    image_embedding=common_pb2.Embedding(values=unit(n + 1.0, 1, dim=dim)),
                    caption_embedding=common_pb2.Embedding(
                        values=unit(1.0, dim=model.text_dimension)
                    ),
                    embedding_model_version=model.model_version,
                )
                for n, (i, b, t, s, y) in enumerate(rows)
            ]
        ),
        timeout=30,
    )
    reply = await stack.stub.GetFacets(
        recommender_pb2.GetFacetsRequest(fields=["brand", "year", "article_type"]), timeout=10
    )
    facets = {f.field: [(v.value, v.count) for v in f.values] for f in reply.facets}
    assert [f.field for f in reply.facets] == ["brand", "year", "article_type"]
    assert facets["brand"] == [("Puma", 3), ("Nike", 1)]  # empty values are not counted
    assert facets["year"] == [("2011", 3), ("2012", 1)]
    assert facets["article_type"] == [("Tshirts", 3), ("Casual Shoes", 1), ("Watches", 1)]
    assert reply.total_items == 5
    puma_2011 = await stack.stub.GetFacets(
        recommender_pb2.GetFacetsRequest(
            fields=["season"],
            filter=common_pb2.ItemFilter(brands=["Puma"], years=["2011"]),
            max_values=1,
        ),
        timeout=10,
    )
    assert [(v.value, v.count) for v in puma_2011.facets[0].values] == [("Fall", 2)]
    assert puma_2011.total_items == 2
    found = await stack.stub.SearchByText(
        recommender_pb2.SearchByTextRequest(
            query="shirt", filter=common_pb2.ItemFilter(years=["2012"]), page_size=10
        ),
        timeout=30,
    )
    assert [r.item.item_id for r in found.results] == ["p3"]
    assert found.results[0].item.year == "2012"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.stub.GetFacets(recommender_pb2.GetFacetsRequest(fields=["price"]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == "BAD_FACET"
