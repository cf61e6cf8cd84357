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
    exact_top,
    item_features,
    load_scorer,
    read_scorer,
    save_scorer,
    slot_of,
    word_vector,
)
from styleloop.models.manifest import load_manifest
from styleloop.v1 import recommender_pb2, recommender_pb2_grpc
from tests.unit.encoder.conftest import encoder_settings, start_encoder
from tests.unit.recommender.conftest import (
    recommender_settings,
    start_recommender,
    upsert_vectors,
)


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
    # Candidates are given as features (unit text vectors when the scorer has no words).
    np.testing.assert_allclose(scorer.score(outfit, "bag", unit), unit @ expected, rtol=1e-5)


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
            await upsert_vectors(stub, version, [(i, i, c, im, cap) for i, c, im, cap in rows])
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


def random_word_scorer(d: int, buckets: int, seed: int) -> dict[str, np.ndarray]:
    """Random weights over ``d``-d text vectors and ``buckets`` word buckets."""
    rng = np.random.default_rng(seed)
    r, h, k, width = 4, 3, len(SLOTS), d + buckets
    return {
        "candidate": rng.normal(size=(k, r, width)).astype(np.float32),
        "context": rng.normal(size=(k, k, r, width)).astype(np.float32),
        "w1": rng.normal(size=(h, r)).astype(np.float32),
        "b1": rng.normal(size=h).astype(np.float32),
        "w2": rng.normal(size=(r, h)).astype(np.float32),
        "alpha": np.array([0.3], np.float32),
        "word_weight": np.array([1.5], np.float32),
    }


WORDS = ["red", "blue", "black", "leather", "suede", "denim", "lace", "silk", "wool", "gold"]


def random_titles(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(0, 4)))) for _ in range(n)]


def test_words_hash_stably_to_a_unit_vector_and_features_put_them_beside_the_text_vector():
    a = word_vector("Black LEATHER boots, black", 64)
    assert a.shape == (64,) and abs(float(np.linalg.norm(a)) - 1) < 1e-6
    np.testing.assert_array_equal(a, word_vector("boots leather black", 64))  # a set of words
    assert not word_vector("...", 64).any()
    assert not np.array_equal(a, word_vector("black suede boots", 64))
    vector = np.array([3.0, 4.0])
    np.testing.assert_allclose(item_features(vector, "black boots", 0, 1.5), [0.6, 0.8])
    both = item_features(vector, "black boots", 64, 1.5)
    assert both.shape == (66,) and abs(float(np.linalg.norm(both)) - 1) < 1e-6
    np.testing.assert_allclose(both[2:] / both[0], 1.5 * word_vector("black boots", 64) / 0.6)


@pytest.mark.parametrize("count", [1, 5, 40, 199, 300])
def test_exact_top_is_the_scorer_over_every_candidate(count: int):
    """Whatever depth the words force, the head read from the text-vector order gives the
    scorer's own top ``count`` over all 300 candidates."""
    d, buckets = 8, 32
    w = random_word_scorer(d, buckets, seed=count)
    matrices = {k: v for k, v in w.items() if k not in ("alpha", "word_weight")}
    scorer = OutfitScorer(
        "s", "v", d, **matrices, alpha=0.3, meta={}, word_buckets=buckets, word_weight=1.5
    )
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(300, d)).astype(np.float32)
    titles = random_titles(300, seed=2)
    keys = [f"item-{i:03d}" for i in range(300)]
    outfit = [
        ("upper", scorer.features(rng.normal(size=d), "red silk")),
        ("shoe", scorer.features(rng.normal(size=d), "")),
    ]
    q = scorer.query(outfit, "bag")
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sizes = []

    def head(vector: list[float], n: int) -> list[tuple[str, float, str, int]]:
        sizes.append(n)
        cosine = unit @ (np.asarray(vector) / np.linalg.norm(vector))
        order = sorted(range(300), key=lambda i: -cosine[i])[:n]
        return [(keys[i], float(cosine[i]), titles[i], i) for i in order]

    top = exact_top(scorer, q, head, count, lambda: 300)
    features = np.stack([scorer.features(v, t) for v, t in zip(vectors, titles, strict=True)])
    scores = scorer.score(outfit, "bag", features)
    expected = sorted(range(300), key=lambda i: (-scores[i], keys[i]))[:count]
    assert [r.row for r in top] == expected
    np.testing.assert_allclose([r.score for r in top], scores[expected], rtol=1e-4, atol=1e-5)
    dense_order = sorted(range(300), key=lambda i: -float(unit[i] @ q[:d]))[:count]
    if count == 40:
        assert dense_order != expected  # the words change the ranking here
    assert sizes[0] == max(2 * count, 64) and sizes[1:] in ([], [300])  # the page, else all


def test_a_scorer_with_words_round_trips_and_one_without_reads_as_none(tmp_path: Path):
    meta = {"scorer_id": "w", "model_version": "v", "word_buckets": 16}
    save_scorer(tmp_path / "w", random_word_scorer(4, 16, 0), meta)
    scorer = read_scorer(tmp_path / "w")
    assert (scorer.dimension, scorer.word_buckets, scorer.word_weight) == (4, 16, 1.5)
    assert scorer.features(np.ones(4), "red silk").shape == (20,)
    save_scorer(tmp_path / "old", shifting_scorer(4), {"scorer_id": "o", "model_version": "v"})
    old = read_scorer(tmp_path / "old")
    assert (old.dimension, old.word_buckets, old.word_weight) == (4, 0, 0.0)
    np.testing.assert_allclose(old.features(np.array([0.0, 2, 0, 0]), "red"), [0, 1, 0, 0])


async def ninety_shoes_in_three_pages(
    tiny_models: Path, tmp_path: Path, tiny_version, scorer_dir: Path
) -> tuple[list, list, list]:
    """90 shoes with random captions and titles and a top + jeans outfit in a recommender
    serving ``scorer_dir``; the three pages of 30 CompleteOutfit returns for shoes."""
    version, image_dim, text_dim = tiny_version
    rng = np.random.default_rng(3)
    titles = random_titles(90, seed=4)
    shoes = [(f"shoe-{i:02d}", rng.normal(size=text_dim).tolist(), titles[i]) for i in range(90)]
    outfit = [
        ("top", "Topwear", rng.normal(size=text_dim).tolist(), "red lace top"),
        ("jeans", "Bottomwear", rng.normal(size=text_dim).tolist(), "blue denim jeans"),
    ]
    enc_server, encoder = await start_encoder(encoder_settings(tiny_models))
    settings = recommender_settings(enc_server.port, tmp_path, outfit_scorer_dir=scorer_dir)
    server, servicer = await start_recommender(settings)
    rows = [(i, c, v, t) for i, c, v, t in outfit] + [(i, "Shoes", v, t) for i, v, t in shoes]
    pages = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            image = basis(0, image_dim)
            await upsert_vectors(stub, version, [(i, t, c, image, v) for i, c, v, t in rows])
            token = ""
            for _ in range(3):
                page = await stub.CompleteOutfit(
                    recommender_pb2.CompleteOutfitRequest(
                        item_ids=["top", "jeans"], wanted_category="Shoes", page_size=30,
                        page_token=token,
                    ),
                    timeout=30,
                )  # fmt: skip
                pages.append(page)
                token = page.next_page_token
    finally:
        await server.stop(grace=0)
        await servicer.core.close()
        await enc_server.stop(grace=0)
        await encoder.stop()
    return shoes, outfit, pages


async def test_complete_outfit_serves_the_scorer_with_words_exactly_across_pages(
    tiny_models: Path, tmp_path: Path, tiny_version
):
    """90 shoes with random captions and titles: the pages CompleteOutfit returns are the
    scorer's own ranking of all 90 (words included), not the caption-vector order."""
    version, _, text_dim = tiny_version
    buckets = 32
    scorer_dir = tmp_path / "outfits"
    weights = random_word_scorer(text_dim, buckets, seed=7)
    meta = {"scorer_id": "words", "model_version": version, "word_buckets": buckets}
    save_scorer(scorer_dir, weights, meta)
    scorer = read_scorer(scorer_dir)
    shoes, outfit, pages = await ninety_shoes_in_three_pages(
        tiny_models, tmp_path, tiny_version, scorer_dir
    )
    assert all(p.method == "trained:words" for p in pages)
    served = [r.item.item_id for p in pages for r in p.results]
    query = [
        (slot, scorer.features(v, t))
        for slot, (_, _, v, t) in zip(("upper", "bottom"), outfit, strict=True)
    ]
    scores = scorer.score(query, "shoe", np.stack([scorer.features(v, t) for _, v, t in shoes]))
    expected = [shoes[i][0] for i in sorted(range(90), key=lambda i: (-scores[i], shoes[i][0]))]
    assert served == expected
    q = scorer.query(query, "shoe")
    by_caption = sorted(
        shoes, key=lambda s: -float(np.asarray(s[1]) @ q[:text_dim]) / np.linalg.norm(s[1])
    )
    assert [s[0] for s in by_caption] != expected  # the words matter here


async def test_complete_outfit_adds_the_outfit_towers_cosine_exactly_across_pages(
    tiny_models: Path, tmp_path: Path, tiny_version
):
    """A scorer with a text tower (here the tiny preset's, exported as
    ``styleloop train outfits`` exports a fine-tuned one) ranks by the scorer's score plus
    lambda times the candidate title's tower cosine to the outfit's mean tower vector."""
    from styleloop.models.presets import load_encoder
    from styleloop.outfit_tower import TowerEmbedder, export_tower

    version, _, text_dim = tiny_version
    buckets, lam = 32, 4.0
    scorer_dir = tmp_path / "outfits"
    weights = random_word_scorer(text_dim, buckets, seed=7)
    meta = {
        "scorer_id": "tower",
        "model_version": version,
        "word_buckets": buckets,
        "tower": {"lambda": lam},
    }
    save_scorer(scorer_dir, weights, meta)
    loaded = load_encoder("tiny", "styleloop/tiny-clip")
    export_tower(loaded, loaded.text_tower, scorer_dir / "tower", 64)
    scorer, tower = read_scorer(scorer_dir), TowerEmbedder(scorer_dir / "tower")
    shoes, outfit, pages = await ninety_shoes_in_three_pages(
        tiny_models, tmp_path, tiny_version, scorer_dir
    )
    served = [r.item.item_id for p in pages for r in p.results]
    query = [
        (slot, scorer.features(v, t))
        for slot, (_, _, v, t) in zip(("upper", "bottom"), outfit, strict=True)
    ]
    base = scorer.score(query, "shoe", np.stack([scorer.features(v, t) for _, v, t in shoes]))
    context = tower([t for *_, t in outfit]).mean(axis=0)
    scores = base + lam * (tower([t for *_, t in shoes]) @ context)
    expected = [shoes[i][0] for i in sorted(range(90), key=lambda i: (-scores[i], shoes[i][0]))]
    assert served == expected
    without = [shoes[i][0] for i in sorted(range(90), key=lambda i: (-base[i], shoes[i][0]))]
    assert without != expected  # the tower matters here
