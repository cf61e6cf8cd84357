"""Preprocessing equals the model's own: transformers' `load_image` + image processor."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transformers.image_utils import load_image

from styleloop.models import presets
from styleloop.models.preprocess import preprocess_image
from styleloop.runtime.inputs import InputLimits, decode_image
from tests.conftest import catalog_images, synthetic_garment

LIMITS = InputLimits(max_image_bytes=50_000_000, max_image_pixels=50_000_000, max_text_chars=10)


@pytest.fixture(scope="module")
def processors():
    from transformers import CLIPImageProcessor

    model, processor = presets.tiny_clip()
    tiny = (
        presets.clip_encoder("t", "t", model, processor).preprocessing,
        processor.image_processor,
    )
    # The default CLIP processor: the preprocessing of fashion-clip and openai CLIP (224 px).
    clip = CLIPImageProcessor()
    full = (presets._clip_preprocessing(clip)[0], clip)
    return {"tiny": tiny, "clip-224": full}


def encode(image: Image.Image, fmt: str, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def cases() -> list[tuple[str, bytes]]:
    base = catalog_images(1)[0].resize((300, 200))
    rgba = synthetic_garment(2, 180).convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise on display
    return [
        ("jpeg-landscape", encode(base, "JPEG", quality=90)),
        ("jpeg-portrait-odd", encode(synthetic_garment(3, 400).resize((97, 65)), "JPEG")),
        ("png-rgba", encode(rgba, "PNG")),
        ("png-greyscale", encode(base.convert("L"), "PNG")),
        ("png-palette", encode(base.convert("P"), "PNG")),
        ("webp", encode(base, "WEBP", quality=90)),
        ("jpeg-exif-rotated", encode(base, "JPEG", exif=exif.tobytes())),
        ("large", encode(synthetic_garment(4, 1200).resize((1920, 1080)), "JPEG")),
    ]


@pytest.mark.parametrize("preset", ["tiny", "clip-224"])
@pytest.mark.parametrize(("case", "data"), cases(), ids=[c[0] for c in cases()])
def test_matches_transformers(processors, preset, case, data, tmp_path: Path):
    params, processor = processors[preset]
    decoded = decode_image(data, LIMITS)
    assert isinstance(decoded, Image.Image)
    ours = preprocess_image(decoded, params)
    path = tmp_path / "input"
    path.write_bytes(data)
    reference = processor(images=load_image(str(path)), return_tensors="np")["pixel_values"][0]
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() < 1e-5


def test_exif_orientation_is_applied():
    upright = synthetic_garment(8, 120).resize((120, 80))
    exif = Image.Exif()
    exif[0x0112] = 6
    # What a phone writes: pixels stored sideways, with a tag saying how to turn them.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    decoded = decode_image(encode(stored, "PNG", exif=exif.tobytes()), LIMITS)
    params = presets._clip_preprocessing(presets.tiny_clip()[1].image_processor)[0]
    turned = preprocess_image(decoded, params)
    straight = preprocess_image(upright, params)
    assert np.abs(turned - straight).max() < 1e-5


def test_normalising_on_channel_planes_is_bit_for_bit_the_textbook_formula() -> None:
    """The fast path (in place on [3, H, W]) against (x * rescale - mean) / std on
    [H, W, 3], transposed: the very same float32 values, not merely close ones."""
    from styleloop.models.manifest import ImagePreprocessing

    params = ImagePreprocessing(
        resize_shortest_edge=40,
        crop_height=32,
        crop_width=32,
        resample="bicubic",
        rescale_factor=1 / 255,
        mean=(0.481, 0.458, 0.408),
        std=(0.269, 0.261, 0.276),
    )
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (50, 45, 3), dtype=np.uint8))
    ours = preprocess_image(image, params)
    resized = image.resize((40, 44), Image.Resampling.BICUBIC).crop((4, 6, 36, 38))
    scaled = np.asarray(resized, dtype=np.float32) * np.float32(params.rescale_factor)
    mean, std = np.asarray(params.mean, np.float32), np.asarray(params.std, np.float32)
    textbook = ((scaled - mean) / std).transpose(2, 0, 1)
    assert ours.dtype == np.float32 and ours.flags["C_CONTIGUOUS"]
    assert np.array_equal(ours, textbook)
