"""`styleloop ingest CATALOG`: caption every product photo and upsert it to the recommender.

The recommender embeds image and caption through the encoder on upsert, so the vectors
always come from the model version of its collection. The job is:

* **idempotent**: ids are the catalog's; an unchanged item comes back UNCHANGED;
* **resumable**: a journal (JSON lines, flushed and fsynced per batch) records each
  caption as soon as it is written and each item once the recommender stored it; a
  re-run skips stored items and reuses captions, so a crash or Ctrl-C loses no finished
  work and nothing is captioned twice;
* **forgiving**: bad rows (no image, unreadable file, bad price, duplicate id with other
  content) and items the services refuse are reported with their row number, never
  fatal; only an unreachable service stops the job (run it again to resume).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import grpc
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from tqdm import tqdm

from styleloop.catalog import Catalog, CatalogRow, RowProblem
from styleloop.runtime.auth import aio_channel
from styleloop.runtime.errors import ItemFailure
from styleloop.runtime.inputs import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    InputLimits,
    decode_image,
)
from styleloop.runtime.server import status_reason
from styleloop.v1 import (
    captioner_pb2,
    captioner_pb2_grpc,
    common_pb2,
    recommender_pb2,
    recommender_pb2_grpc,
)
from styleloop.vocabulary import extract_attributes

OUTCOMES = {
    recommender_pb2.UPSERT_OUTCOME_CREATED: "created",
    recommender_pb2.UPSERT_OUTCOME_UPDATED: "updated",
    recommender_pb2.UPSERT_OUTCOME_UNCHANGED: "unchanged",
}
RETRIES = 3


class IngestSettings(BaseSettings):
    """Where the services are; command-line options override these."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    recommender_addr: str = "127.0.0.1:50052"
    captioner_addr: str = "127.0.0.1:50053"
    ingest_batch_size: int = Field(default=32, ge=1, le=256)
    ingest_batch_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="Image bytes per request at most (the services take 32 MiB messages).",
    )
    ingest_concurrency: int = Field(default=2, ge=1, le=16)
    ingest_timeout_s: float = Field(default=120.0, gt=0)
    service_token: SecretStr = Field(
        default=SecretStr(""), description="Shared token the services ask for (SERVICE_TOKEN)."
    )


def split_batches(rows: list[CatalogRow], most: int, most_bytes: int) -> list[list[CatalogRow]]:
    """Consecutive batches of at most ``most`` rows and ``most_bytes`` image bytes (a row
    larger than that alone is a batch of its own: the services judge it)."""
    batches: list[list[CatalogRow]] = []
    current: list[CatalogRow] = []
    size = 0
    for row in rows:
        row_bytes = row.image.stat().st_size
        if current and (len(current) == most or size + row_bytes > most_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(row)
        size += row_bytes
    if current:
        batches.append(current)
    return batches


class IngestAborted(RuntimeError):
    """A service stayed unreachable; finished work is kept in the journal."""


@dataclass
class Report:
    catalog: str
    layout: str
    rows: int
    valid: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    already_done: int = 0
    duplicates: int = 0
    captioned: int = 0
    captions_reused: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    outfits: int = 0
    dry_run: bool = False
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def ingested(self) -> int:
        return self.created + self.updated + self.unchanged

    def fail(self, row: int, item_id: str, reason: str, message: str) -> None:
        self.failed.append({"row": row, "id": item_id, "reason": reason, "message": message})

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ingested": self.ingested}


def default_state_path(catalog: Catalog) -> Path:
    """One journal per catalog source, under ``.styleloop/ingest`` of the working folder."""
    key = hashlib.sha256(str(catalog.source.resolve()).encode()).hexdigest()[:12]
    return Path(".styleloop") / "ingest" / f"{key}.jsonl"


class Journal:
    """Append-only JSON lines: ``captioned`` and ``stored`` records per item and digest."""

    def __init__(self, path: Path, fresh: bool = False) -> None:
        self.path = path
        self.captions: dict[str, dict[str, Any]] = {}
        self.stored: dict[str, str] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            path.unlink(missing_ok=True)
        if path.is_file():
            with path.open(encoding="utf-8") as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by a crash
                    if record.get("stage") == "captioned":
                        self.captions[record["id"]] = record
                    elif record.get("stage") == "stored":
                        self.stored[record["id"]] = record["digest"]
        self._handle: TextIO = path.open("a", encoding="utf-8")

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        if not records:
            return
        self._handle.write("".join(json.dumps(r) + "\n" for r in records))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def _item_proto(item: dict[str, Any], caption: str, extra: dict[str, str]) -> common_pb2.Item:
    """The catalog's fields win; the caption's attributes fill what the catalog left out."""
    fields = {k: v for k, v in item.items() if k != "attributes"}
    attributes = dict(item["attributes"])
    for name, value in extra.items():
        if name in ("category", "colour", "article_type", "usage") and not fields.get(name):
            fields[name] = value
        elif name not in fields:
            attributes.setdefault(name, value)
    fields["caption"] = caption
    return common_pb2.Item(**fields, attributes=attributes)


class Ingestor:
    def __init__(
        self,
        catalog: Catalog,
        settings: IngestSettings,
        journal: Journal,
        report: Report,
        bar: tqdm,  # type: ignore[type-arg]
    ) -> None:
        self.catalog, self.settings, self.journal, self.report, self.bar = (
            catalog,
            settings,
            journal,
            report,
            bar,
        )
        token = settings.service_token.get_secret_value()
        self.captioner_channel = aio_channel(settings.captioner_addr, token)
        self.recommender_channel = aio_channel(settings.recommender_addr, token)
        self.captioner = captioner_pb2_grpc.CaptionerServiceStub(self.captioner_channel)
        self.recommender = recommender_pb2_grpc.RecommenderServiceStub(self.recommender_channel)

    async def close(self) -> None:
        await self.captioner_channel.close()
        await self.recommender_channel.close()

    async def _call(self, what: str, method: Any, request: Any) -> Any:
        """Retry what a restart or overload explains; anything else is the caller's."""
        for attempt in range(RETRIES):
            try:
                return await method(request, timeout=self.settings.ingest_timeout_s)
            except grpc.aio.AioRpcError as exc:
                # RESOURCE_EXHAUSTED is an overload (a full queue, with the service's own
                # reason) or a message over the size limit (none): only the first passes.
                transient = exc.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ) or (exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and status_reason(exc))
                if not transient:
                    raise
                if attempt == RETRIES - 1:
                    raise IngestAborted(
                        f"the {what} stayed unavailable ({exc.code().name}: {exc.details()}); "
                        "finished items are kept — run the same command again to resume"
                    ) from None
                await asyncio.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    async def _captions(
        self, rows: list[CatalogRow], images: list[bytes]
    ) -> list[tuple[str, dict[str, str]] | ItemFailure]:
        results: list[tuple[str, dict[str, str]] | ItemFailure | None] = [None] * len(rows)
        need = []
        for i, row in enumerate(rows):
            given = row.item["caption"]
            cached = self.journal.captions.get(row.item["item_id"])
            if given:
                results[i] = (given, extract_attributes(given))
            elif cached and cached["digest"] == row.digest:
                results[i] = (cached["caption"], cached["attributes"])
                self.report.captions_reused += 1
            else:
                need.append(i)
        if need:
            response = await self._call(
                "captioner",
                self.captioner.CaptionImages,
                captioner_pb2.CaptionImagesRequest(images=[images[i] for i in need]),
            )
            records = []
            for i, result in zip(need, response.results, strict=True):
                if result.WhichOneof("result") == "error":
                    results[i] = ItemFailure(result.error.reason, result.error.message)
                    continue
                caption = result.caption
                attributes = {a.name: a.value for a in caption.attributes}
                for name, value in extract_attributes(caption.text).items():
                    attributes.setdefault(name, value)
                results[i] = (caption.text, attributes)
                records.append(
                    {
                        "stage": "captioned",
                        "id": rows[i].item["item_id"],
                        "digest": rows[i].digest,
                        "caption": caption.text,
                        "attributes": attributes,
                    }
                )
            self.journal.write(records)
            self.report.captioned += len(records)
        return [r for r in results if r is not None]

    async def batch(self, rows: list[CatalogRow]) -> None:
        images = [row.image.read_bytes() for row in rows]
        try:
            captions = await self._captions(rows, images)
        except grpc.aio.AioRpcError as exc:  # the whole request refused
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and len(rows) > 1:
                half = len(rows) // 2
                await self.batch(rows[:half])
                await self.batch(rows[half:])
                return
            for row in rows:
                self.report.fail(
                    row.row, row.item["item_id"], status_reason(exc) or exc.code().name,
                    str(exc.details()),
                )  # fmt: skip
            self.bar.update(len(rows))
            return
        upserts, kept = [], []
        for row, image, caption in zip(rows, images, captions, strict=True):
            if isinstance(caption, ItemFailure):
                self.report.fail(row.row, row.item["item_id"], caption.reason, caption.message)
                continue
            text, attributes = caption
            upserts.append(
                recommender_pb2.UpsertItem(
                    item=_item_proto(row.item, text, attributes), image=image
                )
            )
            kept.append(row)
        if upserts:
            try:
                response = await self._call(
                    "recommender",
                    self.recommender.UpsertItems,
                    recommender_pb2.UpsertItemsRequest(items=upserts),
                )
            except grpc.aio.AioRpcError as exc:  # the whole batch refused
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and len(rows) > 1:
                    half = len(rows) // 2  # too large after all: each half on its own
                    await self.batch(rows[:half])
                    await self.batch(rows[half:])
                    return
                for row in kept:
                    self.report.fail(
                        row.row,
                        row.item["item_id"],
                        status_reason(exc) or exc.code().name,
                        str(exc.details()),
                    )
            else:
                stored = []
                for row, result in zip(kept, response.results, strict=True):
                    outcome = OUTCOMES.get(result.outcome)
                    if outcome is None:
                        self.report.fail(
                            row.row, row.item["item_id"], result.error.reason, result.error.message
                        )
                        continue
                    setattr(self.report, outcome, getattr(self.report, outcome) + 1)
                    stored.append(
                        {"stage": "stored", "id": row.item["item_id"], "digest": row.digest}
                    )
                self.journal.write(stored)
        self.bar.update(len(rows))

    async def run(self, rows: list[CatalogRow]) -> None:
        batches = split_batches(
            rows, self.settings.ingest_batch_size, self.settings.ingest_batch_bytes
        )
        queue: asyncio.Queue[list[CatalogRow]] = asyncio.Queue()
        for batch in batches:
            queue.put_nowait(batch)

        async def worker() -> None:
            while not queue.empty():
                await self.batch(queue.get_nowait())

        workers = [asyncio.create_task(worker()) for _ in range(self.settings.ingest_concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)


def dry_run(catalog: Catalog, report: Report, progress: bool) -> None:
    """Decode every image with the services' own limits; write nothing."""
    limits = InputLimits(DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS, 0)
    for row in tqdm(catalog.rows, desc="validate", unit="item", disable=not progress):
        decoded = decode_image(row.image.read_bytes(), limits)
        if isinstance(decoded, ItemFailure):
            report.fail(row.row, row.item["item_id"], decoded.reason, decoded.message)
        else:
            report.created += 1  # would be written


def ingest(
    catalog: Catalog,
    settings: IngestSettings,
    *,
    state: Path | None = None,
    fresh: bool = False,
    dry: bool = False,
    limit: int = 0,
    progress: bool = True,
) -> Report:
    """Run the job; returns the report (also on Ctrl-C, with ``interrupted`` set)."""
    started = time.perf_counter()
    rows = catalog.rows[:limit] if limit else catalog.rows
    report = Report(
        catalog=str(catalog.source),
        layout=catalog.layout,
        rows=len(rows) + len(catalog.problems) + catalog.duplicates,
        valid=len(rows),
        duplicates=catalog.duplicates,
        outfits=len(catalog.outfits),
        dry_run=dry,
    )
    for problem in catalog.problems:
        report.fail(problem.row, problem.item_id, problem.reason, problem.message)
    if dry:
        dry_run(catalog, report, progress)
        report.seconds = round(time.perf_counter() - started, 2)
        return report
    journal = Journal(state or default_state_path(catalog), fresh)
    todo = [r for r in rows if journal.stored.get(r.item["item_id"]) != r.digest]
    report.already_done = len(rows) - len(todo)
    bar = tqdm(total=len(todo), desc="ingest", unit="item", disable=not progress, smoothing=0.1)

    async def main() -> None:
        ingestor = Ingestor(catalog, settings, journal, report, bar)  # channels on this loop
        try:
            await ingestor.run(todo)
        finally:
            await ingestor.close()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        bar.close()
        journal.close()
        report.seconds = round(time.perf_counter() - started, 2)
    return report


def problems_by_reason(failed: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in failed:
        counts[entry["reason"]] = counts.get(entry["reason"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


__all__ = ["IngestAborted", "IngestSettings", "Report", "RowProblem", "ingest"]
