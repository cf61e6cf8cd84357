"""Every kind of bad input gets its own reason, and nothing raises."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from styleloop.runtime.errors import ItemFailure
from styleloop.runtime.inputs import InputLimits, check_text, decode_image
from tests.conftest import encode_png, synthetic_garment

LIMITS = InputLimits(max_image_bytes=200_000, max_image_pixels=4_000_000, max_text_chars=100)


def encoded(fmt: str, size: int = 64, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    synthetic_garment(3, size).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def huge_png() -> bytes:
    """A 3000x3000 one-colour PNG: a few KB on the wire, 9 M pixels decoded."""
    buffer = io.BytesIO()
    Image.new("L", (3000, 3000), 255).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_IMAGES = [
    ("empty", b"", "IMAGE_EMPTY"),
    ("text", b"definitely not an image, just some text", "IMAGE_UNREADABLE"),
    ("truncated jpeg", encoded("JPEG", size=224)[:2000], "IMAGE_CORRUPT"),
    ("truncated header", encoded("JPEG")[:40], "IMAGE_UNREADABLE"),
    ("corrupt png", encoded("PNG")[:60] + b"\x00" * 200, "IMAGE_CORRUPT"),
    ("gif", encoded("GIF", mode="P"), "IMAGE_FORMAT_UNSUPPORTED"),
    ("bmp", encoded("BMP"), "IMAGE_FORMAT_UNSUPPORTED"),
    ("over byte limit", b"\xff\xd8" + b"\x00" * 200_001, "IMAGE_TOO_LARGE"),
    ("decompression bomb", huge_png(), "IMAGE_TOO_MANY_PIXELS"),
]


@pytest.mark.parametrize(("case", "data", "reason"), BAD_IMAGES, ids=[c[0] for c in BAD_IMAGES])
def test_bad_images_are_refused_with_a_reason(case: str, data: bytes, reason: str):
    result = decode_image(data, LIMITS)
    assert isinstance(result, ItemFailure), case
    assert result.reason == reason
    assert result.message


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_allowed_formats_decode(fmt: str):
    image = decode_image(encoded(fmt), LIMITS)
    assert isinstance(image, Image.Image)
    assert image.size == (64, 64)


def test_png_with_alpha_and_greyscale_decode():
    assert isinstance(decode_image(encoded("PNG", mode="RGBA"), LIMITS), Image.Image)
    assert isinstance(decode_image(encoded("PNG", mode="L"), LIMITS), Image.Image)
    assert isinstance(decode_image(encode_png(synthetic_garment(1)), LIMITS), Image.Image)


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "TEXT_EMPTY"), ("   \n\t", "TEXT_EMPTY"), ("x" * 101, "TEXT_TOO_LONG")],
)
def test_bad_texts_are_refused(text: str, reason: str):
    result = check_text(text, LIMITS)
    assert isinstance(result, ItemFailure)
    assert result.reason == reason


def test_good_text_passes():
    assert check_text("red floral dress", LIMITS) == "red floral dress"
