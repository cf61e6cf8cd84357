"""CaptionerService over a real gRPC channel on 127.0.0.1: the tiny preset's generative
captioner and the attribute heads trained on a drawn catalog."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from services.captioner.config import CaptionerSettings
from services.captioner.core import build_captioner
from services.captioner.servicer import SERVICE_NAME, register
from styleloop.catalog import load_products
from styleloop.runtime.server import GrpcServer
from styleloop.v1 import captioner_pb2, captioner_pb2_grpc
from tests.conftest import encode_png, error_reason, run_failing_service, synthetic_garment


def settings(models_dir: Path, **overrides) -> CaptionerSettings:
    values = {
        "models_dir": models_dir,
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_port": -1,
        "max_batch_wait_ms": 20,
        **overrides,
    }
    return CaptionerSettings(**values)


async def channel_to(config: CaptionerSettings) -> AsyncIterator[grpc.aio.Channel]:
    core = build_captioner(config)
    server = GrpcServer(config, register(core), [SERVICE_NAME])
    await server.start()
    try:
        await core.start()
        await server.set_ready()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield channel
    finally:
        await server.stop(grace=0)
        await core.stop()


@pytest.fixture
async def generative(tiny_models: Path) -> AsyncIterator[captioner_pb2_grpc.CaptionerServiceStub]:
    async for channel in channel_to(settings(tiny_models)):
        yield captioner_pb2_grpc.CaptionerServiceStub(channel)


@pytest.fixture
async def attributes(
    trained_models: Path,
) -> AsyncIterator[captioner_pb2_grpc.CaptionerServiceStub]:
    async for channel in channel_to(settings(trained_models, captioner_kind="attributes")):
        yield captioner_pb2_grpc.CaptionerServiceStub(channel)


def batches_larger_than_one() -> float:
    total = REGISTRY.get_sample_value("captioner_batch_size_count", {"modality": "image"}) or 0.0
    ones = REGISTRY.get_sample_value(
        "captioner_batch_size_bucket", {"modality": "image", "le": "1.0"}
    )
    return total - (ones or 0.0)


async def test_every_image_gets_its_caption_and_concurrent_requests_share_batches(generative):
    images = [encode_png(synthetic_garment(i, 96)) for i in range(12)]
    singles = []
    for data in images[:4]:
        response = await generative.CaptionImages(
            captioner_pb2.CaptionImagesRequest(images=[data], max_new_tokens=8), timeout=30
        )
        assert response.results[0].WhichOneof("result") == "caption"
        singles.append(response.results[0].caption)
    before = batches_larger_than_one()
    responses = await asyncio.gather(
        *(
            generative.CaptionImages(
                captioner_pb2.CaptionImagesRequest(images=[d], max_new_tokens=8), timeout=30
            )
            for d in images
        )
    )
    assert batches_larger_than_one() > before
    for response in responses:
        assert len(response.results) == 1
        caption = response.results[0].caption
        assert caption.text and 0 < caption.generated_tokens <= 8
    # Greedy decoding is deterministic: batched captions equal the one-at-a-time ones.
    assert [r.results[0].caption.text for r in responses[:4]] == [c.text for c in singles]
    assert responses[0].model_id == "styleloop/tiny-blip"


async def test_bad_images_fail_alone_and_the_service_keeps_serving(generative):
    good = encode_png(synthetic_garment(1, 96))
    bomb = io.BytesIO()
    Image.new("L", (9000, 9000), 255).save(bomb, format="PNG")
    gif = io.BytesIO()
    Image.new("RGB", (10, 10)).save(gif, format="GIF")
    bad = [b"", b"not an image", good[: len(good) // 3], bomb.getvalue(), gif.getvalue()]
    response = await generative.CaptionImages(
        captioner_pb2.CaptionImagesRequest(images=[good, *bad, good], max_new_tokens=4)
    )
    kinds = [r.WhichOneof("result") for r in response.results]
    assert kinds == ["caption", "error", "error", "error", "error", "error", "caption"]
    reasons = [r.error.reason for r in response.results[1:-1]]
    assert reasons == [
        "IMAGE_EMPTY",
        "IMAGE_UNREADABLE",
        "IMAGE_CORRUPT",
        "IMAGE_TOO_MANY_PIXELS",
        "IMAGE_FORMAT_UNSUPPORTED",
    ]
    assert all(r.error.message for r in response.results[1:-1])
    again = await generative.CaptionImages(captioner_pb2.CaptionImagesRequest(images=[good]))
    assert again.results[0].WhichOneof("result") == "caption"


@pytest.mark.parametrize(
    ("request_kwargs", "reason"),
    [
        ({}, "NO_ITEMS"),
        ({"images": [b"x"] * 33}, "TOO_MANY_ITEMS"),
        ({"images": [b"x"], "prompt": "p" * 1001}, "PROMPT_TOO_LONG"),
        ({"images": [b"x"], "max_new_tokens": 513}, "MAX_NEW_TOKENS_OUT_OF_RANGE"),
    ],
)
async def test_bad_requests_are_invalid_argument(generative, request_kwargs, reason):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await generative.CaptionImages(captioner_pb2.CaptionImagesRequest(**request_kwargs))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == reason


async def test_info_names_the_model_and_prompt(generative):
    info = await generative.GetCaptionerInfo(captioner_pb2.GetCaptionerInfoRequest())
    assert info.model.preset == "tiny" and info.model.backend == "generative"
    assert info.model.device == "cpu" and info.model.max_batch_size == 8
    assert info.default_prompt == ""  # BLIP continues a prefix; it takes no instruction


async def test_attribute_captioner_writes_captions_from_confident_heads(
    attributes, drawn_catalog: Path
):
    products = load_products(drawn_catalog)
    images = [encode_png(Image.open(p.image)) for p in products[:12]]
    response = await attributes.CaptionImages(captioner_pb2.CaptionImagesRequest(images=images))
    right = 0
    for product, result in zip(products[:12], response.results, strict=True):
        caption = result.caption
        found = {a.name: a for a in caption.attributes}
        assert caption.generated_tokens == 0
        assert all(0.35 <= a.confidence <= 1 for a in caption.attributes)
        colour = product.attributes["base_colour"]
        if "colour" in found and found["colour"].value == colour:
            right += 1
            assert colour.lower() in caption.text
        assert caption.text.startswith(("a ", "an ")) or caption.text.endswith("s")
    assert right >= 10  # the drawn colours are plain to see
    info = await attributes.GetCaptionerInfo(captioner_pb2.GetCaptionerInfoRequest())
    assert info.model.backend == "attributes" and info.model.model_id.startswith("styleloop/")


def test_missing_models_stop_the_process_with_a_clear_message(tmp_path: Path):
    output = run_failing_service("services.captioner", {"MODELS_DIR": str(tmp_path)}, [])
    assert "no models in" in output
    output = run_failing_service("services.captioner", {}, ["MODELS_DIR"])
    assert "MODELS_DIR" in output
