"""EncoderService over a real gRPC channel on 127.0.0.1 (tiny preset)."""

from __future__ import annotations

import asyncio
import io

import grpc
import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from styleloop.v1 import encoder_pb2, encoder_pb2_grpc
from tests.conftest import catalog_images, encode_png, error_reason
from tests.unit.encoder.conftest import encoder_settings, start_encoder


def vector(result: encoder_pb2.EmbeddingResult) -> np.ndarray:
    assert result.WhichOneof("result") == "embedding", result.error
    return np.asarray(result.embedding.values, dtype=np.float32)


def batches_larger_than_one() -> float:
    total = REGISTRY.get_sample_value("encoder_batch_size_count", {"modality": "image"}) or 0.0
    ones = REGISTRY.get_sample_value(
        "encoder_batch_size_bucket", {"modality": "image", "le": "1.0"}
    )
    return total - (ones or 0.0)


async def test_64_concurrent_requests_each_get_their_own_embedding(encoder_channel):
    stub = encoder_pb2_grpc.EncoderServiceStub(encoder_channel)
    images = [encode_png(image) for image in catalog_images(64)]
    singles = []
    for data in images:  # one at a time: each runs in a batch of its own
        response = await stub.EmbedImages(encoder_pb2.EmbedImagesRequest(images=[data]), timeout=30)
        singles.append(vector(response.results[0]))
    before = batches_larger_than_one()
    responses = await asyncio.gather(
        *(stub.EmbedImages(encoder_pb2.EmbedImagesRequest(images=[d]), timeout=30) for d in images)
    )
    for single, response in zip(singles, responses, strict=True):
        np.testing.assert_allclose(vector(response.results[0]), single, atol=1e-5)
    assert batches_larger_than_one() > before
    # Different photos, different vectors: nobody got somebody else's row.
    stacked = np.stack(singles)
    assert len({tuple(np.round(row, 4)) for row in stacked}) == 64


async def test_bad_items_fail_alone_and_good_neighbours_are_embedded(encoder_channel):
    stub = encoder_pb2_grpc.EncoderServiceStub(encoder_channel)
    good = encode_png(catalog_images(1)[0])
    alone = vector(
        (await stub.EmbedImages(encoder_pb2.EmbedImagesRequest(images=[good]))).results[0]
    )
    buffer = io.BytesIO()
    Image.new("L", (9000, 9000), 255).save(buffer, format="PNG")
    bad = [b"", b"not an image", good[: len(good) // 3], buffer.getvalue(), b"\x89PNG\r\n"]
    response = await stub.EmbedImages(
        encoder_pb2.EmbedImagesRequest(images=[bad[0], good, *bad[1:], good]), timeout=30
    )
    kinds = [r.WhichOneof("result") for r in response.results]
    assert kinds == ["error", "embedding", "error", "error", "error", "error", "embedding"]
    reasons = [r.error.reason for r in response.results if r.WhichOneof("result") == "error"]
    assert reasons == [
        "IMAGE_EMPTY",
        "IMAGE_UNREADABLE",
        "IMAGE_CORRUPT",
        "IMAGE_TOO_MANY_PIXELS",
        "IMAGE_UNREADABLE",
    ]
    np.testing.assert_allclose(vector(response.results[1]), alone, atol=1e-5)
    np.testing.assert_allclose(vector(response.results[6]), alone, atol=1e-5)
    # The service is still serving.
    info = await stub.GetEncoderInfo(encoder_pb2.GetEncoderInfoRequest(), timeout=5)
    assert info.model.model_id == "styleloop/tiny-clip"


async def test_texts_bad_ones_fail_alone_long_ones_are_truncated(encoder_channel):
    stub = encoder_pb2_grpc.EncoderServiceStub(encoder_channel)
    long_text = "black leather boots " * 60  # far beyond the 32-token context, under 2000 chars
    response = await stub.EmbedTexts(
        encoder_pb2.EmbedTextsRequest(texts=["red floral dress", "", long_text, "x" * 2001]),
        timeout=30,
    )
    assert response.dimension == 32 and response.model_id == "styleloop/tiny-clip"
    assert [r.WhichOneof("result") for r in response.results] == [
        "embedding",
        "error",
        "embedding",
        "error",
    ]
    assert response.results[1].error.reason == "TEXT_EMPTY"
    assert response.results[3].error.reason == "TEXT_TOO_LONG"
    assert np.linalg.norm(vector(response.results[2])) == pytest.approx(1.0, abs=1e-5)
    truncated = await stub.EmbedTexts(
        encoder_pb2.EmbedTextsRequest(texts=["black leather boots " * 20]), timeout=30
    )
    # Both exceed the context, so both are cut to the same first 32 tokens.
    np.testing.assert_allclose(vector(truncated.results[0]), vector(response.results[2]), atol=1e-5)


@pytest.mark.parametrize(("images", "reason"), [(0, "NO_ITEMS"), (65, "TOO_MANY_ITEMS")])
async def test_request_size_limits_are_invalid_argument(encoder_channel, images, reason):
    stub = encoder_pb2_grpc.EncoderServiceStub(encoder_channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.EmbedImages(encoder_pb2.EmbedImagesRequest(images=[b"x"] * images), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == reason


@pytest.mark.parametrize(
    ("bound", "reason"),
    [("max_queue_items", "ENCODER_QUEUE_FULL"), ("max_preprocess_items", "ENCODER_BUSY")],
)
async def test_a_full_queue_or_decoder_is_resource_exhausted(tiny_models, bound, reason):
    server, encoder = await start_encoder(encoder_settings(tiny_models, **{bound: 2}))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            images = [encode_png(image) for image in catalog_images(3)]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.EmbedImages(encoder_pb2.EmbedImagesRequest(images=images), timeout=10)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error_reason(err.value) == reason
            ok = await stub.EmbedImages(
                encoder_pb2.EmbedImagesRequest(images=images[:2]), timeout=10
            )
            assert all(r.WhichOneof("result") == "embedding" for r in ok.results)
    finally:
        await server.stop(grace=0)
        await encoder.stop()


async def test_onnxruntime_and_torch_backends_agree(tiny_models):
    images = [encode_png(image) for image in catalog_images(6)]
    texts = ["red floral dress", "black boots", "what goes with this denim jacket?"]
    outputs = {}
    for backend in ("onnxruntime", "torch"):
        server, encoder = await start_encoder(
            encoder_settings(tiny_models, encoder_backend=backend)
        )
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = encoder_pb2_grpc.EncoderServiceStub(channel)
                image_resp = await stub.EmbedImages(encoder_pb2.EmbedImagesRequest(images=images))
                text_resp = await stub.EmbedTexts(encoder_pb2.EmbedTextsRequest(texts=texts))
                info = await stub.GetEncoderInfo(encoder_pb2.GetEncoderInfoRequest())
                assert info.model.backend == backend
        finally:
            await server.stop(grace=0)
            await encoder.stop()
        outputs[backend] = (
            np.stack([vector(r) for r in image_resp.results]),
            np.stack([vector(r) for r in text_resp.results]),
        )
    for ort_vectors, torch_vectors in zip(outputs["onnxruntime"], outputs["torch"], strict=True):
        assert np.min(np.sum(ort_vectors * torch_vectors, axis=1)) > 0.999
