"""Catalogs: readers for every supported layout (ingestion), and the products training
reads. Every supported layout becomes rows for the recommender, and every bad
row a :class:`RowProblem` with its row number. Nothing here raises for a bad row.

Layouts (``detect`` picks one from a path):

* a ``.jsonl`` or ``.csv`` file (or a folder holding ``products.jsonl`` / ``products.csv``):
  one item a row — ``id``, ``image`` (a path relative to the file), ``title``, ``brand``,
  ``season``, ``category``, ``price``, optional ``description`` and ``caption``, and any of
  ``article_type``, ``colour``, ``usage``, ``gender``, ``currency_code``; other columns
  become item attributes. StyleLoop's sample (``fashion-product-images/products.jsonl``)
  is this layout.
* the Kaggle "Fashion Product Images" download: ``styles.csv`` + ``images/<id>.jpg``.
* Polyvore Outfits (Vasileva et al.): ``polyvore_item_metadata.json``, outfit files
  ``[disjoint|nondisjoint/]{train,valid,test}.json`` and ``images/<item_id>.jpg``.
* Polyvore as prepared by fashion_compatibility_mcn: ``*_outfits.json`` (outfit → slot →
  ``{index, name}``) and ``images/<outfit_id>/<index>.jpg``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from styleloop.runtime.inputs import DEFAULT_MAX_IMAGE_BYTES
from styleloop.v1 import common_pb2

# The recommender Item's text fields a catalog row may fill (ids and image are apart).
ITEM_FIELDS = tuple(
    f.name
    for f in common_pb2.Item.DESCRIPTOR.fields
    if f.type == f.TYPE_STRING and f.name not in ("item_id", "image_uri")
)
ALIASES = {
    "item_id": "id",
    "name": "title",
    "product_display_name": "title",
    "productdisplayname": "title",
    "color": "colour",
    "base_colour": "colour",
    "basecolour": "colour",
    "base_color": "colour",
    "articletype": "article_type",
    "sub_category": "category",
    "subcategory": "category",
    "mastercategory": "master_category",
    "currency": "currency_code",
    "image_path": "image",
}


class CatalogError(ValueError):
    """The catalog as a whole cannot be read; the message says why."""


ATTRIBUTES = ("article_type", "base_colour", "usage", "master_category", "sub_category")


@dataclass(frozen=True)
class CatalogRow:
    """A valid row: the item's fields, its image file and a digest of both."""

    row: int
    item: dict[str, Any]
    image: Path
    digest: str


@dataclass(frozen=True)
class RowProblem:
    row: int
    item_id: str
    reason: str
    message: str


@dataclass(frozen=True)
class Outfit:
    outfit_id: str
    item_ids: list[str]


@dataclass
class Catalog:
    layout: str
    source: Path
    rows: list[CatalogRow] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    duplicates: int = 0
    outfits: list[Outfit] = field(default_factory=list)


def _key(name: str) -> str:
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    return ALIASES.get(key, key)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inside(path: Path, folder: Path) -> bool:
    """``path`` (symbolic links followed) lies in ``folder``."""
    return path.resolve().is_relative_to(folder.resolve())


class _Builder:
    """Validates raw rows into a :class:`Catalog`."""

    def __init__(self, layout: str, source: Path, allow_outside_images: bool = False) -> None:
        self.catalog = Catalog(layout, source)
        self.allow_outside_images = allow_outside_images
        self._seen: dict[str, str] = {}

    def problem(self, row: int, item_id: str, reason: str, message: str) -> None:
        self.catalog.problems.append(RowProblem(row, item_id, reason, message))

    def add(self, row: int, raw: dict[str, Any], base: Path) -> None:
        fields = {_key(k): v for k, v in raw.items() if k is not None}
        item_id = str(fields.pop("id", "") or "").strip()
        if not item_id:
            self.problem(row, "", "MISSING_ID", "the row has no id")
            return
        image_value = str(fields.pop("image", "") or "").strip()
        if not image_value:
            self.problem(row, item_id, "MISSING_IMAGE", "the row names no image")
            return
        if "://" in image_value:
            self.problem(
                row, item_id, "IMAGE_URL", f"{image_value}: only local image files are read"
            )
            return
        image = base / image_value
        if not self.allow_outside_images and not inside(image, base):
            self.problem(
                row,
                item_id,
                "IMAGE_OUTSIDE_CATALOG",
                f"{image_value}: the image must lie in the catalog's folder {base} "
                "(--allow-outside-images reads it anyway)",
            )
            return
        if not image.is_file():
            self.problem(row, item_id, "IMAGE_NOT_FOUND", f"no image file at {image}")
            return
        size = image.stat().st_size
        if size > DEFAULT_MAX_IMAGE_BYTES:
            self.problem(
                row,
                item_id,
                "IMAGE_TOO_LARGE",
                f"{image} is {size} bytes; the limit is {DEFAULT_MAX_IMAGE_BYTES}",
            )
            return
        price_value = fields.pop("price", "")
        price = 0.0
        if price_value not in ("", None):
            try:
                price = float(price_value)
            except (TypeError, ValueError):
                price = math.nan
            if not math.isfinite(price) or price < 0:
                self.problem(row, item_id, "BAD_PRICE", f"price {price_value!r} is not >= 0")
                return
        item: dict[str, Any] = {"item_id": item_id, "price": price, "image_uri": image_value}
        for name in ITEM_FIELDS:
            value = fields.pop(name, "")
            item[name] = "" if value is None else str(value).strip()
        if item["year"].endswith(".0") and item["year"][:-2].isdigit():
            item["year"] = item["year"][:-2]  # 2011.0, as spreadsheets write it
        attributes = {
            k: str(v).strip()
            for k, v in fields.items()
            if v not in (None, "") and not isinstance(v, dict | list)
        }
        item["attributes"] = attributes
        try:
            image_digest = _file_digest(image)
        except OSError as exc:
            self.problem(row, item_id, "IMAGE_UNREADABLE", f"{image}: {exc.strerror}")
            return
        digest = hashlib.sha256(
            (json.dumps(item, sort_keys=True) + image_digest).encode()
        ).hexdigest()[:16]
        previous = self._seen.get(item_id)
        if previous is not None:
            if previous == digest:
                self.catalog.duplicates += 1
            else:
                self.problem(
                    row,
                    item_id,
                    "DUPLICATE_ID",
                    f"id {item_id!r} appeared before with other content",
                )
            return
        self._seen[item_id] = digest
        self.catalog.rows.append(CatalogRow(row, item, image, digest))


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, f"not JSON: {exc.msg}"
                continue
            yield number, value if isinstance(value, dict) else "not a JSON object"


def _csv(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for record in reader:
            if None in record:  # more fields than the header names
                yield reader.line_num, f"{len(record[None]) + len(reader.fieldnames or [])} fields"
                continue
            yield reader.line_num, record


def read_rows(path: Path, layout: str = "rows", allow_outside_images: bool = False) -> Catalog:
    """A JSONL or CSV file of items; image paths are relative to the file's folder."""
    builder = _Builder(layout, path, allow_outside_images)
    rows = _csv(path) if path.suffix.lower() == ".csv" else _jsonl(path)
    for number, raw in rows:
        if isinstance(raw, str):
            builder.problem(number, "", "BAD_ROW", raw)
        else:
            builder.add(number, raw, path.parent)
    return builder.catalog


def read_kaggle(folder: Path, allow_outside_images: bool = False) -> Catalog:
    """``styles.csv`` + ``images/<id>.jpg`` (the Kaggle Fashion Product Images layout)."""
    builder = _Builder("kaggle-fashion-product-images", folder, allow_outside_images)
    for number, raw in _csv(folder / "styles.csv"):
        if isinstance(raw, str):
            builder.problem(number, "", "BAD_ROW", raw)
            continue
        raw = dict(raw)
        raw.setdefault("image", f"images/{raw.get('id', '')}.jpg")
        builder.add(number, raw, folder)
    return builder.catalog


def read_polyvore(folder: Path, allow_outside_images: bool = False) -> Catalog:
    """Polyvore Outfits: item metadata, outfit files and ``images/<item_id>.jpg``. Each
    item carries the outfits it belongs to as its ``outfit_ids`` attribute."""
    builder = _Builder("polyvore-outfits", folder, allow_outside_images)
    outfits: dict[str, Outfit] = {}
    for path in sorted(folder.glob("*/*.json")) + sorted(folder.glob("*.json")):
        if path.name not in ("train.json", "valid.json", "test.json"):
            continue
        for entry in json.loads(path.read_text(encoding="utf-8")):
            outfit_id = str(entry["set_id"])
            outfits[outfit_id] = Outfit(outfit_id, [str(i["item_id"]) for i in entry["items"]])
    member_of: dict[str, list[str]] = {}
    for outfit in outfits.values():
        for item_id in outfit.item_ids:
            member_of.setdefault(item_id, []).append(outfit.outfit_id)
    metadata = json.loads((folder / "polyvore_item_metadata.json").read_text(encoding="utf-8"))
    for number, (item_id, meta) in enumerate(sorted(metadata.items()), start=1):
        title = meta.get("title") or meta.get("url_name") or ""
        raw = {
            "id": item_id,
            "image": f"images/{item_id}.jpg",
            "title": title,
            "description": meta.get("description", ""),
            "category": meta.get("semantic_category", ""),
            "polyvore_category_id": meta.get("category_id", ""),
            "outfit_ids": " ".join(sorted(member_of.get(item_id, []))),
        }
        builder.add(number, raw, folder)
    builder.catalog.outfits = list(outfits.values())
    return builder.catalog


def read_polyvore_mcn(folder: Path, allow_outside_images: bool = False) -> Catalog:
    """Polyvore as fashion_compatibility_mcn prepares it: ``*_outfits.json`` mapping outfit →
    slot → ``{index, name}``, images at ``images/<outfit_id>/<index>.jpg``."""
    builder = _Builder("polyvore-mcn", folder, allow_outside_images)
    number = 0
    for path in sorted(folder.glob("*outfits.json")):
        for outfit_id, slots in json.loads(path.read_text(encoding="utf-8")).items():
            ids = []
            for slot, entry in slots.items():
                number += 1
                item_id = f"{outfit_id}_{entry['index']}"
                ids.append(item_id)
                raw = {
                    "id": item_id,
                    "image": f"images/{outfit_id}/{entry['index']}.jpg",
                    "title": entry.get("name", ""),
                    "slot": slot,
                    "outfit_ids": str(outfit_id),
                }
                builder.add(number, raw, folder)
            builder.catalog.outfits.append(Outfit(str(outfit_id), ids))
    return builder.catalog


def configured_catalog(value: Path | None) -> Path | None:
    """``value``, else the sample data folder ``$STYLELOOP_DATA_DIR`` when it exists."""
    if value is not None:
        return value
    configured = os.environ.get("STYLELOOP_DATA_DIR")
    return Path(configured) if configured and Path(configured).is_dir() else None


def read_catalog(path: Path, allow_outside_images: bool = False) -> Catalog:
    """Read any supported layout; :class:`CatalogError` when ``path`` is none of them.

    Image paths that lead out of the catalog's folder (``../``, absolute paths, links)
    are bad rows unless ``allow_outside_images``; images over the services' byte limit
    are bad rows without being read."""
    outside = allow_outside_images
    if path.is_file():
        if path.suffix.lower() in (".jsonl", ".csv", ".json"):
            return read_rows(path, allow_outside_images=outside)
        raise CatalogError(f"{path}: expected a .jsonl or .csv file")
    if not path.is_dir():
        raise CatalogError(f"{path} does not exist")
    for folder in (path, path / "fashion-product-images"):
        for name in ("products.jsonl", "products.csv"):
            if (folder / name).is_file():
                return read_rows(folder / name, "products", outside)
    if (path / "styles.csv").is_file():
        return read_kaggle(path, outside)
    if (path / "polyvore_item_metadata.json").is_file():
        return read_polyvore(path, outside)
    if any(path.glob("*outfits.json")):
        return read_polyvore_mcn(path, outside)
    raise CatalogError(
        f"{path} holds no catalog StyleLoop reads: products.jsonl/.csv, styles.csv + images/ "
        "(Kaggle), polyvore_item_metadata.json (Polyvore Outfits) or *_outfits.json"
    )


@dataclass(frozen=True)
class Product:
    """A catalog product as alignment training sees it: photo, title, attribute labels."""

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


def load_products(catalog: Path) -> list[Product]:
    """The valid rows of any catalog layout as training products (bad rows are left out)."""
    rows = read_catalog(catalog).rows
    if not rows:
        raise CatalogError(f"no product with a readable image in {catalog}")
    products = []
    for row in rows:
        item = row.item
        labels = {
            "article_type": item["article_type"],
            "base_colour": item["colour"],
            "usage": item["usage"],
            "master_category": item["attributes"].get("master_category", ""),
            "sub_category": item["category"],
        }
        products.append(Product(item["item_id"], item["title"], row.image, labels))
    return products
