"""Trained heads fused onto the backbone: export parity, manifest, Triton, and serving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from styleloop.catalog import load_products
from styleloop.models import align
from styleloop.models.attributes import AttributePredictor, AttributesUnavailable
from styleloop.models.heads import load_heads
from styleloop.models.manifest import Manifest, load_manifest
from styleloop.models.prepare import example_text_inputs, load_towers, prepare
from styleloop.models.preprocess import preprocess_image
from styleloop.v1 import encoder_pb2, encoder_pb2_grpc
from tests.conftest import encode_png
from tests.unit.encoder.conftest import encoder_settings, start_encoder


@pytest.fixture(scope="module")
def fused(trained_models: Path) -> Manifest:
    prepare("tiny", trained_models, progress=False)
    manifest = load_manifest(trained_models)
    assert manifest is not None
    return manifest


def catalog_pixels(drawn_catalog: Path, manifest: Manifest) -> tuple[list[Image.Image], np.ndarray]:
    assert manifest.encoder is not None
    images = [Image.open(p.image) for p in load_products(drawn_catalog)]
    pixels = np.stack([preprocess_image(im, manifest.encoder.image.preprocessing) for im in images])
    return images, pixels


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_fused_encoder_is_registered_with_a_new_version(fused: Manifest, trained_models: Path):
    encoder, backbone, attributes = fused.encoder, fused.backbone, fused.attributes
    assert encoder is not None and backbone is not None and attributes is not None
    assert encoder.alignment is not None and encoder.shared_space
    assert encoder.model_version != backbone.model_version
    assert encoder.alignment.backbone_version == backbone.model_version
    # 256-d projection + probabilities of the 3 drawn article types
    assert encoder.image.dimension == encoder.text.dimension == 256 + 3
    assert [a.name for a in attributes.attributes] == list(align.ATTRIBUTES)
    colours = next(a for a in attributes.attributes if a.name == "base_colour")
    assert set(colours.classes) == {"Black", "Blue", "Green", "Red"}
    assert fused.captioner_pending == ""  # the offline-style captioner has its model
    repository = trained_models / "triton"
    for name, onnx in (
        ("image_encoder", encoder.image.onnx),
        ("text_encoder", encoder.text.onnx),
        ("image_attributes", attributes.onnx),
    ):
        served = repository / name / "1" / "model.onnx"
        assert served.read_bytes() == (trained_models / onnx).read_bytes()
        assert f'name: "{name}"' in (repository / name / "config.pbtxt").read_text()
    config = (repository / "image_attributes" / "config.pbtxt").read_text()
    assert '"base_colour_probs"' in config and "dims: [ 4 ]" in config


def test_export_gives_the_pytorch_vectors(
    drawn_catalog: Path, fused: Manifest, trained_models: Path
):
    encoder = fused.encoder
    assert encoder is not None
    image_tower, text_tower = load_towers("tiny", trained_models, encoder)
    _, pixels = catalog_pixels(drawn_catalog, fused)
    session = ort.InferenceSession(str(trained_models / encoder.image.onnx))
    got = session.run(None, {"pixel_values": pixels})[0]
    with torch.no_grad():
        want = image_tower.eval()(torch.from_numpy(pixels)).numpy()
    assert cosine_rows(got, want).min() > 0.999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)

    from styleloop.models import presets

    texts = example_text_inputs(
        presets.load_encoder("tiny", presets.DEFAULT_IDS["tiny"].encoder), 5
    )
    session = ort.InferenceSession(str(trained_models / encoder.text.onnx))
    got = session.run(None, texts)[0]
    with torch.no_grad():
        want = text_tower.eval()(*(torch.from_numpy(v) for v in texts.values())).numpy()
    assert cosine_rows(got, want).min() > 0.999


def test_attribute_graph_reproduces_the_trained_heads(
    drawn_catalog: Path, fused: Manifest, trained_models: Path
):
    """The graph computes backbone features and colour statistics itself; its output must
    be what the heads gave on the features they were trained on."""
    images, _ = catalog_pixels(drawn_catalog, fused)
    predictor = AttributePredictor(trained_models)
    _, _, classifiers, _ = load_heads(trained_models / "align")
    products = load_products(drawn_catalog)
    features = align.extract_features(
        products, trained_models, trained_models / ".cache", progress=False
    )
    pixels = np.stack([preprocess_image(im, predictor.spec.preprocessing) for im in images])
    served = predictor.probabilities(pixels)
    with torch.no_grad():
        inputs = align.feature_inputs(features)
        for classifier in classifiers:
            np.testing.assert_allclose(
                served[classifier.name], classifier(inputs).numpy(), atol=1e-4
            )
    predictions = predictor.predict_images(images)
    colour_right = [
        row["base_colour"].value == p.attributes["base_colour"]
        for row, p in zip(predictions, products, strict=True)
    ]
    assert np.mean(colour_right) > 0.9
    assert all(0 < row["article_type"].probability <= 1 for row in predictions)


def test_prepare_keeps_current_fused_graphs_and_refuses_foreign_heads(
    fused: Manifest, trained_models: Path, tmp_path: Path
):
    models = tmp_path / "models"
    shutil.copytree(trained_models, models)
    assert fused.encoder is not None and fused.backbone is not None
    onnx = models / fused.encoder.image.onnx
    before = onnx.stat().st_mtime_ns
    again = prepare("tiny", models, progress=False)
    assert onnx.stat().st_mtime_ns == before  # nothing redone
    assert again.encoder == fused.encoder

    meta_path = models / "align" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["backbone_version"] = "another"
    meta_path.write_text(json.dumps(meta))
    unaligned = prepare("tiny", models, progress=False)
    assert unaligned.encoder == unaligned.backbone and unaligned.attributes is None
    assert not (models / "triton" / "image_attributes").exists()
    assert (models / "triton" / "image_encoder" / "1" / "model.onnx").read_bytes() == (
        models / fused.backbone.image.onnx
    ).read_bytes()
    with pytest.raises(AttributesUnavailable, match="train align"):
        AttributePredictor(models)


async def test_encoder_service_serves_the_fused_model(
    drawn_catalog: Path, fused: Manifest, trained_models: Path
):
    encoder = fused.encoder
    assert encoder is not None
    images, pixels = catalog_pixels(drawn_catalog, fused)
    want_images = ort.InferenceSession(str(trained_models / encoder.image.onnx)).run(
        None, {"pixel_values": pixels[:4]}
    )[0]
    for backend in ("onnxruntime", "torch"):
        server, service = await start_encoder(
            encoder_settings(trained_models, encoder_backend=backend)
        )
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = encoder_pb2_grpc.EncoderServiceStub(channel)
                info = (await stub.GetEncoderInfo(encoder_pb2.GetEncoderInfoRequest())).model
                assert info.model_version == encoder.model_version and info.shared_space
                assert info.image_dimension == info.text_dimension == 259
                response = await stub.EmbedImages(
                    encoder_pb2.EmbedImagesRequest(images=[encode_png(im) for im in images[:4]])
                )
                got = np.stack([np.asarray(r.embedding.values) for r in response.results])
                assert cosine_rows(got, want_images).min() > 0.999
                texts = await stub.EmbedTexts(
                    encoder_pb2.EmbedTextsRequest(texts=["Red Tshirts", "Blue Shoes"])
                )
                assert all(len(r.embedding.values) == 259 for r in texts.results)
        finally:
            await server.stop(grace=0)
            await service.stop()
