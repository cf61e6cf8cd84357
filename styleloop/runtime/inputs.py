"""Validation and decoding of untrusted inputs: every bad item becomes an `ItemFailure`.

Nothing here raises for a bad item; the caller gets a per-item failure with a stable
reason, and the other items of the same request go on. Only a request that is wrong as a
whole (no items, too many) raises, through :func:`check_item_count`.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

from styleloop.runtime.errors import InvalidArgument, ItemFailure

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
# The services' default limits (MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS), one place for all.
DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024
# 4096 x 4096: a 12-megapixel phone photo or a 3000 x 4000 studio shot passes; a tiny file
# that declares tens of millions of pixels (a decompression bomb) does not.
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
# What a service that keeps decoded images in a queue (the captioner) keeps at most on
# the longer side; JPEGs are then decoded at a reduced scale outright.
DEFAULT_MAX_DECODED_SIDE = 1024


def check_item_count(count: int, limit: int, what: str) -> None:
    """Refuse a request with no items or more than ``limit`` (INVALID_ARGUMENT)."""
    if count == 0:
        raise InvalidArgument(f"no {what} given", reason="NO_ITEMS")
    if count > limit:
        raise InvalidArgument(
            f"{count} {what} in one request; the limit is {limit}", reason="TOO_MANY_ITEMS"
        )


@dataclass(frozen=True)
class InputLimits:
    max_image_bytes: int
    max_image_pixels: int
    max_text_chars: int
    # None: full size (the encoder turns each image into a tensor in the decoding thread).
    max_decoded_side: int | None = None


def decode_image(data: bytes, limits: InputLimits) -> Image.Image | ItemFailure:
    """Decode JPEG, PNG or WebP bytes fully, refusing what is empty, too large, a
    decompression bomb, truncated, corrupt or not an image at all. With
    ``max_decoded_side`` the image comes back no larger than that on its longer side
    (aspect ratio kept)."""
    if not data:
        return ItemFailure("IMAGE_EMPTY", "the image is empty (0 bytes)")
    if len(data) > limits.max_image_bytes:
        return ItemFailure(
            "IMAGE_TOO_LARGE",
            f"the image is {len(data)} bytes; the limit is {limits.max_image_bytes}",
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            return _too_many_pixels(None, limits)
        except Exception:  # noqa: BLE001 - Pillow raises many types for garbage input
            return ItemFailure("IMAGE_UNREADABLE", "the bytes are not an image in a known format")
        if image.format not in ALLOWED_FORMATS:
            return ItemFailure(
                "IMAGE_FORMAT_UNSUPPORTED",
                f"{image.format} images are not accepted; send JPEG, PNG or WebP",
            )
        width, height = image.size
        if width * height > limits.max_image_pixels:
            return _too_many_pixels((width, height), limits)
        side = limits.max_decoded_side
        try:
            if side is not None and max(width, height) > side:
                # JPEG: decode at 1/2, 1/4 or 1/8 scale, no larger than needed.
                image.draft("RGB", (side, side))
            image.load()
            if side is not None and max(image.size) > side:
                image.thumbnail((side, side), Image.Resampling.BICUBIC)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            return _too_many_pixels((width, height), limits)
        except Exception:  # noqa: BLE001 - truncated or corrupt data
            return ItemFailure("IMAGE_CORRUPT", "the image data is truncated or corrupt")
    if width < 1 or height < 1:
        return ItemFailure("IMAGE_CORRUPT", "the image has no pixels")
    return image


def _too_many_pixels(size: tuple[int, int] | None, limits: InputLimits) -> ItemFailure:
    shown = f"{size[0]}x{size[1]} " if size else ""
    return ItemFailure(
        "IMAGE_TOO_MANY_PIXELS",
        f"the image {shown}has more than {limits.max_image_pixels} pixels",
    )


def check_text(text: str, limits: InputLimits) -> str | ItemFailure:
    """Accept a text for embedding; texts longer than the model's context are truncated
    later by the tokenizer, but texts beyond the character limit are refused."""
    if not text.strip():
        return ItemFailure("TEXT_EMPTY", "the text is empty")
    if len(text) > limits.max_text_chars:
        return ItemFailure(
            "TEXT_TOO_LONG",
            f"the text has {len(text)} characters; the limit is {limits.max_text_chars}",
        )
    return text
