"""`styleloop demo-catalog`: a small SYNTHETIC catalog of drawn garments, for when no real
catalog is at hand (the stack still starts, and says so). Same layout as the sample:
``products.jsonl`` + ``images/``; every title says "synthetic"."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {
    "Black": (25, 25, 25),
    "White": (235, 235, 235),
    "Red": (200, 35, 40),
    "Blue": (35, 70, 190),
    "Navy Blue": (20, 30, 80),
    "Green": (40, 150, 70),
    "Yellow": (230, 200, 40),
    "Pink": (230, 120, 170),
    "Grey": (130, 130, 130),
    "Brown": (120, 75, 40),
}
PATTERNS = ("solid", "striped", "checked", "dotted")
# article type → (category, master category, usage, price range)
KINDS = {
    "Tshirts": ("Topwear", "Apparel", "Casual", (9, 40)),
    "Dresses": ("Dress", "Apparel", "Casual", (30, 120)),
    "Trousers": ("Bottomwear", "Apparel", "Formal", (25, 90)),
    "Skirts": ("Bottomwear", "Apparel", "Casual", (20, 70)),
    "Casual Shoes": ("Shoes", "Footwear", "Casual", (35, 140)),
    "Handbags": ("Bags", "Accessories", "Casual", (40, 300)),
}
NAMES = {
    "Tshirts": "T-shirt",
    "Dresses": "Dress",
    "Trousers": "Trousers",
    "Skirts": "Skirt",
    "Casual Shoes": "Sneakers",
    "Handbags": "Handbag",
}
SEASONS = ("Spring", "Summer", "Fall", "Winter")


def _shape(kind: str, s: int) -> list[tuple[float, float]]:
    """The garment's outline on an s×s canvas."""

    def p(*xy: float) -> list[tuple[float, float]]:
        return [(xy[i] * s, xy[i + 1] * s) for i in range(0, len(xy), 2)]

    return {
        "Tshirts": p(.3, .15, .42, .12, .58, .12, .7, .15, .9, .32, .8, .42, .72, .35, .72, .88,
                     .28, .88, .28, .35, .2, .42, .1, .32),
        "Dresses": p(.4, .1, .6, .1, .64, .35, .85, .9, .15, .9, .36, .35),
        "Trousers": p(.3, .08, .7, .08, .74, .92, .56, .92, .5, .35, .44, .92, .26, .92),
        "Skirts": p(.34, .2, .66, .2, .84, .82, .16, .82),
        "Casual Shoes": p(.1, .5, .45, .5, .55, .62, .9, .66, .92, .8, .1, .8),
        "Handbags": p(.2, .38, .8, .38, .86, .86, .14, .86),
    }[kind]  # fmt: skip


def _pattern(draw: ImageDraw.ImageDraw, pattern: str, s: int, ink: tuple[int, int, int]) -> None:
    step = s // 12
    if pattern == "striped":
        for y in range(0, s, step):
            draw.rectangle((0, y, s, y + step // 3), fill=ink)
    elif pattern == "checked":
        for x in range(0, s, step):
            draw.rectangle((x, 0, x + step // 4, s), fill=ink)
        for y in range(0, s, step):
            draw.rectangle((0, y, s, y + step // 4), fill=ink)
    elif pattern == "dotted":
        for x in range(step // 2, s, step):
            for y in range(step // 2, s, step):
                draw.ellipse((x - step // 5, y - step // 5, x + step // 5, y + step // 5), fill=ink)


def draw_garment(kind: str, colour: str, pattern: str, size: int = 224) -> Image.Image:
    """A garment of ``kind`` in ``colour`` with ``pattern`` on a white background."""
    base = COLOURS[colour]
    ink = tuple(255 - c if sum(base) < 380 else max(0, c - 90) for c in base)
    fabric = Image.new("RGB", (size, size), base)
    _pattern(ImageDraw.Draw(fabric), pattern, size, ink)  # type: ignore[arg-type]
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon(_shape(kind, size), fill=255)
    if kind == "Handbags":
        ImageDraw.Draw(mask).arc(
            (0.32 * size, 0.15 * size, 0.68 * size, 0.6 * size), 180, 360, fill=255, width=6
        )
    image = Image.new("RGB", (size, size), "white")
    image.paste(fabric, (0, 0), mask)
    return image


def write_demo_catalog(out: Path, count: int = 120, seed: int = 0) -> int:
    """Write ``count`` products to ``out``; returns how many."""
    rng = random.Random(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        kind = list(KINDS)[i % len(KINDS)]
        colour = rng.choice(list(COLOURS))
        pattern = rng.choice(PATTERNS)
        category, master, usage, (low, high) = KINDS[kind]
        item_id = f"demo-{i:05d}"
        draw_garment(kind, colour, pattern).save(out / "images" / f"{item_id}.png")
        look = "" if pattern == "solid" else f"{pattern.capitalize()} "
        rows.append(
            {
                "id": item_id,
                "title": f"Synthetic {colour} {look}{NAMES[kind]}",
                "brand": "StyleLoop Demo (synthetic)",
                "article_type": kind,
                "base_colour": colour,
                "usage": usage,
                "master_category": master,
                "sub_category": category,
                "season": rng.choice(SEASONS),
                "price": round(rng.uniform(low, high), 2),
                "currency_code": "EUR",
                "pattern": pattern,
                "image": f"images/{item_id}.png",
            }
        )
    with (out / "products.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    (out / "README.txt").write_text(
        "A SYNTHETIC demo catalog written by `styleloop demo-catalog`: drawn garments, not "
        "real products. Point STYLELOOP_CATALOG at a real catalog for real answers.\n",
        encoding="utf-8",
    )
    return count
