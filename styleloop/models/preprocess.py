"""Image preprocessing from manifest parameters, with NumPy and Pillow only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

from styleloop.models.manifest import ImagePreprocessing

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def to_rgb(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation, then convert to RGB — what transformers' ``load_image``
    does before its image processors run."""
    return ImageOps.exif_transpose(image).convert("RGB")


def preprocess_image(image: Image.Image, params: ImagePreprocessing) -> np.ndarray:
    """One image → float32 [3, H, W]."""
    image = to_rgb(image)
    width, height = image.size
    # The long side is truncated, as transformers' image processors do.
    short, long = sorted((width, height))
    new_short = params.resize_shortest_edge
    new_long = max(1, int(new_short * long / short))
    size = (new_short, new_long) if width <= height else (new_long, new_short)
    image = image.resize(size, _RESAMPLE[params.resample])
    left = (size[0] - params.crop_width) // 2
    top = (size[1] - params.crop_height) // 2
    image = image.crop((left, top, left + params.crop_width, top + params.crop_height))
    scaled = np.asarray(image, dtype=np.float32) * np.float32(params.rescale_factor)
    mean, std = np.asarray(params.mean, np.float32), np.asarray(params.std, np.float32)
    normalised: np.ndarray = (scaled - mean) / std
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def preprocess_images(images: Sequence[Image.Image], params: ImagePreprocessing) -> np.ndarray:
    """Images → float32 [B, 3, H, W]."""
    return np.stack([preprocess_image(image, params) for image in images])
