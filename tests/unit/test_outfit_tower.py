"""The outfit text tower: fine-tuning learns a planted cross-slot pattern a
random tower's cosine cannot see, and the exported ONNX tower embeds as PyTorch does."""

from __future__ import annotations

import numpy as np

from styleloop.models.presets import load_encoder
from styleloop.outfit_tower import (
    TowerConfig,
    TowerEmbedder,
    cosine_fitb,
    export_tower,
    fine_tune_tower,
)
from styleloop.outfits import read_outfits, select
from tests.conftest import planted_outfits


def test_fine_tuning_learns_a_planted_pattern_and_the_onnx_tower_embeds_the_same(tmp_path):
    data = read_outfits(planted_outfits(tmp_path / "planted.json"))
    train, tune, test = (select(data.outfits, p) for p in ("train", "tune", "test"))
    loaded = load_encoder("tiny", "styleloop/tiny-clip")
    config = TowerConfig(epochs=6, patience=6, lr=1e-3)
    tower, vectors, report = fine_tune_tower(loaded, train, tune, config, progress=False)
    assert report["tune_cosine_fitb_best"] > report["tune_cosine_fitb_start"] + 0.2, report

    export_tower(loaded, tower, tmp_path / "tower", config.max_length)
    embed = TowerEmbedder(tmp_path / "tower")
    names = sorted({n for o in test for _, n in o.items})
    onnx = dict(zip(names, embed(names), strict=True))
    assert cosine_fitb(test, onnx, 0) > 0.5  # held-out outfits, chance 0.25
    shared = sorted(vectors)[:64]  # train and tune names, as the best epoch embedded them
    got, want = embed(shared), np.stack([vectors[n] for n in shared])
    assert float((got * want).sum(axis=1).min()) > 0.999
