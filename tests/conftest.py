"""Shared fixtures."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models of the tiny preset, prepared once per test session."""
    from styleloop.models.prepare import prepare

    out = tmp_path_factory.mktemp("tiny-models")
    prepare("tiny", out, progress=False)
    return out


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [int(sock.getsockname()[1]) for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def run_failing_service(module: str, env: dict[str, str], drop: Sequence[str]) -> str:
    """Start ``python -m MODULE`` with ``env`` (and without ``drop``); it must exit non-zero
    without a traceback. Returns what it printed."""
    clean = {k: v for k, v in os.environ.items() if k not in drop}
    proc = subprocess.run(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env={**clean, "GRPC_PORT": "0", "METRICS_PORT": "-1", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "Traceback" not in output, output
    return output


def data_dir() -> Path | None:
    """The sample data folder from STYLELOOP_DATA_DIR, if configured and present."""
    value = os.environ.get("STYLELOOP_DATA_DIR")
    if value and (Path(value) / "fashion-product-images" / "products.jsonl").is_file():
        return Path(value)
    return None


def synthetic_garment(seed: int, size: int = 224) -> Image.Image:
    """A drawn garment-like shape on white, different for every seed."""
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    colour = tuple(rng.randrange(256) for _ in range(3))
    x0, y0 = (rng.randrange(size // 20, size // 4) for _ in range(2))
    x1, y1 = (rng.randrange(size * 2 // 3, size - size // 20) for _ in range(2))
    if seed % 2:
        draw.rectangle((x0, y0, x1, y1), fill=colour)
    else:
        draw.ellipse((x0, y0, x1, y1), fill=colour)
    for _ in range(rng.randrange(1, 6)):
        stripe = rng.randrange(y0, y1)
        draw.line((x0, stripe, x1, stripe), fill=(255 - colour[0], 0, colour[2]), width=3)
    return image


def catalog_images(count: int) -> list[Image.Image]:
    """Real catalog photos when the sample data is configured, else drawn ones."""
    root = data_dir()
    if root is None:
        return [synthetic_garment(i) for i in range(count)]
    folder = root / "fashion-product-images"
    images = []
    with (folder / "products.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            images.append(Image.open(folder / row["image"]).convert("RGB"))
            if len(images) == count:
                break
    return images


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``styleloop ARGS`` as a user would, with extra environment variables."""
    return subprocess.run(
        [sys.executable, "-m", "styleloop.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


def error_reason(error: Exception) -> str:
    """The ``ErrorInfo.reason`` a StyleLoop service attached to a failed RPC."""
    from styleloop.runtime.server import status_reason

    reason = status_reason(error)  # type: ignore[arg-type]
    assert reason is not None, f"no ErrorInfo on {error!r}"
    return reason


COLOURS = {
    "Black": (20, 20, 20),
    "Red": (200, 30, 30),
    "Blue": (30, 60, 200),
    "Green": (30, 160, 60),
}
TYPES = ("Tshirts", "Shoes", "Skirts")


@pytest.fixture(scope="session")
def drawn_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
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
    drawn_catalog: Path, tiny_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A copy of the tiny models (the session's own stay untouched) with heads trained on
    ``catalog`` and fused into the served encoder and the attribute graph."""
    from styleloop.models import align
    from styleloop.models.prepare import prepare

    models = tmp_path_factory.mktemp("aligned") / "models"
    shutil.copytree(tiny_models, models)
    align.run_training(
        drawn_catalog, models, max_epochs=40, validation_fraction=0.25, progress=False
    )
    prepare("tiny", models, progress=False)  # fuse, as `styleloop train align` does
    return models


THEMES = {  # cross-slot words that go together; no word is shared between slots
    "upper": ["red", "blue", "green", "black", "white", "pink"],
    "bottom": ["cotton", "silk", "wool", "denim", "linen", "leather"],
    "shoe": ["summer", "winter", "spring", "autumn", "party", "office"],
}
NOUNS = {"upper": "top", "bottom": "skirt", "shoe": "boots"}


def planted_outfits(path: Path, count: int = 360) -> Path:
    """Outfits whose items share a theme: each slot names it with its own word, so an
    item's compatible partners are exactly those with the theme's words of the other slots
    (which cosine similarity of a random text tower knows nothing of)."""
    rng = random.Random(7)
    outfits = {}
    for n in range(count):
        theme = rng.randrange(len(THEMES["upper"]))
        outfits[f"o{n}"] = {
            slot: {"name": f"{words[theme]} {NOUNS[slot]} {rng.randrange(10_000)}"}
            for slot, words in THEMES.items()
        }
    path.write_text(json.dumps(outfits))
    return path
