"""Alignment training on a small generated catalog with the tiny preset (fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from styleloop.catalog import ATTRIBUTES, load_products
from styleloop.models import align
from styleloop.models.heads import load_heads
from tests.conftest import run_cli


def test_split_is_by_product_id_stable_and_never_leaks(drawn_catalog: Path):
    products = load_products(drawn_catalog)
    first = {p.id for p in products if align.is_validation(p.id, 0.25)}
    second = {p.id for p in products if align.is_validation(p.id, 0.25)}
    train = {p.id for p in products} - first
    assert first == second and first and train
    assert not first & train
    assert 0.1 < len(first) / len(products) < 0.45


def test_training_lowers_the_loss_and_saves_working_heads(
    drawn_catalog: Path, trained_models: Path
):
    meta = json.loads((trained_models / "align" / "meta.json").read_text())
    assert meta["losses"][-1] < meta["losses"][0]
    assert meta["validation_products"] + (meta["products"] - meta["validation_products"]) == 80
    _, _, attributes, saved = load_heads(trained_models / "align")
    assert saved["dim"] == 256 and {a.name for a in attributes} == set(ATTRIBUTES)
    features = align.extract_features(
        load_products(drawn_catalog), trained_models, trained_models / ".cache", progress=False
    )
    colour = next(a for a in attributes if a.name == "base_colour")
    with torch.no_grad():
        probabilities = colour(align.feature_inputs(features)).numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert float(colour.temperature) > 0
    truth = [p.attributes["base_colour"] for p in load_products(drawn_catalog)]
    accuracy = np.mean(
        [colour.classes[i] == t for i, t in zip(probabilities.argmax(1), truth, strict=True)]
    )
    assert accuracy > 0.9  # the colour statistics see the drawn colours


def test_evaluation_reports_heads_and_baselines(
    drawn_catalog: Path, trained_models: Path, tmp_path: Path
):
    for split in ("all", "validation"):
        results = align.run_evaluation(drawn_catalog, trained_models, split, progress=False)
        assert set(results) == {"styleloop heads", "ridge baseline", "random vectors"}
        for row in results.values():
            assert 0 <= row["R@1"] <= row["R@5"] <= row["R@10"] <= 1
            assert 0 <= row["P@5 same type"] <= 1
        assert "article_type acc" in results["styleloop heads"]
    out = tmp_path / "eval.json"
    result = run_cli(
        "eval",
        "retrieval",
        "--catalog",
        str(drawn_catalog),
        "--models-dir",
        str(trained_models),
        "--json",
        str(out),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    assert "ridge baseline" in result.stdout and json.loads(out.read_text())["random vectors"]


def test_cli_errors_are_clear(tmp_path: Path):
    result = run_cli(
        "train", "align", "--catalog", str(tmp_path), "--models-dir", str(tmp_path), "--no-progress"
    )
    assert result.returncode == 2 and "holds no catalog" in result.stderr
    result = run_cli("eval", "retrieval", "--catalog", str(tmp_path), "--models-dir", str(tmp_path))
    assert result.returncode == 2 and "no trained heads" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("seed", [106, 186, 251])
def test_the_fitted_temperature_stays_finite_and_in_range(seed: int) -> None:
    """Validation logits on which unbounded LBFGS steps to T = 1e-4 or NaN (seeds found by
    search; a CI run's fused text tower gave NaN vectors this way)."""
    import math

    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 3, (20,), generator=generator)
    logits = torch.randn(20, 3, generator=generator) + 3 * F.one_hot(target, 3)
    temperature = align.fit_temperature(logits, target)
    low, high = (math.exp(v) for v in align.LOG_TEMPERATURE)
    assert low - 1e-6 <= temperature <= high + 1e-6
    calibrated = F.cross_entropy(logits / temperature, target)
    assert torch.isfinite(F.softmax(logits / temperature, dim=1)).all()
    assert calibrated <= F.cross_entropy(logits, target) + 1e-6  # no worse than T = 1
