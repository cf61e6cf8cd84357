"""`styleloop ingest` against a real captioner, encoder and recommender on 127.0.0.1
(tiny preset): bad rows, idempotence, and a kill half-way followed by a resume."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from services.captioner.config import CaptionerSettings
from services.captioner.core import build_captioner
from services.captioner.servicer import SERVICE_NAME as CAPTIONER
from services.captioner.servicer import register as register_captioner
from services.recommender.config import RecommenderSettings
from styleloop.demo import write_demo_catalog
from styleloop.runtime.server import GrpcServer
from styleloop.v1 import recommender_pb2, recommender_pb2_grpc
from tests.conftest import ROOT, data_dir
from tests.unit.encoder.conftest import encoder_settings, start_encoder
from tests.unit.recommender.conftest import start_recommender

VALID = 200


@dataclass
class Services:
    recommender: str
    captioner: str
    stub: recommender_pb2_grpc.RecommenderServiceStub


@pytest.fixture
async def services(tiny_models: Path, tmp_path: Path) -> AsyncIterator[Services]:
    enc_server, encoder = await start_encoder(encoder_settings(tiny_models))
    rec_settings = RecommenderSettings(
        encoder_addr=f"127.0.0.1:{enc_server.port}",
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_port=-1,
        data_dir=tmp_path / "edge",
    )
    rec_server, servicer = await start_recommender(rec_settings)
    cap_settings = CaptionerSettings(
        models_dir=tiny_models, grpc_host="127.0.0.1", grpc_port=0, metrics_port=-1
    )
    captioner = build_captioner(cap_settings)
    cap_server = GrpcServer(cap_settings, register_captioner(captioner), [CAPTIONER])
    await cap_server.start()
    await captioner.start()
    await cap_server.set_ready()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{rec_server.port}") as channel:
            yield Services(
                f"127.0.0.1:{rec_server.port}",
                f"127.0.0.1:{cap_server.port}",
                recommender_pb2_grpc.RecommenderServiceStub(channel),
            )
    finally:
        for server in (cap_server, rec_server, enc_server):
            await server.stop(grace=0)
        await captioner.stop()
        await servicer.core.close()
        await encoder.stop()


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """200 valid items (a subset of the sample catalog when configured, else synthetic)
    and one bad row of every kind, at known row numbers."""
    folder = tmp_path / "catalog"
    folder.mkdir()
    sample = data_dir()
    rows = []
    if sample is not None:
        source = sample.resolve() / "fashion-product-images"
        with (source / "products.jsonl").open(encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                (folder / row["image"]).parent.mkdir(exist_ok=True)
                shutil.copyfile(source / row["image"], folder / row["image"])
                row["price"] = 19.99
                rows.append(row)
                if len(rows) == VALID:
                    break
    else:
        write_demo_catalog(folder / "demo", VALID)
        for line in (folder / "demo" / "products.jsonl").read_text().splitlines():
            row = json.loads(line)
            row["image"] = str(folder / "demo" / row["image"])
            rows.append(row)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    bad = [
        {"id": "bad-no-image", "title": "no image"},  # row 201
        {"id": "bad-missing-file", "image": "nowhere.jpg"},  # row 202
        {"id": "bad-price", "image": rows[0]["image"], "price": "cheap"},  # row 203
        {**rows[1], "title": "same id, other content"},  # row 204
        dict(rows[2]),  # row 205: an exact duplicate, skipped quietly
        {"id": "bad-corrupt", "image": "corrupt.jpg", "title": "corrupt"},  # row 206
        {"id": "bad-escape", "image": "../../../../etc/passwd"},  # row 207
    ]
    (folder / "products.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + bad))
    return folder


async def spawn(
    services: Services, catalog: Path, state: Path, *extra: str, output: int
) -> asyncio.subprocess.Process:
    """`styleloop ingest CATALOG` as a user runs it, against the test's services."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "styleloop.cli",
        "ingest",
        str(catalog),
        "--recommender",
        services.recommender,
        "--captioner",
        services.captioner,
        "--state",
        str(state),
        "--no-progress",
        *extra,
        cwd=ROOT,
        stdout=output,
        stderr=output,
    )


async def ingest(services: Services, catalog: Path, state: Path, *extra: str) -> dict:
    report = state.with_suffix(f".report{len(list(state.parent.glob('*.report*')))}.json")
    proc = await spawn(
        services, catalog, state, "--report", str(report), *extra, output=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, (out + err).decode()
    assert b"Traceback" not in err
    return json.loads(report.read_text())


async def all_item_ids(stub: recommender_pb2_grpc.RecommenderServiceStub) -> list[str]:
    ids, token = [], ""
    while True:
        page = await stub.ListItems(
            recommender_pb2.ListItemsRequest(page_size=100, page_token=token)
        )
        ids += [item.item_id for item in page.items]
        token = page.next_page_token
        if not token:
            return ids


async def test_ingest_reports_bad_rows_and_is_idempotent(
    services: Services, catalog: Path, tmp_path: Path
):
    state = tmp_path / "state.jsonl"
    first = await ingest(services, catalog, state, "--batch-size", "16")
    failed = {(f["row"], f["reason"]) for f in first["failed"]}
    assert failed == {
        (201, "MISSING_IMAGE"),
        (202, "IMAGE_NOT_FOUND"),
        (203, "BAD_PRICE"),
        (204, "DUPLICATE_ID"),
        (206, "IMAGE_UNREADABLE"),
        (207, "IMAGE_OUTSIDE_CATALOG"),
    }
    assert first["created"] == VALID and first["duplicates"] == 1
    assert first["captioned"] == VALID  # the sample rows give no caption
    ids = await all_item_ids(services.stub)
    assert len(ids) == len(set(ids)) == VALID
    stored = await services.stub.GetItem(recommender_pb2.GetItemRequest(item_id=ids[0]))
    assert stored.item.caption  # written by the captioner
    assert stored.item.attributes["master_category"]  # catalog columns kept as attributes

    again = await ingest(services, catalog, state)
    assert again["already_done"] == VALID and again["captioned"] == 0 and again["created"] == 0

    fresh = await ingest(services, catalog, state, "--fresh")
    assert fresh["unchanged"] == VALID and fresh["created"] == fresh["updated"] == 0
    assert len(await all_item_ids(services.stub)) == VALID


async def test_a_killed_ingest_resumes_without_duplicates_or_recaptioning(
    services: Services, catalog: Path, tmp_path: Path
):
    state = tmp_path / "state.jsonl"
    proc = await spawn(
        services,
        catalog,
        state,
        "--batch-size",
        "4",
        "--concurrency",
        "1",
        output=asyncio.subprocess.DEVNULL,
    )

    def stored_lines() -> int:
        if not state.is_file():
            return 0
        return sum('"stored"' in line for line in state.read_text().splitlines())

    for _ in range(600):  # at most 60 s
        if stored_lines() >= 40 or proc.returncode is not None:
            break
        await asyncio.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    await proc.wait()
    records = [json.loads(line) for line in state.read_text().splitlines() if line.strip()]
    stored_before = {r["id"] for r in records if r["stage"] == "stored"}
    captioned_before = {r["id"] for r in records if r["stage"] == "captioned"}
    assert 40 <= len(stored_before) < VALID, "the job was not killed half-way"

    resumed = await ingest(services, catalog, state)
    assert resumed["already_done"] == len(stored_before)
    assert resumed["captioned"] == VALID - len(captioned_before)  # nothing captioned twice
    assert resumed["created"] + resumed["unchanged"] + resumed["updated"] == VALID - len(
        stored_before
    )
    ids = await all_item_ids(services.stub)
    assert len(ids) == len(set(ids)) == VALID


async def test_large_photos_are_sent_in_batches_that_fit_the_message_limit(
    services: Services, tmp_path: Path
):
    """Six ~6 MB photos are over the services' 32 MiB message limit together; the batches
    are split by bytes, so all six are stored on the first run."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "large"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        noise = rng.integers(0, 256, size=(1400, 1400, 3), dtype=np.uint8)
        Image.fromarray(noise).save(folder / f"{i}.png", compress_level=0)
        rows.append({"id": f"large-{i}", "image": f"{i}.png", "title": f"large photo {i}"})
    assert sum((folder / f"{i}.png").stat().st_size for i in range(6)) > 32 * 1024 * 1024
    (folder / "products.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = await ingest(services, folder, tmp_path / "state.jsonl")
    assert report["failed"] == [] and report["created"] == 6, report


def test_dry_run_validates_without_services(catalog: Path, tmp_path: Path):
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "styleloop.cli", "ingest", str(catalog), "--dry-run",
         "--no-progress", "--recommender", "127.0.0.1:1", "--captioner", "127.0.0.1:1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "would ingest 200" in result.stdout and "IMAGE_UNREADABLE" in result.stdout
    assert "row 203 id bad-price: BAD_PRICE" in result.stdout
