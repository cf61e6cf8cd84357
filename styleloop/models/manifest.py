"""The model manifest: what `styleloop models prepare` produced, and how to use it.

Services read ``manifest.json`` from their models directory: file paths (relative to
it), sha256 digests, tensor names and shapes, dimensions, preprocessing parameters,
tokenizer settings, and model ids and versions.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


class TensorSpec(BaseModel):
    """One named input or output of an exported graph; string dims are dynamic axes."""

    name: str
    dtype: Literal["float32", "int64"]
    shape: list[int | str]


class ImagePreprocessing(BaseModel):
    """How a decoded RGB image becomes ``pixel_values``: resize the shortest edge, centre
    crop, rescale, normalise per channel, channels first."""

    resize_shortest_edge: int
    crop_height: int
    crop_width: int
    resample: Literal["bicubic", "bilinear"]
    rescale_factor: float = 1 / 255
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class OnnxTower(BaseModel):
    """An exported tower: ONNX file, its tensors, and the Triton model serving it."""

    onnx: str
    sha256: str
    dimension: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    triton_model: str


class ImageTower(OnnxTower):
    preprocessing: ImagePreprocessing


class TextTower(OnnxTower):
    tokenizer: str
    tokenizer_sha256: str
    max_length: int
    pad_token_id: int


class Alignment(BaseModel):
    """Trained heads fused onto a backbone (``styleloop train align``)."""

    heads: str = Field(description="The heads file, relative to the models directory.")
    heads_sha256: str
    backbone_model_id: str
    backbone_version: str = Field(description="model_version of the frozen backbone.")


class EncoderManifest(BaseModel):
    """The dual encoder; vectors of one ``model_version`` share a Qdrant collection."""

    model_id: str
    model_version: str = Field(description="Digest of the exported graphs and weights.")
    source: str = Field(description="Where the weights came from (hub id, wheel, random seed).")
    recipe: int = Field(default=0, description="Revision of the export code that wrote it.")
    shared_space: bool = Field(description="Whether image and text vectors are comparable.")
    alignment: Alignment | None = Field(
        default=None, description="Set when trained heads are fused onto the backbone."
    )
    image: ImageTower
    text: TextTower


class AttributeOutput(BaseModel):
    """One output of the attribute graph: probabilities over ``classes``."""

    name: str = Field(description="The attribute (article_type, base_colour, usage …).")
    output: str = Field(description="The graph output holding its probabilities.")
    classes: list[str]


class AttributeModel(BaseModel):
    """Image → attribute probabilities: the `offline` captioner's model."""

    onnx: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    triton_model: str
    preprocessing: ImagePreprocessing
    attributes: list[AttributeOutput]
    alignment: Alignment


class CheckpointManifest(BaseModel):
    """A saved Hugging Face checkpoint (safetensors, config, tokenizer / processor)."""

    model_id: str
    model_version: str
    source: str
    recipe: int = Field(default=0, description="Revision of the conversion code that wrote it.")
    kind: Literal["causal_lm", "image_to_text"]
    path: str
    files: dict[str, str] = Field(description="Relative path → sha256 of every file.")


class Manifest(BaseModel):
    schema_version: int = SCHEMA_VERSION
    preset: str
    update_time: str = ""
    encoder: EncoderManifest | None = Field(
        default=None, description="What the encoder serves: the backbone, or heads fused onto it."
    )
    backbone: EncoderManifest | None = Field(
        default=None, description="The frozen towers as exported; alignment features come from it."
    )
    attributes: AttributeModel | None = None
    captioner: CheckpointManifest | None = None
    captioner_pending: str = Field(
        default="", description="Why there is no captioner yet, and what produces it."
    )
    llm: CheckpointManifest | None = None
    triton_repository: str = "triton"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_digests(root: Path, folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, keyed by path relative to ``root``."""
    return {
        str(path.relative_to(root)): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def files_intact(root: Path, digests: dict[str, str]) -> bool:
    """Whether every listed file exists with the recorded digest."""
    return all(
        (root / rel).is_file() and sha256_file(root / rel) == digest
        for rel, digest in digests.items()
    )


def load_manifest(models_dir: Path) -> Manifest | None:
    path = models_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    return Manifest.model_validate_json(path.read_text(encoding="utf-8"))


def save_manifest(models_dir: Path, manifest: Manifest) -> None:
    """Write atomically, so an interrupted run never leaves a half-written manifest."""
    manifest.update_time = datetime.now(UTC).isoformat(timespec="seconds")
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = models_dir / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, models_dir / MANIFEST_NAME)
