"""`styleloop bench encoder`: throughput and latency with micro-batching on and off.

Starts the encoder as a real process on 127.0.0.1 for each mode, drives it with
concurrent gRPC clients from this process (a bounded number of requests, one image
each), and prints images/s and latency percentiles per concurrency, then the batching
speed-up at the highest concurrency as a ratio measured in the same run.

On a shared 2-core machine one short measurement of a mode moves by tens of percent, so
the modes alternate for several rounds (unbatched, batched, unbatched, …): the table
shows per-level medians over the rounds, and the speed-up is the median of the per-round
ratios, printed with its range.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from styleloop.bench import report
from styleloop.bench.load import closed_loop
from styleloop.bench.report import report_argument
from styleloop.catalog import load_products
from styleloop.commands import add_command
from styleloop.processes import spawn
from styleloop.v1 import encoder_pb2, encoder_pb2_grpc


@dataclass
class Measurement:
    modality: str
    mode: str
    concurrency: int
    requests: int
    items_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    round: int = 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_serving(address: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the encoder exited with code {process.returncode}")
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"the encoder at {address} did not become ready in {timeout} s")


TEXTS = [
    "red floral summer dress",
    "black leather ankle boots",
    "navy striped cotton shirt",
    "white sneakers for running",
    "a gold clutch for a party",
    "grey wool winter coat",
    "blue slim fit jeans",
    "what goes with this denim jacket?",
]


async def _drive(
    address: str, modality: str, images: Sequence[bytes], concurrency: int, requests: int
) -> tuple[float, list[float]]:
    """Send ``requests`` one-item requests from ``concurrency`` workers; elapsed, latencies."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = encoder_pb2_grpc.EncoderServiceStub(channel)

        async def call(index: int) -> encoder_pb2.EmbeddingResult:
            if modality == "image":
                request = encoder_pb2.EmbedImagesRequest(images=[images[index % len(images)]])
                image_response = await stub.EmbedImages(request, timeout=60)
                return image_response.results[0]  # type: ignore[no-any-return]
            text = f"{TEXTS[index % len(TEXTS)]} {index}"
            response = await stub.EmbedTexts(
                encoder_pb2.EmbedTextsRequest(texts=[text]), timeout=60
            )
            return response.results[0]  # type: ignore[no-any-return]

        async def checked(index: int) -> None:
            result = await call(index)
            if result.WhichOneof("result") != "embedding":
                raise RuntimeError(f"embedding failed: {result.error}")

        await call(0)  # warm-up, not counted
        return await closed_loop(checked, requests, concurrency)


async def run_mode(
    mode: str,
    models_dir: Path,
    images: Sequence[bytes],
    concurrencies: Sequence[int],
    requests_per_level: int,
    max_batch_size: int,
    round_number: int = 0,
) -> list[Measurement]:
    """Start the encoder with batching on ("batched", the shipped defaults) or off."""
    port = _free_port()
    env = {
        **os.environ,
        "MODELS_DIR": str(models_dir),
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(port),
        "METRICS_PORT": "-1",
        "LOG_LEVEL": "WARNING",
        "MAX_BATCH_SIZE": str(max_batch_size if mode == "batched" else 1),
        "MAX_IMAGE_BATCH_SIZE": os.environ.get("MAX_IMAGE_BATCH_SIZE", "0"),
    }
    if mode == "unbatched":
        env["MAX_BATCH_WAIT_MS"] = "0"
    process = spawn([sys.executable, "-m", "services.encoder"], env=env)
    address = f"127.0.0.1:{port}"
    results = []
    try:
        await _wait_serving(address, process, timeout=120)
        for modality in ("image", "text"):
            for concurrency in concurrencies:
                count = max(requests_per_level, concurrency * 4)
                elapsed, latencies = await _drive(address, modality, images, concurrency, count)
                ms = np.asarray(latencies) * 1000
                results.append(
                    Measurement(
                        modality=modality,
                        mode=mode,
                        concurrency=concurrency,
                        requests=count,
                        items_per_s=count / elapsed,
                        p50_ms=float(np.percentile(ms, 50)),
                        p95_ms=float(np.percentile(ms, 95)),
                        p99_ms=float(np.percentile(ms, 99)),
                        round=round_number,
                    )
                )
    finally:
        process.terminate()
        process.wait(timeout=30)
    return results


def load_images(catalog: Path | None, count: int) -> list[bytes]:
    """Real catalog photos when a catalog is given, else drawn garments (PNG)."""
    if catalog is not None:
        return [p.image.read_bytes() for p in load_products(catalog)[:count]]
    import io

    from PIL import Image, ImageDraw

    images = []
    for i in range(count):
        image = Image.new("RGB", (224, 224), "white")
        ImageDraw.Draw(image).rectangle(
            (20 + i % 50, 30, 200, 210 - i % 40), fill=(i * 37 % 256, 90, 160)
        )
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def medians(results: Sequence[Measurement]) -> list[Measurement]:
    """One row per (modality, mode, concurrency): the median of each figure over rounds."""
    groups: dict[tuple[str, str, int], list[Measurement]] = {}
    for r in results:
        groups.setdefault((r.modality, r.mode, r.concurrency), []).append(r)
    return [
        Measurement(
            modality=modality,
            mode=mode,
            concurrency=concurrency,
            requests=sum(r.requests for r in rows),
            items_per_s=float(np.median([r.items_per_s for r in rows])),
            p50_ms=float(np.median([r.p50_ms for r in rows])),
            p95_ms=float(np.median([r.p95_ms for r in rows])),
            p99_ms=float(np.median([r.p99_ms for r in rows])),
            round=-1,
        )
        for (modality, mode, concurrency), rows in groups.items()
    ]


def format_table(results: Sequence[Measurement]) -> list[str]:
    lines = [
        f"{'modality':<9}{'mode':<10}{'conc':>5}{'reqs':>6}{'items/s':>9}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
    ]
    for r in sorted(results, key=lambda r: (r.modality, r.mode == "batched", r.concurrency)):
        lines.append(
            f"{r.modality:<9}{r.mode:<10}{r.concurrency:>5}{r.requests:>6}{r.items_per_s:>9.1f}"
            f"{r.p50_ms:>9.1f}{r.p95_ms:>9.1f}{r.p99_ms:>9.1f}"
        )
    return lines


def speedups(results: Sequence[Measurement], modality: str, concurrency: int) -> list[float]:
    """Batched over unbatched items/s at ``concurrency``, one ratio per round."""
    rates: dict[int, dict[str, float]] = {}
    for r in results:
        if r.concurrency == concurrency and r.modality == modality:
            rates.setdefault(r.round, {})[r.mode] = r.items_per_s
    return [
        by_mode["batched"] / by_mode["unbatched"]
        for _, by_mode in sorted(rates.items())
        if {"batched", "unbatched"} <= set(by_mode)
    ]


def inference_only_ratio(
    models_dir: Path, onnx: str, feeds: dict[str, np.ndarray], rounds: int = 1
) -> list[float]:
    """Items/s of ONNX Runtime calls on 32 items over calls on one item, once per round:
    what batching can gain on this hardware before any serving overhead."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(models_dir / onnx), providers=["CPUExecutionProvider"])
    single = {name: value[:1] for name, value in feeds.items()}
    ratios = []
    for _ in range(rounds):
        rates = []
        for inputs, items in ((single, 1), (feeds, 32)):
            session.run(None, inputs)
            calls = 64 // items
            started = time.perf_counter()
            for _ in range(calls):
                session.run(None, inputs)
            rates.append(calls * items / (time.perf_counter() - started))
        ratios.append(rates[1] / rates[0])
    return ratios


def bare_model(
    models_dir: Path,
    spec: Any,
    images: Sequence[bytes],
    batch_sizes: Sequence[int] = (1, 8, 32, 64),
) -> dict[str, Any]:
    """What one image costs outside the service, in this process, one stage at a time with
    the service's own code and settings: decoding, preprocessing, and ONNX Runtime on the
    preprocessed images at each batch size (images/s; the best is the bare model)."""
    from services.encoder.backends import OnnxRuntimeRunner
    from services.encoder.config import EncoderSettings
    from styleloop.models.preprocess import preprocess_image
    from styleloop.runtime.errors import ItemFailure
    from styleloop.runtime.inputs import InputLimits, decode_image

    settings = EncoderSettings(models_dir=models_dir)
    limits = InputLimits(settings.max_image_bytes, settings.max_image_pixels, 1)
    started = time.perf_counter()
    decoded = [decode_image(data, limits) for data in images]
    decode_s = (time.perf_counter() - started) / len(images)
    bad = [d for d in decoded if isinstance(d, ItemFailure)]
    if bad:
        raise ValueError(f"a benchmark image failed to decode: {bad[0].message}")
    started = time.perf_counter()
    pixels = np.stack([preprocess_image(d, spec.image.preprocessing) for d in decoded])  # type: ignore[arg-type]
    preprocess_s = (time.perf_counter() - started) / len(images)
    runner = OnnxRuntimeRunner(models_dir, spec, "cpu", settings.ort_threads)
    rates: dict[int, float] = {}
    for size in batch_sizes:
        batches = [np.resize(pixels, (size, *pixels.shape[1:]))]
        runner.run_images(batches[0])  # warm-up
        calls = max(2, 128 // size)
        started = time.perf_counter()
        for _ in range(calls):
            runner.run_images(batches[0])
        rates[size] = calls * size / (time.perf_counter() - started)
    best = max(rates, key=lambda size: rates[size])
    return {
        "decode_ms": decode_s * 1000,
        "preprocess_ms": preprocess_s * 1000,
        "images_per_s_by_batch": rates,
        "best_batch": best,
        "best_images_per_s": rates[best],
    }


def efficiency(served_per_s: float, bare: dict[str, Any]) -> dict[str, float]:
    """Served images/s over the bare model's best, and where one served image's time goes
    (ms of wall time on this machine): the stages measured alone, and the rest (gRPC,
    batching, the client in this process) as what the served time has beyond them. Decoding
    runs in threads beside inference, so the rest can come out below zero."""
    served_ms = 1000 / served_per_s
    inference_ms = 1000 / bare["best_images_per_s"]
    return {
        "ratio": served_per_s / bare["best_images_per_s"],
        "served_ms": served_ms,
        "decode_ms": bare["decode_ms"],
        "preprocess_ms": bare["preprocess_ms"],
        "inference_ms": inference_ms,
        "grpc_and_rest_ms": served_ms - bare["decode_ms"] - bare["preprocess_ms"] - inference_ms,
    }


def _summary(ratios: Sequence[float]) -> str:
    if len(ratios) == 1:
        return f"{ratios[0]:.2f}x"
    return (
        f"{float(np.median(ratios)):.2f}x median of {len(ratios)} rounds "
        f"({min(ratios):.2f}-{max(ratios):.2f})"
    )


async def benchmark(
    models_dir: Path,
    catalog: Path | None,
    concurrencies: Sequence[int] = (1, 8, 32),
    requests_per_level: int = 64,
    max_batch_size: int = 32,
    rounds: int = 3,
) -> list[Measurement]:
    images = load_images(catalog, 64)
    results: list[Measurement] = []
    for round_number in range(rounds):
        for mode in ("unbatched", "batched"):
            results += await run_mode(
                mode,
                models_dir,
                images,
                concurrencies,
                requests_per_level,
                max_batch_size,
                round_number,
            )
    return results


def main(
    models_dir: Path,
    catalog: Path | None,
    requests: int,
    results_dir: Path | None,
    max_batch_size: int = 32,
    rounds: int = 3,
) -> int:
    from styleloop.models.manifest import load_manifest

    manifest = load_manifest(models_dir)
    if manifest is None or manifest.encoder is None:
        sys.stderr.write(f"no encoder in {models_dir}; run `styleloop models prepare` first\n")
        return 2
    spec = manifest.encoder
    results = asyncio.run(
        benchmark(
            models_dir,
            catalog,
            requests_per_level=requests,
            max_batch_size=max_batch_size,
            rounds=rounds,
        )
    )
    height, width = spec.image.preprocessing.crop_height, spec.image.preprocessing.crop_width
    rng = np.random.default_rng(0)
    raw = {
        "image": inference_only_ratio(
            models_dir,
            spec.image.onnx,
            {"pixel_values": rng.standard_normal((32, 3, height, width), dtype=np.float32)},
            rounds,
        ),
        "text": inference_only_ratio(
            models_dir,
            spec.text.onnx,
            {
                "input_ids": rng.integers(1000, 2000, (32, 16)),
                "attention_mask": np.ones((32, 16), np.int64),
            },
            rounds,
        ),
    }
    bare = bare_model(models_dir, spec, load_images(catalog, 64))
    out = sys.stdout
    out.write(
        f"encoder benchmark: {spec.model_id} (preset {manifest.preset}), onnxruntime, "
        f"{os.cpu_count()} CPUs, {'catalog photos' if catalog else 'drawn images'}, "
        f"{rounds} round(s) per mode, medians shown\n"
    )
    for line in format_table(medians(results)):
        out.write(line + "\n")
    top = max(r.concurrency for r in results)
    headline = []
    for modality in ("image", "text"):
        line = (
            f"{modality}: batching speed-up at concurrency {top}: "
            f"{_summary(speedups(results, modality, top))} served "
            f"(ONNX Runtime alone, batch 32 vs 1: {_summary(raw[modality])})"
        )
        headline.append(line)
        out.write(line + "\n")
    served = statistics.median(
        r.items_per_s
        for r in results
        if (r.modality, r.mode, r.concurrency) == ("image", "batched", top)
    )
    cost = efficiency(served, bare)
    out.write(
        "ONNX Runtime alone on the same photos, images/s by batch size: "
        + ", ".join(f"{b}: {v:.1f}" for b, v in bare["images_per_s_by_batch"].items())
        + "\n"
        f"one served image ({served:.1f} images/s at concurrency {top}) = "
        f"{cost['served_ms']:.2f} ms: decode {cost['decode_ms']:.2f}, preprocess "
        f"{cost['preprocess_ms']:.2f}, inference {cost['inference_ms']:.2f} (batch "
        f"{bare['best_batch']}), gRPC, batching and the rest {cost['grpc_and_rest_ms']:.2f}\n"
    )
    line = (
        f"image: served {served:.1f} images/s at concurrency {top} = {cost['ratio']:.0%} of "
        f"ONNX Runtime alone at its best batch size ({bare['best_batch']}: "
        f"{bare['best_images_per_s']:.1f} images/s) (goal >= 80% on CPU)"
    )
    headline.append(line)
    out.write(line + "\n")
    if results_dir is not None:
        payload = {
            "bare_model": bare,
            "efficiency": cost,
            "model_id": spec.model_id,
            "preset": manifest.preset,
            "measurements": [asdict(r) for r in results],
            "speedups": {m: speedups(results, m, top) for m in ("image", "text")},
            "inference_only_ratio": raw,
        }
        path = report.write(results_dir, "encoder", payload, headline, chart(medians(results)))
        out.write(f"wrote {path}\n")
    return 0


def chart(rows: Sequence[Measurement]) -> report.Chart:
    """Items/s per modality and concurrency, batching off beside on."""
    labels = sorted({(r.modality, r.concurrency) for r in rows})
    series = {
        mode: [
            next(
                (r.items_per_s for r in rows if (r.modality, r.concurrency, r.mode) == (*k, mode)),
                None,
            )
            for k in labels
        ]
        for mode in ("unbatched", "batched")
    }
    return report.Chart(
        "encoder served items/s (medians over rounds)",
        "items/s",
        [f"{m} c={c}" for m, c in labels],
        series,
    )


def register(commands: Any) -> None:
    """``styleloop bench encoder``."""
    from styleloop.cli import DEFAULT_MODELS_DIR, positive

    parser = add_command(
        commands,
        "encoder",
        __doc__,
        help="encoder images/s and latency at concurrency 1, 8, 32, batching on vs off",
    )
    parser.add_argument(
        "--models-dir", type=Path, help="prepared models (default: .models/offline)"
    )
    parser.add_argument(
        "--catalog",
        type=Path,
        help="sample data folder with catalog photos "
        "(default: $STYLELOOP_DATA_DIR; drawn images when absent)",
    )
    parser.add_argument(
        "--requests", type=positive, default=64, help="requests per concurrency level (default 64)"
    )
    parser.add_argument(
        "--max-batch-size", type=positive, default=32, help="batch cap in batched mode (default 32)"
    )
    parser.add_argument(
        "--rounds",
        type=positive,
        default=3,
        help="alternate the two modes this many times; medians are shown (default 3)",
    )
    report_argument(parser)

    def run(args: argparse.Namespace) -> int:
        from styleloop.catalog import configured_catalog

        return main(
            args.models_dir or DEFAULT_MODELS_DIR / "offline",
            configured_catalog(args.catalog),
            args.requests,
            args.results,
            args.max_batch_size,
            args.rounds,
        )

    parser.set_defaults(func=run)
