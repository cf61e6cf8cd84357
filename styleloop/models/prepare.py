"""`styleloop models prepare`: produce everything the services load, for one preset.

Steps: the dual encoder (two ONNX towers, tokenizer, Triton models), the captioner
checkpoint and the LLM checkpoint. Each finished step is recorded in the manifest with
file digests, and is skipped on the next run while its files are intact and its source
is unchanged; an interrupted run redoes only the step it was in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from styleloop.models import presets
from styleloop.models.export import check_parity, export_onnx
from styleloop.models.heads import (
    HEADS_FILE,
    META_FILE,
    AlignedImageTower,
    AlignedTextTower,
    AttributeModel,
    align_folder,
    load_heads,
)
from styleloop.models.manifest import (
    Alignment,
    AttributeOutput,
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
from styleloop.models.manifest import AttributeModel as AttributeModelManifest
from styleloop.models.presets import LoadedCheckpoint, ModelSettings, PresetName
from styleloop.models.triton import write_model

log = logging.getLogger(__name__)

IMAGE_MODEL, TEXT_MODEL, ATTRIBUTE_MODEL = "image_encoder", "text_encoder", "image_attributes"

# Bump when the code that writes a component changes what it writes: a finished step is
# only kept when it was written by the current recipe.
ENCODER_RECIPE = 3
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


def export_towers(
    loaded: presets.LoadedEncoder,
    image_tower: torch.nn.Module,
    text_tower: torch.nn.Module,
    out: Path,
    folder_name: str,
    *,
    model_id: str,
    source: str,
    shared_space: bool,
    alignment: Alignment | None = None,
) -> EncoderManifest:
    """Export two towers (named I/O, dynamic batch), check them against PyTorch, and save
    the tokenizer; every encoder, backbone or aligned, goes through here."""
    height, width = loaded.image_size
    pixels = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    text_example = example_text_inputs(loaded, 2)
    text_tensors = tuple(torch.from_numpy(v) for v in text_example.values())
    with torch.no_grad():
        image_dim = int(image_tower.eval()(pixels).shape[1])
        text_dim = int(text_tower.eval()(*text_tensors).shape[1])

    folder = out / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    image_in, image_out = image_specs(loaded, image_dim)
    text_in, text_out = text_specs(text_dim)
    image_path, text_path = folder / "image.onnx", folder / "text.onnx"
    export_onnx(image_tower, (pixels,), image_in, image_out, image_path)
    export_onnx(text_tower, text_tensors, text_in, text_out, text_path)
    # Batch sizes other than the traced one, and padded text, must match PyTorch.
    check_parity(image_tower, image_path, example_pixels(loaded, 3))
    check_parity(text_tower, text_path, example_text_inputs(loaded, 3))

    tokenizer_path = folder / "tokenizer.json"
    loaded.tokenizer.save(str(tokenizer_path))
    image_sha, text_sha = sha256_file(image_path), sha256_file(text_path)
    return EncoderManifest(
        model_id=model_id,
        model_version=hashlib.sha256((image_sha + text_sha).encode()).hexdigest()[:12],
        source=source,
        recipe=ENCODER_RECIPE,
        shared_space=shared_space,
        alignment=alignment,
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


def example_pixels(loaded: presets.LoadedEncoder, batch: int) -> dict[str, np.ndarray]:
    height, width = loaded.image_size
    return {
        "pixel_values": np.random.default_rng(1).standard_normal(
            (batch, 3, height, width), dtype=np.float32
        )
    }


def prepare_encoder(preset: PresetName, model_id: str, out: Path) -> EncoderManifest:
    """The preset's own dual encoder: the backbone."""
    loaded = presets.load_encoder(preset, model_id)
    return export_towers(
        loaded,
        loaded.image_tower,
        loaded.text_tower,
        out,
        "encoder",
        model_id=loaded.model_id,
        source=loaded.source,
        shared_space=loaded.shared_space,
    )


def load_backbone(
    preset: PresetName, out: Path, backbone: EncoderManifest
) -> presets.LoadedEncoder:
    """The backbone rebuilt in PyTorch, checked to be the one that was exported (and that
    alignment features came from)."""
    loaded = presets.load_encoder(preset, backbone.model_id)
    check_parity(loaded.image_tower, out / backbone.image.onnx, example_pixels(loaded, 2))
    check_parity(loaded.text_tower, out / backbone.text.onnx, example_text_inputs(loaded, 2))
    return loaded


def load_towers(
    preset: PresetName, out: Path, encoder: EncoderManifest
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The PyTorch modules behind ``encoder``: the backbone, with the heads fused on when
    it is aligned. The `torch` reference backend runs these."""
    if encoder.alignment is None:
        loaded = presets.load_encoder(preset, encoder.model_id)
        return loaded.image_tower, loaded.text_tower
    loaded = presets.load_encoder(preset, encoder.alignment.backbone_model_id)
    projection, colour, _, _ = load_heads((out / encoder.alignment.heads).parent)
    return (
        AlignedImageTower(loaded.image_tower, colour, projection),
        AlignedTextTower(loaded.text_tower, projection),
    )


def heads_alignment(out: Path, backbone: EncoderManifest) -> Alignment | None:
    """The trained heads to fuse onto ``backbone``, or None (none trained, or trained on
    another backbone — then they are ignored, with a warning)."""
    folder = align_folder(out)
    if not (folder / HEADS_FILE).is_file() or not (folder / META_FILE).is_file():
        return None
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    if meta.get("backbone_version") != backbone.model_version:
        log.warning(
            "the heads in %s were trained on another backbone (%s, now %s); serving the "
            "backbone until `styleloop train align` runs again",
            folder,
            meta.get("backbone_version"),
            backbone.model_version,
        )
        return None
    return Alignment(
        heads=str((folder / HEADS_FILE).relative_to(out)),
        heads_sha256=sha256_file(folder / HEADS_FILE),
        backbone_model_id=backbone.model_id,
        backbone_version=backbone.model_version,
    )


def prepare_aligned(
    preset: PresetName, out: Path, backbone: EncoderManifest, alignment: Alignment
) -> tuple[EncoderManifest, AttributeModelManifest]:
    """Fuse the trained heads onto the backbone: image → shared vector, text → shared
    vector, image → attribute probabilities; three graphs through the one export path."""
    loaded = load_backbone(preset, out, backbone)
    projection, colour, classifiers, meta = load_heads(align_folder(out))
    encoder = export_towers(
        loaded,
        AlignedImageTower(loaded.image_tower, colour, projection),
        AlignedTextTower(loaded.text_tower, projection),
        out,
        "aligned",
        model_id=f"{backbone.model_id}+styleloop-align-{meta['dim']}",
        source=f"styleloop train align on {meta['products']} products (seed {meta['seed']})",
        shared_space=True,
        alignment=alignment,
    )
    model = AttributeModel(loaded.image_tower, colour, classifiers).eval()
    path = out / "aligned" / "attributes.onnx"
    inputs = encoder.image.inputs
    outputs = [
        TensorSpec(name=f"{c.name}_probs", dtype="float32", shape=["batch", len(c.classes)])
        for c in classifiers
    ]
    pixels = torch.from_numpy(example_pixels(loaded, 2)["pixel_values"])
    export_onnx(model, (pixels,), inputs, outputs, path)
    check_parity(model, path, example_pixels(loaded, 3))
    attributes = AttributeModelManifest(
        onnx=str(path.relative_to(out)),
        sha256=sha256_file(path),
        inputs=inputs,
        outputs=outputs,
        triton_model=ATTRIBUTE_MODEL,
        preprocessing=loaded.preprocessing,
        attributes=[
            AttributeOutput(name=c.name, output=spec.name, classes=c.classes)
            for c, spec in zip(classifiers, outputs, strict=True)
        ],
        alignment=alignment,
    )
    return encoder, attributes


def write_triton(out: Path, manifest: Manifest, settings: ModelSettings) -> None:
    """The Triton repository serves exactly what the manifest says the services use."""
    repository = out / manifest.triton_repository
    models: list[tuple[str, str, list[TensorSpec], list[TensorSpec]]] = []
    if manifest.encoder is not None:
        for tower in (manifest.encoder.image, manifest.encoder.text):
            models.append((tower.triton_model, tower.onnx, tower.inputs, tower.outputs))
    if manifest.attributes is not None:
        a = manifest.attributes
        models.append((a.triton_model, a.onnx, a.inputs, a.outputs))
    else:
        shutil.rmtree(repository / ATTRIBUTE_MODEL, ignore_errors=True)
    for name, onnx_path, inputs, outputs in models:
        write_model(
            repository,
            name,
            out / onnx_path,
            inputs,
            outputs,
            max_batch_size=settings.triton_max_batch_size,
            max_queue_delay_us=settings.triton_max_queue_delay_us,
            instance_kind=settings.triton_instance_kind,
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
    return m.recipe == ENCODER_RECIPE and files_intact(
        out,
        {
            m.image.onnx: m.image.sha256,
            m.text.onnx: m.text.sha256,
            m.text.tokenizer: m.text.tokenizer_sha256,
        },
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
    if preset == "offline":  # before any step: unknown or not installed, said at once
        try:
            presets.offline_wheel(ids.llm)
        except presets.OfflineLlmUnavailable as exc:
            raise PrepareError(f"llm: {exc}") from None
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
        m = manifest.backbone
        if not force and m and m.model_id == ids.encoder and _encoder_intact(out, m):
            log.info("encoder up to date", extra={"model_id": m.model_id})
            return
        manifest.backbone = prepare_encoder(preset, ids.encoder, out)

    def alignment_step() -> None:
        backbone = manifest.backbone
        assert backbone is not None
        alignment = heads_alignment(out, backbone)
        if alignment is None:
            manifest.encoder, manifest.attributes = backbone, None
            return
        m, a = manifest.encoder, manifest.attributes
        if (
            not force
            and m is not None
            and a is not None
            and m.alignment == alignment == a.alignment
            and _encoder_intact(out, m)
            and files_intact(out, {a.onnx: a.sha256})
        ):
            log.info("aligned encoder up to date", extra={"model_id": m.model_id})
            return
        manifest.encoder, manifest.attributes = prepare_aligned(preset, out, backbone, alignment)

    def captioner_step() -> None:
        if ids.captioner is None:
            manifest.captioner = None
            manifest.captioner_pending = (
                "" if manifest.attributes else presets.OFFLINE_CAPTIONER_PENDING
            )
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
        ("alignment", alignment_step),
        ("captioner", captioner_step),
        ("llm", llm_step),
    ]
    with tqdm(steps, desc=f"prepare {preset}", unit="step", disable=not progress) as bar:
        for name, step in bar:
            bar.set_postfix_str(name)
            step()
            save_manifest(out, manifest)
    write_triton(out, manifest, settings)
    return manifest
