"""CompleteOutfit with a trained outfit scorer: the scorer ranks when it serves the encoder's
model version, the fallback (summed image-vector similarity) otherwise, and the response says
which. The scorer here is hand-built so the two rankings are known to disagree."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest

from services.recommender.outfits import (
    SCORER_META,
    SLOTS,
    OutfitScorer,
    ScorerError,
    load_scorer,
    read_scorer,
    save_scorer,
    slot_of,
)
from styleloop.models.manifest import load_manifest
from styleloop.v1 import common_pb2, recommender_pb2, recommender_pb2_grpc
from tests.unit.encoder.conftest import encoder_settings, start_encoder
from tests.unit.recommender.conftest import recommender_settings, start_recommender


def basis(i: int, dim: int) -> list[float]:
    vector = np.zeros(dim, np.float32)
    vector[i] = 1.0
    return vector.tolist()


def shifting_scorer(dim: int) -> dict[str, np.ndarray]:
    """Weights whose query for any slot is the outfit's mean caption vector moved from
    dimension 0 to dimension 1: a candidate is compatible when its caption points along 1."""
    k = len(SLOTS)
    context = np.zeros((k, k, dim, dim), np.float32)
    context[:, :] = np.eye(dim, dtype=np.float32)
    candidate = np.zeros((k, dim, dim), np.float32)
    candidate[:, 0, 1] = 1.0
    return {
        "candidate": candidate,
        "context": context,
        "w1": np.zeros((1, dim), np.float32),
        "b1": np.zeros(1, np.float32),
        "w2": np.zeros((dim, 1), np.float32),
        "alpha": np.zeros(1, np.float32),
    }


def test_the_query_is_the_formula_and_scores_are_its_dot_products():
    rng = np.random.default_rng(0)
    d, r, h, k = 6, 4, 3, len(SLOTS)
    w = {
        "candidate": rng.normal(size=(k, r, d)),
        "context": rng.normal(size=(k, k, r, d)),
        "w1": rng.normal(size=(h, r)),
        "b1": rng.normal(size=h),
        "w2": rng.normal(size=(r, h)),
    }
    scorer = OutfitScorer("s", "v", d, **w, alpha=0.5, meta={})
    f = [rng.normal(size=d) for _ in range(2)]
    f = [v / np.linalg.norm(v) for v in f]
    outfit = [("upper", f[0]), ("shoe", f[1])]
    t = SLOTS.index("bag")
    z = (w["context"][0, t] @ f[0] + w["context"][2, t] @ f[1]) / 2
    z = z + w["w2"] @ np.maximum(w["w1"] @ z + w["b1"], 0)
    expected = w["candidate"][t].T @ z + 0.5 * (f[0] + f[1]) / 2
    np.testing.assert_allclose(scorer.query(outfit, "bag"), expected, rtol=1e-5)
    candidates = rng.normal(size=(3, d))
    unit = candidates / np.linalg.norm(candidates, axis=1, keepdims=True)
    np.testing.assert_allclose(scorer.score(outfit, "bag", candidates), unit @ expected, rtol=1e-5)


def test_catalog_categories_map_to_outfit_slots():
    assert slot_of("Topwear") == "upper"
    assert slot_of(" bottomwear ") == "bottom"
    assert slot_of("Shoes") == "shoe"
    assert slot_of("Bags") == "bag"
    assert slot_of("Watches") == "accessory"
    assert slot_of("Innerwear") is None


def test_a_scorer_round_trips_and_is_refused_for_another_model_version(tmp_path: Path):
    weights = shifting_scorer(4)
    save_scorer(tmp_path, weights, {"scorer_id": "hand", "model_version": "v1"})
    scorer = read_scorer(tmp_path)
    np.testing.assert_array_equal(scorer.candidate, weights["candidate"])
    assert scorer.method == "trained:hand"
    assert load_scorer(tmp_path, "v1")[0] is not None
    missing, why = load_scorer(tmp_path, "v2")
    assert missing is None and "trained on encoder v1" in why and "v2" in why
    assert "OUTFIT_SCORER_DIR" in load_scorer(None, "v1")[1]
    assert "no trained outfit scorer" in load_scorer(tmp_path / "nowhere", "v1")[1]
    meta = json.loads((tmp_path / SCORER_META).read_text())
    (tmp_path / SCORER_META).write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(ScorerError, match="another format"):
        read_scorer(tmp_path)


@pytest.fixture
def tiny_version(tiny_models: Path) -> tuple[str, int, int]:
    encoder = load_manifest(tiny_models).encoder
    return encoder.model_version, encoder.image.dimension, encoder.text.dimension


@pytest.mark.parametrize("served", ["trained", "no scorer", "other version"])
async def test_complete_outfit_uses_the_trained_scorer_where_it_disagrees_with_the_fallback(
    served, tiny_models: Path, tmp_path: Path, tiny_version
):
    version, image_dim, text_dim = tiny_version
    scorer_dir = tmp_path / "outfits"
    if served != "no scorer":
        model_version = version if served == "trained" else "another-encoder"
        save_scorer(
            scorer_dir,
            shifting_scorer(text_dim),
            {"scorer_id": "hand-built", "model_version": model_version},
        )
    enc_server, encoder = await start_encoder(encoder_settings(tiny_models))
    settings = recommender_settings(enc_server.port, tmp_path, outfit_scorer_dir=scorer_dir)
    server, servicer = await start_recommender(settings)
    # (item id, category, image vector, caption vector)
    rows = [
        ("top", "Topwear", basis(0, image_dim), basis(0, text_dim)),
        ("jeans", "Bottomwear", basis(0, image_dim), basis(0, text_dim)),
        # The fallback's pick: the same image vector as the outfit; a caption the scorer
        # finds incompatible.
        ("shoes-look-alike", "Shoes", basis(0, image_dim), basis(2, text_dim)),
        # The scorer's pick: an unrelated image vector, the caption it wants.
        ("shoes-compatible", "Shoes", basis(1, image_dim), basis(1, text_dim)),
    ]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            await stub.UpsertItems(
                recommender_pb2.UpsertItemsRequest(
                    items=[
                        recommender_pb2.UpsertItem(
                            item=common_pb2.Item(item_id=i, title=i, category=c),
                            image_embedding=common_pb2.Embedding(values=image),
                            caption_embedding=common_pb2.Embedding(values=caption),
                            embedding_model_version=version,
                        )
                        for i, c, image, caption in rows
                    ]
                ),
                timeout=30,
            )
            result = await stub.CompleteOutfit(
                recommender_pb2.CompleteOutfitRequest(
                    item_ids=["top", "jeans"], wanted_category="Shoes", page_size=5
                ),
                timeout=30,
            )
            # A category that is no outfit slot falls back even with a scorer.
            innerwear = await stub.CompleteOutfit(
                recommender_pb2.CompleteOutfitRequest(
                    item_ids=["top"], wanted_category="Innerwear", page_size=5
                ),
                timeout=30,
            )
    finally:
        await server.stop(grace=0)
        await servicer.core.close()
        await enc_server.stop(grace=0)
        await encoder.stop()
    ranked = [r.item.item_id for r in result.results]
    assert set(ranked) == {"shoes-look-alike", "shoes-compatible"}
    if served == "trained":
        assert ranked[0] == "shoes-compatible"
        assert result.method == "trained:hand-built" and result.fallback_reason == ""
    else:
        assert ranked[0] == "shoes-look-alike"
        assert result.method == "vector_sum"
        expected = "no trained outfit scorer" if served == "no scorer" else "another-encoder"
        assert expected in result.fallback_reason
    assert innerwear.method == "vector_sum" and innerwear.fallback_reason
