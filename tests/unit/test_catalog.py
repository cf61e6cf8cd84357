"""Catalog layouts: plain rows (JSONL, CSV), Kaggle Fashion Product Images, Polyvore
Outfits and the MCN Polyvore layout, each on a small fixture in the real layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from styleloop.catalog import CatalogError, load_products, read_catalog
from styleloop.demo import write_demo_catalog
from tests.conftest import run_cli


def photo(path: Path, colour: str = "red") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 40), colour).save(path)


def test_csv_rows_map_fields_and_report_bad_rows(tmp_path: Path):
    photo(tmp_path / "img" / "a.jpg")
    photo(tmp_path / "img" / "b.jpg", "blue")
    (tmp_path / "items.csv").write_text(
        "id,image,title,brand,season,category,price,Color,material\n"
        "a,img/a.jpg,Red Tee,Acme,Summer,Topwear,12.5,Red,cotton\n"
        "b,img/b.jpg,Blue Jeans,Acme,Fall,Bottomwear,-3,Blue,denim\n"
        ",img/a.jpg,No id,,,,,,\n"
        "c,img/c.jpg,Missing file,,,,,,\n"
        'd,img/a.jpg,"Too, many",x,y,z,1,Red,cotton,extra\n'
    )
    catalog = read_catalog(tmp_path / "items.csv")
    assert catalog.layout == "rows" and [r.item["item_id"] for r in catalog.rows] == ["a"]
    item = catalog.rows[0].item
    assert (item["title"], item["brand"], item["season"], item["category"]) == (
        "Red Tee",
        "Acme",
        "Summer",
        "Topwear",
    )
    assert item["price"] == 12.5 and item["colour"] == "Red"
    assert item["attributes"] == {"material": "cotton"}
    problems = [(p.row, p.reason) for p in catalog.problems]
    assert problems == [(3, "BAD_PRICE"), (4, "MISSING_ID"), (5, "IMAGE_NOT_FOUND"), (6, "BAD_ROW")]


def test_images_outside_the_catalog_or_over_the_limit_are_bad_rows_never_read(
    tmp_path: Path,
):
    folder = tmp_path / "catalog"
    photo(folder / "ok.jpg")
    photo(tmp_path / "elsewhere.jpg")
    (folder / "link.jpg").symlink_to(tmp_path / "elsewhere.jpg")
    (folder / "huge.jpg").write_bytes(b"\xff" * (10 * 1024 * 1024 + 1))
    rows = [
        {"id": "ok", "image": "ok.jpg"},
        {"id": "up", "image": "../elsewhere.jpg"},
        {"id": "passwd", "image": "../../../../etc/passwd"},
        {"id": "shadow", "image": "/etc/shadow"},
        {"id": "link", "image": "link.jpg"},
        {"id": "huge", "image": "huge.jpg"},
    ]
    (folder / "products.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    catalog = read_catalog(folder)
    assert [r.item["item_id"] for r in catalog.rows] == ["ok"]
    assert [(p.item_id, p.reason) for p in catalog.problems] == [
        ("up", "IMAGE_OUTSIDE_CATALOG"),
        ("passwd", "IMAGE_OUTSIDE_CATALOG"),
        ("shadow", "IMAGE_OUTSIDE_CATALOG"),
        ("link", "IMAGE_OUTSIDE_CATALOG"),
        ("huge", "IMAGE_TOO_LARGE"),
    ]
    allowed = read_catalog(folder, allow_outside_images=True)
    assert {r.item["item_id"] for r in allowed.rows} >= {"ok", "up", "link"}
    assert {(p.item_id, p.reason) for p in allowed.problems} >= {("huge", "IMAGE_TOO_LARGE")}


def test_jsonl_digest_changes_with_content_and_image(tmp_path: Path):
    photo(tmp_path / "a.jpg")
    path = tmp_path / "products.jsonl"
    path.write_text(json.dumps({"id": "a", "image": "a.jpg", "title": "T"}) + "\nnot json\n")
    first = read_catalog(tmp_path)
    assert [(p.row, p.reason) for p in first.problems] == [(2, "BAD_ROW")]
    photo(tmp_path / "a.jpg", "green")
    second = read_catalog(tmp_path)
    assert first.rows[0].digest != second.rows[0].digest
    assert read_catalog(tmp_path).rows[0].digest == second.rows[0].digest


def test_kaggle_layout(tmp_path: Path):
    photo(tmp_path / "images" / "15970.jpg")
    photo(tmp_path / "images" / "39386.jpg", "blue")
    (tmp_path / "styles.csv").write_text(
        "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,"
        "productDisplayName\n"
        "15970,Men,Apparel,Topwear,Shirts,Navy Blue,Fall,2011,Casual,Turtle Check Men Navy "
        "Blue Shirt\n"
        "39386,Men,Apparel,Bottomwear,Jeans,Blue,Summer,2012,Casual,Peter England Men Party "
        "Blue Jeans\n"
        "59263,Women,Accessories,Watches,Watches,Silver,Winter,2016,Casual,Titan Women Silver "
        "Watch\n"
    )
    catalog = read_catalog(tmp_path)
    assert catalog.layout == "kaggle-fashion-product-images"
    first = catalog.rows[0].item
    assert first["title"] == "Turtle Check Men Navy Blue Shirt"
    assert (first["article_type"], first["colour"], first["category"], first["gender"]) == (
        "Shirts",
        "Navy Blue",
        "Topwear",
        "Men",
    )
    assert first["attributes"]["master_category"] == "Apparel"
    assert [(p.row, p.reason) for p in catalog.problems] == [(4, "IMAGE_NOT_FOUND")]
    products = load_products(tmp_path)  # training reads the same layouts
    assert [p.attributes["base_colour"] for p in products] == ["Navy Blue", "Blue"]


def test_polyvore_outfits_layout(tmp_path: Path):
    metadata = {
        "211990161": {
            "url_name": "neck print chiffon plus size",
            "description": "",
            "categories": ["Women's Fashion", "Clothing", "Tops"],
            "title": "Neck print chiffon plus size",
            "related": [],
            "category_id": "15",
            "semantic_category": "tops",
        },
        "171888747": {
            "url_name": "converse chuck taylor",
            "title": "",
            "category_id": "41",
            "semantic_category": "shoes",
        },
    }
    (tmp_path / "polyvore_item_metadata.json").write_text(json.dumps(metadata))
    photo(tmp_path / "images" / "211990161.jpg")
    photo(tmp_path / "images" / "171888747.jpg")
    (tmp_path / "disjoint").mkdir()
    (tmp_path / "disjoint" / "train.json").write_text(
        json.dumps(
            [
                {
                    "set_id": "119704139",
                    "items": [
                        {"item_id": "211990161", "index": 1},
                        {"item_id": "171888747", "index": 2},
                    ],
                }
            ]
        )
    )
    catalog = read_catalog(tmp_path)
    assert catalog.layout == "polyvore-outfits"
    titles = {r.item["item_id"]: r.item["title"] for r in catalog.rows}
    assert titles == {
        "171888747": "converse chuck taylor",
        "211990161": "Neck print chiffon plus size",
    }
    assert {r.item["category"] for r in catalog.rows} == {"tops", "shoes"}
    assert [(o.outfit_id, o.item_ids) for o in catalog.outfits] == [
        ("119704139", ["211990161", "171888747"])
    ]
    assert {r.item["attributes"]["outfit_ids"] for r in catalog.rows} == {"119704139"}


def test_polyvore_mcn_layout_without_images_reports_every_item(tmp_path: Path):
    outfits = {"214272106": {"upper": {"index": 2, "name": "hooded faux leather jacket"},
                             "shoe": {"index": 3, "name": "toms boot women's boots"}}}  # fmt: skip
    (tmp_path / "valid_outfits.json").write_text(json.dumps(outfits))
    photo(tmp_path / "images" / "214272106" / "2.jpg")
    catalog = read_catalog(tmp_path)
    assert catalog.layout == "polyvore-mcn"
    assert [r.item["item_id"] for r in catalog.rows] == ["214272106_2"]
    assert catalog.rows[0].item["attributes"] == {"slot": "upper", "outfit_ids": "214272106"}
    assert [(p.item_id, p.reason) for p in catalog.problems] == [("214272106_3", "IMAGE_NOT_FOUND")]
    assert catalog.outfits[0].item_ids == ["214272106_2", "214272106_3"]


def test_unknown_layouts_are_refused_clearly(tmp_path: Path):
    with pytest.raises(CatalogError, match="holds no catalog"):
        read_catalog(tmp_path)
    with pytest.raises(CatalogError, match="does not exist"):
        read_catalog(tmp_path / "nope")


def test_demo_catalog_is_synthetic_and_readable(tmp_path: Path):
    result = run_cli("demo-catalog", "--out", str(tmp_path / "demo"), "--count", "12")
    assert result.returncode == 0 and "SYNTHETIC" in result.stdout
    catalog = read_catalog(tmp_path / "demo")
    assert len(catalog.rows) == 12 and not catalog.problems
    assert all(r.item["title"].startswith("Synthetic ") for r in catalog.rows)
    assert {r.item["article_type"] for r in catalog.rows} >= {"Tshirts", "Dresses", "Handbags"}
    assert all(r.item["price"] > 0 for r in catalog.rows)
    assert write_demo_catalog(tmp_path / "again", 3, seed=1) == 3
