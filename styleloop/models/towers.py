"""Image and text towers with one interface, whatever model family is behind them.

* image tower: ``pixel_values`` float32 [B, 3, H, W] → ``embeddings`` float32 [B, D]
* text tower: ``input_ids`` int64 [B, T], ``attention_mask`` int64 [B, T] → ``embeddings`` [B, D]

Every output row is L2-normalised. These modules are what gets exported to ONNX and
what the `torch` reference backend runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


def _features(output: Any) -> torch.Tensor:
    """transformers 4 returns a tensor from ``get_*_features``; 5 returns an output object."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output  # type: ignore[no-any-return]


class ClipImageTower(nn.Module):
    """The image side of a CLIP-family dual encoder (CLIP, FashionCLIP, SigLIP)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(_features(self.model.get_image_features(pixel_values=pixel_values)))


class ClipTextTower(nn.Module):
    """The text side of a CLIP-family dual encoder."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        features = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return F.normalize(_features(features))


class EfficientNetImageTower(nn.Module):
    """EfficientNet-Lite pooled features (1280-d for Lite0), L2-normalised.

    Until StyleLoop's projection heads are trained (``styleloop train align``), these
    features are the `offline` image embedding; they do not share a space with text.
    """

    def __init__(self, backbone: Any) -> None:
        super().__init__()
        # Lite variants use ReLU6, which exports as is. (`set_swish()` would replace it
        # with Swish and silently change every feature.)
        self.backbone = backbone

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.backbone.extract_features(pixel_values)
        return F.normalize(features.mean(dim=(2, 3)))


class MeanPoolingTextTower(nn.Module):
    """A BERT-style encoder with attention-masked mean pooling, as sentence-transformers
    does for all-MiniLM-L6-v2, L2-normalised."""

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled)
