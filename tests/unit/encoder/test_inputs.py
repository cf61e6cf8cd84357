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


def test_the_default_pixel_limit_refuses_a_small_file_declaring_a_huge_image():
    """The reproduction: a PNG of ~130 KB that declares ~40 M pixels (119 MB decoded)."""
    from styleloop.runtime.inputs import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS

    buffer = io.BytesIO()
    Image.new("RGB", (7300, 5440), "white").save(buffer, format="PNG", optimize=True)
    assert len(buffer.getvalue()) < 200_000
    limits = InputLimits(DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS, 100)
    result = decode_image(buffer.getvalue(), limits)
    assert isinstance(result, ItemFailure) and result.reason == "IMAGE_TOO_MANY_PIXELS"
    phone = io.BytesIO()  # a 12-megapixel phone photo is fine
    Image.new("RGB", (4032, 3024), "grey").save(phone, format="JPEG")
    assert isinstance(decode_image(phone.getvalue(), limits), Image.Image)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_decoded_side_bound_keeps_queued_images_small(fmt: str):
    buffer = io.BytesIO()
    synthetic_garment(5, 400).resize((3000, 2000)).save(buffer, format=fmt)
    limits = InputLimits(50_000_000, 50_000_000, 10, max_decoded_side=1024)
    image = decode_image(buffer.getvalue(), limits)
    assert isinstance(image, Image.Image)
    assert max(image.size) == 1024 and abs(image.size[0] / image.size[1] - 1.5) < 0.01


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
