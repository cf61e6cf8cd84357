"""`styleloop models prepare`: produce everything the services load, for one preset.

Steps: the dual encoder (two ONNX towers, tokenizer, Triton models), the captioner
checkpoint and the LLM checkpoint. Each finished step is recorded in the manifest with
file digests, and is skipped on the next run while its files are intact and its source
is unchanged; an interrupted run redoes only the step it was in.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from styleloop.models import presets
from styleloop.models.export import check_parity, export_onnx
from styleloop.models.manifest import (
    CheckpointManifest,
    EncoderManifest,
    ImageTower,
    Manifest,
    TensorSpec,
    TextTower,
    directory_digests,
    files_intact,
    load_manifest,
    save_manifest,
    sha256_file,
)
from styleloop.models.presets import LoadedCheckpoint, ModelSettings, PresetName
from styleloop.models.triton import write_model

log = logging.getLogger(__name__)

IMAGE_MODEL, TEXT_MODEL = "image_encoder", "text_encoder"

# Bump when the code that writes a component changes what it writes: a finished step is
# only kept when it was written by the current recipe.
ENCODER_RECIPE = 2
CHECKPOINT_RECIPE = 1


class PrepareError(RuntimeError):
    """The models of a preset could not be prepared; the message says why and what to do."""


def image_specs(
    loaded: presets.LoadedEncoder, dim: int
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    height, width = loaded.image_size
    return (
        [TensorSpec(name="pixel_values", dtype="float32", shape=["batch", 3, height, width])],
        [TensorSpec(name="embeddings", dtype="float32", shape=["batch", dim])],
    )


def text_specs(dim: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    return (
        [
            TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"]),
            TensorSpec(name="attention_mask", dtype="int64", shape=["batch", "sequence"]),
        ],
        [TensorSpec(name="embeddings", dtype="float32", shape=["batch", dim])],
    )


def example_text_inputs(loaded: presets.LoadedEncoder, batch: int) -> dict[str, np.ndarray]:
    """Real tokenised texts of different lengths (padding exercised)."""
    tok = loaded.tokenizer
    tok.enable_truncation(loaded.max_length)
    tok.enable_padding(pad_id=loaded.pad_token_id)
    texts = ["red floral dress", "black leather ankle boots for winter evenings", "a"]
    encodings = tok.encode_batch([texts[i % len(texts)] for i in range(batch)])
    tok.no_truncation()
    tok.no_padding()
    return {
        "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
    }


def prepare_encoder(
    preset: PresetName, model_id: str, out: Path, settings: ModelSettings
) -> EncoderManifest:
    loaded = presets.load_encoder(preset, model_id)
    height, width = loaded.image_size
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, height, width, generator=generator)
    with torch.no_grad():
        image_dim = int(loaded.image_tower(pixels).shape[1])
        text_example = example_text_inputs(loaded, 2)
        text_dim = int(
            loaded.text_tower(*(torch.from_numpy(v) for v in text_example.values())).shape[1]
        )

    folder = out / "encoder"
    folder.mkdir(parents=True, exist_ok=True)
    image_in, image_out = image_specs(loaded, image_dim)
    text_in, text_out = text_specs(text_dim)
    image_path, text_path = folder / "image.onnx", folder / "text.onnx"
    export_onnx(loaded.image_tower, (pixels,), image_in, image_out, image_path)
    export_onnx(
        loaded.text_tower,
        tuple(torch.from_numpy(v) for v in text_example.values()),
        text_in,
        text_out,
        text_path,
    )
    # Batch sizes other than the traced one, and padded text, must match PyTorch.
    check_parity(
        loaded.image_tower,
        image_path,
        {
            "pixel_values": np.random.default_rng(1).standard_normal(
                (3, 3, height, width), dtype=np.float32
            )
        },
    )
    check_parity(loaded.text_tower, text_path, example_text_inputs(loaded, 3))

    tokenizer_path = folder / "tokenizer.json"
    loaded.tokenizer.save(str(tokenizer_path))

    repository = out / "triton"
    for name, path, inputs, outputs in (
        (IMAGE_MODEL, image_path, image_in, image_out),
        (TEXT_MODEL, text_path, text_in, text_out),
    ):
        write_model(
            repository,
            name,
            path,
            inputs,
            outputs,
            max_batch_size=settings.triton_max_batch_size,
            max_queue_delay_us=settings.triton_max_queue_delay_us,
            instance_kind=settings.triton_instance_kind,
        )
    image_sha, text_sha = sha256_file(image_path), sha256_file(text_path)
    return EncoderManifest(
        model_id=loaded.model_id,
        model_version=hashlib.sha256((image_sha + text_sha).encode()).hexdigest()[:12],
        source=loaded.source,
        recipe=ENCODER_RECIPE,
        shared_space=loaded.shared_space,
        image=ImageTower(
            onnx=str(image_path.relative_to(out)),
            sha256=image_sha,
            dimension=image_dim,
            inputs=image_in,
            outputs=image_out,
            triton_model=IMAGE_MODEL,
            preprocessing=loaded.preprocessing,
        ),
        text=TextTower(
            onnx=str(text_path.relative_to(out)),
            sha256=text_sha,
            dimension=text_dim,
            inputs=text_in,
            outputs=text_out,
            triton_model=TEXT_MODEL,
            tokenizer=str(tokenizer_path.relative_to(out)),
            tokenizer_sha256=sha256_file(tokenizer_path),
            max_length=loaded.max_length,
            pad_token_id=loaded.pad_token_id,
        ),
    )


def save_checkpoint(
    loaded: LoadedCheckpoint, out: Path, folder_name: str, kind: str
) -> CheckpointManifest:
    folder = out / folder_name
    tmp = out / f"{folder_name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    loaded.model.save_pretrained(tmp)
    for extra in loaded.extras:
        extra.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    files = directory_digests(out, folder)
    version = sha256_of_digests(files)
    return CheckpointManifest(
        model_id=loaded.model_id,
        model_version=version,
        source=loaded.source,
        recipe=CHECKPOINT_RECIPE,
        kind=kind,  # type: ignore[arg-type]
        path=folder_name,
        files=files,
    )


def sha256_of_digests(files: dict[str, str]) -> str:
    weights = sorted(d for rel, d in files.items() if rel.endswith(".safetensors"))
    return hashlib.sha256("".join(weights or sorted(files.values())).encode()).hexdigest()[:12]


def _encoder_intact(out: Path, m: EncoderManifest) -> bool:
    return files_intact(
        out,
        {
            m.image.onnx: m.image.sha256,
            m.text.onnx: m.text.sha256,
            m.text.tokenizer: m.text.tokenizer_sha256,
        },
    ) and all(
        (out / "triton" / name / "config.pbtxt").is_file()
        for name in (m.image.triton_model, m.text.triton_model)
    )


def _checkpoint_current(
    out: Path, m: CheckpointManifest | None, model_id: str, force: bool
) -> bool:
    return (
        not force
        and m is not None
        and (m.model_id, m.recipe) == (model_id, CHECKPOINT_RECIPE)
        and files_intact(out, m.files)
    )


def prepare(
    preset: PresetName,
    out: Path,
    settings: ModelSettings | None = None,
    *,
    force: bool = False,
    progress: bool = True,
) -> Manifest:
    """Prepare every model of ``preset`` into ``out``; returns the manifest written there."""
    settings = settings or ModelSettings()
    ids = presets.resolve_ids(preset, settings)
    out.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(out)
    if manifest is not None and manifest.preset != preset:
        if not force:
            raise PrepareError(
                f"{out} holds models of preset {manifest.preset!r}; choose another --out "
                f"or pass --force to replace them with {preset!r}"
            )
        manifest = None
    manifest = manifest or Manifest(preset=preset)

    def encoder_step() -> None:
        m = manifest.encoder
        if (
            not force
            and m
            and (m.model_id, m.recipe) == (ids.encoder, ENCODER_RECIPE)
            and _encoder_intact(out, m)
        ):
            log.info("encoder up to date", extra={"model_id": m.model_id})
            return
        manifest.encoder = prepare_encoder(preset, ids.encoder, out, settings)

    def captioner_step() -> None:
        if ids.captioner is None:
            manifest.captioner = None
            manifest.captioner_pending = presets.OFFLINE_CAPTIONER_PENDING
            return
        manifest.captioner_pending = ""
        m = manifest.captioner
        if _checkpoint_current(out, m, ids.captioner, force):
            log.info("captioner up to date", extra={"model_id": ids.captioner})
            return
        loaded = presets.load_captioner(preset, ids.captioner)
        manifest.captioner = save_checkpoint(loaded, out, "captioner", "image_to_text")

    def llm_step() -> None:
        m = manifest.llm
        if _checkpoint_current(out, m, ids.llm, force):
            log.info("llm up to date", extra={"model_id": ids.llm})
            return
        manifest.llm = save_checkpoint(presets.load_llm(preset, ids.llm), out, "llm", "causal_lm")

    steps: list[tuple[str, Callable[[], None]]] = [
        ("encoder", encoder_step),
        ("captioner", captioner_step),
        ("llm", llm_step),
    ]
    with tqdm(steps, desc=f"prepare {preset}", unit="step", disable=not progress) as bar:
        for name, step in bar:
            bar.set_postfix_str(name)
            step()
            save_manifest(out, manifest)
    return manifest
