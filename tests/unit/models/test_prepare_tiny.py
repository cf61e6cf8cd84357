"""`styleloop models prepare --preset tiny`: the export path every preset shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format
from tokenizers import Tokenizer
from tritonclient.grpc import model_config_pb2

from styleloop.models import presets
from styleloop.models.manifest import Manifest, load_manifest
from styleloop.models.prepare import PrepareError, prepare
from styleloop.models.preprocess import preprocess_images
from tests.conftest import catalog_images, run_cli

TEXTS = [
    "red floral dress",
    "black leather ankle boots for winter evenings with a low heel",
    "a",
    "navy striped cotton shirt",
    "what goes with this denim jacket?",
    "white sneakers",
    "a gold clutch for a summer party, embroidered, with a chain strap",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    prepare("tiny", out, progress=False)
    return out


@pytest.fixture(scope="module")
def manifest(tiny_dir: Path) -> Manifest:
    loaded = load_manifest(tiny_dir)
    assert loaded is not None
    return loaded


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def tokenize(tiny_dir: Path, manifest: Manifest, texts: list[str], pad: bool) -> dict:
    tok = Tokenizer.from_file(str(tiny_dir / manifest.encoder.text.tokenizer))
    tok.enable_truncation(manifest.encoder.text.max_length)
    if pad:
        tok.enable_padding(pad_id=manifest.encoder.text.pad_token_id)
    encodings = tok.encode_batch(texts)
    return {
        "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
    }


def test_manifest_describes_every_component(tiny_dir: Path, manifest: Manifest):
    assert manifest.preset == "tiny"
    enc = manifest.encoder
    assert enc is not None and enc.shared_space
    assert enc.image.dimension == enc.text.dimension == 32
    assert [t.name for t in enc.image.inputs] == ["pixel_values"]
    assert [t.name for t in enc.text.inputs] == ["input_ids", "attention_mask"]
    assert enc.image.preprocessing.crop_height == 64
    for rel in (enc.image.onnx, enc.text.onnx, enc.text.tokenizer):
        assert (tiny_dir / rel).is_file()
    assert manifest.captioner is not None and manifest.captioner.kind == "image_to_text"
    assert manifest.llm is not None and manifest.llm.kind == "causal_lm"
    assert any(name.endswith(".safetensors") for name in manifest.llm.files)


def test_image_batch_of_seven_equals_one_at_a_time(tiny_dir: Path, manifest: Manifest):
    pixels = preprocess_images(catalog_images(7), manifest.encoder.image.preprocessing)
    sess = session(tiny_dir / manifest.encoder.image.onnx)
    batched = sess.run(None, {"pixel_values": pixels})[0]
    singles = np.concatenate(
        [sess.run(None, {"pixel_values": pixels[i : i + 1]})[0] for i in range(7)]
    )
    assert batched.shape == (7, 32)
    np.testing.assert_allclose(batched, singles, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    # Different images give different vectors (the graph is not constant).
    assert np.min(np.linalg.norm(batched[:, None] - batched[None], axis=2) + np.eye(7)) > 1e-3


def test_text_batch_of_seven_with_padding_equals_one_at_a_time(tiny_dir: Path, manifest: Manifest):
    sess = session(tiny_dir / manifest.encoder.text.onnx)
    batched = sess.run(None, tokenize(tiny_dir, manifest, TEXTS, pad=True))[0]
    singles = np.concatenate(
        [sess.run(None, tokenize(tiny_dir, manifest, [text], pad=False))[0] for text in TEXTS]
    )
    np.testing.assert_allclose(batched, singles, atol=1e-5)


def test_onnx_matches_pytorch(tiny_dir: Path, manifest: Manifest):
    # Built again from the same seed: the very weights that were exported.
    loaded = presets.load_encoder("tiny", manifest.encoder.model_id)
    pixels = preprocess_images(catalog_images(5), manifest.encoder.image.preprocessing)
    onnx_image = session(tiny_dir / manifest.encoder.image.onnx).run(
        None, {"pixel_values": pixels}
    )[0]
    inputs = tokenize(tiny_dir, manifest, TEXTS, pad=True)
    onnx_text = session(tiny_dir / manifest.encoder.text.onnx).run(None, inputs)[0]
    with torch.no_grad():
        torch_image = loaded.image_tower(torch.from_numpy(pixels)).numpy()
        torch_text = loaded.text_tower(*(torch.from_numpy(v) for v in inputs.values())).numpy()
    assert np.min(np.sum(onnx_image * torch_image, axis=1)) > 0.999
    assert np.min(np.sum(onnx_text * torch_text, axis=1)) > 0.999


@pytest.mark.parametrize("tower", ["image", "text"])
def test_triton_config_parses_and_matches_exported_tensors(
    tiny_dir: Path, manifest: Manifest, tower: str
):
    spec = getattr(manifest.encoder, tower)
    folder = tiny_dir / manifest.triton_repository / spec.triton_model
    config = text_format.Parse(
        (folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert config.name == spec.triton_model
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size >= 32
    assert config.HasField("dynamic_batching")
    assert len(config.instance_group) == 1 and config.instance_group[0].count >= 1
    graph = onnx.load(str(folder / "1" / "model.onnx")).graph
    onnx_type = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.INT64: "TYPE_INT64"}
    for declared, actual in ((config.input, graph.input), (config.output, graph.output)):
        assert [t.name for t in declared] == [t.name for t in actual]
        for tensor, value in zip(declared, actual, strict=True):
            assert (
                model_config_pb2.DataType.Name(tensor.data_type)
                == onnx_type[value.type.tensor_type.elem_type]
            )
            dims = value.type.tensor_type.shape.dim
            assert dims[0].dim_param, "the first axis must be the dynamic batch axis"
            want = [d.dim_value if d.dim_value else -1 for d in dims[1:]]
            assert list(tensor.dims) == want


def test_generative_checkpoints_load_and_generate(tiny_dir: Path, manifest: Manifest):
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    llm_dir = tiny_dir / manifest.llm.path
    model = AutoModelForCausalLM.from_pretrained(llm_dir)
    tok = AutoTokenizer.from_pretrained(llm_dir)
    ids = tok("what goes with a black jacket", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]

    cap_dir = tiny_dir / manifest.captioner.path
    captioner = AutoModelForImageTextToText.from_pretrained(cap_dir)
    processor = AutoProcessor.from_pretrained(cap_dir)
    inputs = processor(images=catalog_images(1), return_tensors="pt")
    caption = captioner.generate(pixel_values=inputs["pixel_values"], max_new_tokens=4)
    assert caption.shape[1] > 1


def test_second_run_redoes_nothing(tiny_dir: Path, manifest: Manifest, monkeypatch):
    image_onnx = tiny_dir / manifest.encoder.image.onnx
    before = image_onnx.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("a finished step was redone")

    for name in ("load_encoder", "load_captioner", "load_llm"):
        monkeypatch.setattr(presets, name, fail)
    again = prepare("tiny", tiny_dir, progress=False)
    assert again.encoder == manifest.encoder
    assert image_onnx.stat().st_mtime_ns == before


def test_damaged_file_redoes_only_its_step(tmp_path: Path, monkeypatch):
    first = prepare("tiny", tmp_path, progress=False)
    (tmp_path / first.encoder.text.onnx).write_bytes(b"truncated")
    calls: list[str] = []
    real_encoder = presets.load_encoder
    monkeypatch.setattr(
        presets, "load_encoder", lambda *a: calls.append("encoder") or real_encoder(*a)
    )
    monkeypatch.setattr(presets, "load_llm", lambda *a: calls.append("llm"))
    monkeypatch.setattr(presets, "load_captioner", lambda *a: calls.append("captioner"))
    second = prepare("tiny", tmp_path, progress=False)
    assert calls == ["encoder"]
    assert second.encoder.text.sha256 == first.encoder.text.sha256


def test_output_of_an_older_recipe_is_redone(tmp_path: Path, monkeypatch):
    from styleloop.models import prepare as prepare_module
    from styleloop.models.manifest import save_manifest

    first = prepare("tiny", tmp_path, progress=False)
    first.encoder.recipe = prepare_module.ENCODER_RECIPE - 1
    save_manifest(tmp_path, first)
    calls: list[str] = []
    real_encoder = presets.load_encoder
    monkeypatch.setattr(
        presets, "load_encoder", lambda *a: calls.append("encoder") or real_encoder(*a)
    )
    second = prepare("tiny", tmp_path, progress=False)
    assert calls == ["encoder"]
    assert second.encoder.recipe == prepare_module.ENCODER_RECIPE


def test_folder_of_another_preset_is_refused(tiny_dir: Path):
    with pytest.raises(PrepareError, match="holds models of preset 'tiny'"):
        prepare("offline", tiny_dir, progress=False)


def test_cli_prepares_and_summarises(tmp_path: Path):
    result = run_cli(
        "models",
        "prepare",
        "--preset",
        "tiny",
        "--out",
        str(tmp_path),
        "--no-progress",
        HF_HUB_OFFLINE="1",
    )
    assert result.returncode == 0, result.stderr
    assert "encoder    styleloop/tiny-clip" in result.stdout
    assert (tmp_path / "manifest.json").is_file()
