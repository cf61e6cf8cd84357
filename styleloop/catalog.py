"""The sample catalog layout: ``products.jsonl`` beside its images.

Read by training (`styleloop train align`) and the benchmarks; no heavy imports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

ATTRIBUTES = ("article_type", "base_colour", "usage", "master_category", "sub_category")


@dataclass(frozen=True)
class Product:
    id: str
    title: str
    image: Path
    attributes: dict[str, str]

    @property
    def caption(self) -> str:
        """The attribute caption the text side also learns from: "a black casual tshirts"."""
        a = self.attributes
        words = [a.get("base_colour", ""), a.get("usage", ""), a.get("article_type", "")]
        return "a " + " ".join(w for w in words if w and w != "None").lower()


class CatalogError(ValueError):
    """The catalog folder cannot be read; the message says why."""


def load_products(catalog: Path) -> list[Product]:
    """Products of a catalog folder in the sample layout (``products.jsonl`` + images),
    or of its parent (``DIR/fashion-product-images``). Rows without a readable image are
    skipped."""
    folder = (
        catalog / "fashion-product-images"
        if (catalog / "fashion-product-images").is_dir()
        else catalog
    )
    path = folder / "products.jsonl"
    if not path.is_file():
        raise CatalogError(f"no products.jsonl in {folder}")
    products = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            image = folder / str(row.get("image", ""))
            if not image.is_file():
                continue
            products.append(
                Product(
                    id=str(row["id"]),
                    title=str(row.get("title", "")),
                    image=image,
                    attributes={name: str(row.get(name, "")) for name in ATTRIBUTES},
                )
            )
    if not products:
        raise CatalogError(f"no product with a readable image in {path}")
    return products
