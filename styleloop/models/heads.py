"""The small modules StyleLoop trains on frozen backbones, and the graphs fused from them.

* ``ProjectionHeads``: image features and text features → one shared, L2-normalised space;
* ``ColourStatistics``: colour of the foreground pixels, computed from the same
  ``pixel_values`` the image tower gets, so training and serving compute one thing;
* ``AttributeClassifier``: calibrated probabilities of one attribute (article type, colour…);
* ``AlignedImageTower`` / ``AlignedTextTower`` / ``AttributeModel``: backbone and heads
  fused into the modules that are exported to ONNX and that the `torch` backend runs.

``heads.pt`` holds only tensors, numbers and strings (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

HEADS_FILE, META_FILE = "heads.pt", "meta.json"


def align_folder(models_dir: Path) -> Path:
    """Where `styleloop train align` saves its heads, inside the models directory."""
    return models_dir / "align"


class AttributeClassifier(nn.Module):
    """Standardised inputs → (hidden layer →) logits → softmax at a fitted temperature."""

    mean: torch.Tensor
    std: torch.Tensor
    temperature: torch.Tensor

    def __init__(self, name: str, classes: Sequence[str], in_dim: int, hidden: int = 0) -> None:
        super().__init__()
        self.name, self.classes, self.hidden = name, list(classes), hidden
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.register_buffer("temperature", torch.ones(()))
        self.net: nn.Module = (
            nn.Sequential(
                nn.Linear(in_dim, hidden),
                nn.GELU(),
                nn.Dropout(0.2),
                nn.Linear(hidden, len(classes)),
            )
            if hidden
            else nn.Linear(in_dim, len(classes))
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.logits(x) / self.temperature, dim=1)


def attribute_inputs(image_features: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """What every attribute classifier reads: backbone features, then colour statistics."""
    return torch.cat([image_features, colour], dim=1)


class ProjectionHeads(nn.Module):
    """Linear maps into the shared space. The image side reads the backbone features and,
    when ``colour_dim`` is set, the standardised colour statistics of the photo: titles
    name colours, and ImageNet features barely see them.

    With ``type_classes``, each side also predicts the article type (the image from its
    features and colour statistics, the text from its features) and the served vector is
    ``normalize([projection; type_weight · type probabilities])``: photos of one type and
    texts naming it agree on that part. Training fits the projection alone
    (``project_*``); ``embed_*`` give the served vectors."""

    colour_mean: torch.Tensor
    colour_std: torch.Tensor

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        dim: int,
        colour_dim: int = 0,
        *,
        type_classes: Sequence[str] = (),
        type_weight: float = 0.0,
        type_hidden: int = 0,
        colour_stats_dim: int = 0,
    ) -> None:
        super().__init__()
        self.colour_dim = colour_dim
        self.register_buffer("colour_mean", torch.zeros(colour_dim))
        self.register_buffer("colour_std", torch.ones(colour_dim))
        self.image = nn.Linear(image_dim + colour_dim, dim)
        self.text = nn.Linear(text_dim, dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.type_weight = type_weight
        self.image_type: AttributeClassifier | None = None
        self.text_type: AttributeClassifier | None = None
        if type_classes:
            self.image_type = AttributeClassifier(
                "article_type", type_classes, image_dim + colour_stats_dim, type_hidden
            )
            self.text_type = AttributeClassifier("article_type", type_classes, text_dim)

    def set_types(
        self, image_type: AttributeClassifier, text_type: AttributeClassifier, weight: float
    ) -> None:
        if image_type.classes != text_type.classes:
            raise ValueError("image and text type classifiers must share their classes")
        self.image_type, self.text_type, self.type_weight = image_type, text_type, weight

    def image_inputs(self, features: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
        if not self.colour_dim:
            return features
        scaled = (colour - self.colour_mean) / self.colour_std / math.sqrt(self.colour_dim)
        return torch.cat([features, scaled], dim=1)

    def project_image(self, x: torch.Tensor) -> torch.Tensor:
        """The trained projection of :meth:`image_inputs`, L2-normalised."""
        return F.normalize(self.image(x))

    def project_text(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(x))

    def embed_image(self, features: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
        z = self.project_image(self.image_inputs(features, colour))
        if self.image_type is None:
            return z
        types = self.image_type(attribute_inputs(features, colour))
        return F.normalize(torch.cat([z, self.type_weight * types], dim=1))

    def embed_text(self, x: torch.Tensor) -> torch.Tensor:
        z = self.project_text(x)
        if self.text_type is None:
            return z
        return F.normalize(torch.cat([z, self.type_weight * self.text_type(x)], dim=1))


class ColourStatistics(nn.Module):
    """Mean and spread of the foreground (non-white) pixels and a 4x4x4 RGB histogram of
    them: colour is what ImageNet features know least about. Images with almost no
    foreground use every pixel."""

    mean: torch.Tensor
    std: torch.Tensor
    codes: torch.Tensor

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        pool: int = 4,
        bins: int = 4,
        white: float = 0.92,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(1, 3, 1, 1))
        self.register_buffer("codes", torch.arange(bins**3, dtype=torch.float32))
        self.pool, self.bins, self.white = pool, bins, white
        self.size = 6 + bins**3

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        rgb = (pixel_values * self.std + self.mean).clamp(0, 1)
        x = F.avg_pool2d(rgb, self.pool).flatten(2).transpose(1, 2)  # [B, N, 3]
        foreground = (x.min(dim=2).values < self.white).float()
        enough = (foreground.sum(dim=1, keepdim=True) >= 10).float()
        weight = (foreground * enough + (1 - enough)).unsqueeze(2)  # [B, N, 1]
        total = weight.sum(dim=1)
        mean = (weight * x).sum(dim=1) / total
        spread = ((weight * (x - mean.unsqueeze(1)) ** 2).sum(dim=1) / total).clamp(min=0).sqrt()
        index = (x * self.bins).floor().clamp(0, self.bins - 1)
        code = (index[..., 0] * self.bins + index[..., 1]) * self.bins + index[..., 2]
        histogram = (weight * torch.eq(code.unsqueeze(2), self.codes).float()).sum(dim=1) / total
        return torch.cat([mean, spread, histogram], dim=1)


class AlignedImageTower(nn.Module):
    """pixel_values → shared-space vector."""

    def __init__(
        self, backbone: nn.Module, colour: ColourStatistics, heads: ProjectionHeads
    ) -> None:
        super().__init__()
        self.backbone, self.colour, self.heads = backbone, colour, heads

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.heads.embed_image(self.backbone(pixel_values), self.colour(pixel_values))


class AlignedTextTower(nn.Module):
    """input_ids, attention_mask → shared-space vector."""

    def __init__(self, backbone: nn.Module, heads: ProjectionHeads) -> None:
        super().__init__()
        self.backbone, self.heads = backbone, heads

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.heads.embed_text(self.backbone(input_ids, attention_mask))


class AttributeModel(nn.Module):
    """pixel_values → one probability row per attribute, in ``classifiers`` order."""

    def __init__(
        self,
        backbone: nn.Module,
        colour: ColourStatistics,
        classifiers: Sequence[AttributeClassifier],
    ) -> None:
        super().__init__()
        self.backbone, self.colour = backbone, colour
        self.classifiers = nn.ModuleList(classifiers)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = attribute_inputs(self.backbone(pixel_values), self.colour(pixel_values))
        return tuple(classifier(x) for classifier in self.classifiers)


def save_heads(
    folder: Path,
    heads: ProjectionHeads,
    colour: ColourStatistics,
    classifiers: Sequence[AttributeClassifier],
    meta: dict[str, Any],
) -> None:
    """``heads.pt`` and ``meta.json``, each written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "projection": heads.state_dict(),
        "colour": {"mean": colour.mean.flatten(), "std": colour.std.flatten()},
        "attributes": [
            {
                "name": c.name,
                "classes": c.classes,
                "hidden": c.hidden,
                "state": c.state_dict(),
            }
            for c in classifiers
        ],
    }
    tmp = folder / (HEADS_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(folder / HEADS_FILE)
    tmp = folder / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    tmp.replace(folder / META_FILE)


def load_heads(
    folder: Path,
) -> tuple[ProjectionHeads, ColourStatistics, list[AttributeClassifier], dict[str, Any]]:
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    saved = torch.load(folder / HEADS_FILE, weights_only=True)
    heads = ProjectionHeads(
        meta["image_dim"],
        meta["text_dim"],
        meta["dim"],
        meta.get("colour_dim", 0),
        type_classes=meta.get("type_classes", []),
        type_weight=meta.get("type_weight", 0.0),
        type_hidden=meta.get("type_hidden", 0),
        colour_stats_dim=meta.get("colour_stats_dim", 0),
    )
    heads.load_state_dict(saved["projection"])
    colour = ColourStatistics(saved["colour"]["mean"].tolist(), saved["colour"]["std"].tolist())
    classifiers = []
    for data in saved["attributes"]:
        classifier = AttributeClassifier(
            data["name"], data["classes"], int(data["state"]["mean"].numel()), data["hidden"]
        )
        classifier.load_state_dict(data["state"])
        classifiers.append(classifier.eval())
    return heads.eval(), colour, classifiers, meta
