"""Image preprocessing from manifest parameters, with NumPy and Pillow only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

from styleloop.models.manifest import ImagePreprocessing

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def to_rgb(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert to RGB (alpha composited on white)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def preprocess_image(image: Image.Image, params: ImagePreprocessing) -> np.ndarray:
    """One image → float32 [3, H, W]."""
    image = to_rgb(image)
    width, height = image.size
    scale = params.resize_shortest_edge / min(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
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
