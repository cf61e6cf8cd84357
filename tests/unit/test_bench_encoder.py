"""The encoder benchmark's arithmetic: ratios pair the two modes of the same round, and the
table shows per-level medians over rounds."""

from __future__ import annotations

import pytest

from styleloop.bench.encoder import Measurement, medians, speedups


def row(mode: str, rate: float, round_number: int, concurrency: int = 32) -> Measurement:
    return Measurement(
        "image", mode, concurrency, 128, rate, 10.0 * round_number, 0, 0, round_number
    )


def test_speedups_pair_modes_within_each_round() -> None:
    results = [
        row("unbatched", 100, 0), row("batched", 150, 0),
        row("unbatched", 50, 1), row("batched", 150, 1),
        row("unbatched", 200, 2),  # round 2 has no batched figure yet: no ratio
        row("unbatched", 10, 0, concurrency=8), row("batched", 90, 0, concurrency=8),
    ]  # fmt: skip
    assert speedups(results, "image", 32) == [1.5, 3.0]
    assert speedups(results, "image", 8) == [9.0]
    assert speedups(results, "text", 32) == []


def test_medians_take_each_figure_over_rounds() -> None:
    results = [row("batched", rate, n) for n, rate in enumerate([100, 300, 200])]
    (summary,) = medians(results)
    assert summary.items_per_s == 200
    assert summary.p50_ms == 10.0  # the median of 0, 10, 20
    assert summary.requests == 3 * 128


def test_the_bare_model_is_timed_stage_by_stage_on_the_same_images(tiny_models) -> None:  # type: ignore[no-untyped-def]
    from styleloop.bench.encoder import bare_model, efficiency, load_images
    from styleloop.models.manifest import load_manifest

    manifest = load_manifest(tiny_models)
    assert manifest is not None and manifest.encoder is not None
    bare = bare_model(tiny_models, manifest.encoder, load_images(None, 8), batch_sizes=(1, 4))
    assert set(bare["images_per_s_by_batch"]) == {1, 4}
    assert bare["best_images_per_s"] == max(bare["images_per_s_by_batch"].values())
    assert bare["decode_ms"] > 0 and bare["preprocess_ms"] > 0
    cost = efficiency(bare["best_images_per_s"] / 2, bare)  # served at half the bare rate
    assert cost["ratio"] == 0.5
    assert cost["served_ms"] == 2 * cost["inference_ms"]
    parts = cost["decode_ms"] + cost["preprocess_ms"] + cost["inference_ms"]
    assert cost["grpc_and_rest_ms"] == pytest.approx(cost["served_ms"] - parts)
