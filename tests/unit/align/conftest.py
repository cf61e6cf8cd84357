"""Alignment fixtures: a small generated catalog, and tiny models with heads trained on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from styleloop.models import align

COLOURS = {
    "Black": (20, 20, 20),
    "Red": (200, 30, 30),
    "Blue": (30, 60, 200),
    "Green": (30, 160, 60),
}
TYPES = ("Tshirts", "Shoes", "Skirts")


@pytest.fixture(scope="session")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 drawn products whose photos really show their colour and type."""
    folder = tmp_path_factory.mktemp("catalog")
    (folder / "images").mkdir()
    rows = []
    for i in range(80):
        colour = list(COLOURS)[i % 4]
        kind = TYPES[(i // 4) % 3]
        image = Image.new("RGB", (96, 96), "white")
        draw = ImageDraw.Draw(image)
        box = (10 + i % 7, 12, 80, 84 - i % 5)
        {"Tshirts": draw.rectangle, "Shoes": draw.ellipse, "Skirts": draw.pieslice}[kind](
            box, fill=COLOURS[colour], **({"start": 200, "end": 340} if kind == "Skirts" else {})
        )
        image.save(folder / "images" / f"{i}.png")
        rows.append(
            {
                "id": str(1000 + i),
                "title": f"{colour} {kind} number {i}",
                "article_type": kind,
                "base_colour": colour,
                "usage": "Casual",
                "master_category": "Apparel",
                "sub_category": kind,
                "image": f"images/{i}.png",
            }
        )
    (folder / "products.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


@pytest.fixture(scope="session")
def trained_models(
    catalog: Path, tiny_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A copy of the tiny models (the session's own stay untouched) with heads trained on
    ``catalog``, not yet fused into the served encoder."""
    models = tmp_path_factory.mktemp("aligned") / "models"
    shutil.copytree(tiny_models, models)
    align.run_training(catalog, models, max_epochs=40, validation_fraction=0.25, progress=False)
    return models
