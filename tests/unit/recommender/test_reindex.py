"""A new encoder model: the recommender moves the previous model's catalog at start."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from services.recommender.config import RecommenderSettings
from services.recommender.store import ClientStore, EdgeStore, Stored
from styleloop.v1 import recommender_pb2, recommender_pb2_grpc
from tests.conftest import encode_png, synthetic_garment
from tests.unit.encoder.conftest import encoder_settings, start_encoder
from tests.unit.recommender.conftest import start_recommender

OLD = "items-some-older-model-0123456789ab"


def old_catalog(images: Path) -> list[Stored]:
    rows = []
    for i in range(5):
        path = images / f"{i}.png"
        if i != 4:  # item 4's photo is gone: reported, not fatal
            path.write_bytes(encode_png(synthetic_garment(40 + i)))
        rows.append(
            Stored(
                f"old-{i}",
                {
                    "item_id": f"old-{i}",
                    "title": f"old item {i}",
                    "category": "Topwear",
                    "image_uri": f"{i}.png",
                    "caption": f"a drawn garment number {i}",
                },
                # The previous model's vectors: another size entirely; never reused.
                {"image": [1.0] * 7, "caption": [1.0] * 5},
            )
        )
    # Paths that lead out of IMAGE_ROOT are never read, even when the file exists.
    outside = images.parent / "secret.png"
    outside.write_bytes(encode_png(synthetic_garment(49)))
    for name, uri in (("escape", "../secret.png"), ("absolute", str(outside))):
        payload = {"item_id": name, "title": name, "category": "Topwear", "image_uri": uri}
        rows.append(Stored(name, payload, {"image": [1.0] * 7, "caption": [1.0] * 5}))
    return rows


@pytest.mark.parametrize("backend", ["edge", "qdrant"])
async def test_catalog_and_users_move_to_the_new_model(backend, tiny_models, tmp_path: Path):
    images = tmp_path / "images"
    images.mkdir()
    settings_values = {
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_port": -1,
        "store_backend": backend,
        "data_dir": tmp_path / "edge",
        "qdrant_url": str(tmp_path / "qdrant"),
        "image_root": images,
        "encoder_timeout_s": 5,
        "encoder_wait_s": 5,
    }
    user = Stored(
        "u1", {"like": {"old-1": 1700000000.0}, "reject": {}, "purchase": {}, "events": []}, {}
    )
    if backend == "edge":
        old_items = EdgeStore(tmp_path / "edge" / OLD, {"image": 7, "caption": 5})
        old_users = EdgeStore(
            tmp_path / "edge" / OLD.replace("items-", "users-"), {"preference": 7}, indexed=False
        )
        old_items.upsert(old_catalog(images))
        old_users.upsert([user])
        old_items.close()
        old_users.close()
    else:
        from qdrant_client import QdrantClient

        client = QdrantClient(path=str(tmp_path / "qdrant"))
        ClientStore(client, OLD, {"image": 7, "caption": 5}, indexed=False).upsert(
            old_catalog(images)
        )
        ClientStore(
            client, OLD.replace("items-", "users-"), {"preference": 7}, indexed=False
        ).upsert([user])
        client.close()

    enc_server, encoder = await start_encoder(encoder_settings(tiny_models))
    settings = RecommenderSettings(encoder_addr=f"127.0.0.1:{enc_server.port}", **settings_values)
    server, servicer = await start_recommender(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            listed = await stub.ListItems(recommender_pb2.ListItemsRequest(page_size=50))
            hits = await stub.SearchByImage(
                recommender_pb2.SearchByImageRequest(
                    image=(images / "2.png").read_bytes(), page_size=1
                )
            )
            state = await stub.GetUserState(recommender_pb2.GetUserStateRequest(user_id="u1"))
    finally:
        await server.stop(grace=0)
        await servicer.core.close()
        await enc_server.stop(grace=0)
        await encoder.stop()
    assert {i.item_id for i in listed.items} == {"old-0", "old-1", "old-2", "old-3"}
    assert all(i.caption.startswith("a drawn garment") for i in listed.items)
    assert hits.results[0].item.item_id == "old-2"
    assert [i.item_id for i in state.liked_items] == ["old-1"]
