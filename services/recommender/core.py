"""The recommender's domain logic, free of gRPC.

Items are dicts with the fields of ``styleloop.v1.Item`` (times as Unix seconds); the
servicer converts. Every list is paginated with an opaque token and filtered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import heapq
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from services.recommender.clients.encoder import EncoderClient, EncoderModel
from services.recommender.config import RecommenderSettings
from services.recommender.outfits import exact_top, load_scorer, slot_of
from services.recommender.store import (
    ClientStore,
    EdgeStore,
    Filters,
    Stored,
    VectorStore,
    scan_all,
)
from styleloop.catalog import inside
from styleloop.runtime.errors import FailedPrecondition, InvalidArgument, ItemFailure, NotFound
from styleloop.runtime.inputs import DEFAULT_MAX_IMAGE_BYTES, check_item_count

log = logging.getLogger(__name__)

RESULTS = Histogram(
    "recommender_results_returned",
    "Items returned by one list RPC.",
    ["rpc"],
    buckets=(0, 1, 5, 10, 20, 50, 100),
)
STORE_LATENCY = Histogram(
    "recommender_store_seconds",
    "Latency of vector store calls, in seconds.",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
COLLECTION_SIZE = Gauge("recommender_collection_items", "Items in the active collection.")
OUTFITS = Counter(
    "recommender_outfit_completions_total",
    "CompleteOutfit calls by how they were ranked (trained scorer or vector_sum fallback).",
    ["method"],
)
VECTOR_SUM = "vector_sum"

ITEM_FIELDS = (
    "item_id",
    "title",
    "description",
    "brand",
    "category",
    "article_type",
    "colour",
    "season",
    "usage",
    "gender",
    "price",
    "currency_code",
    "in_stock",
    "image_uri",
    "caption",
    "attributes",
    "year",
)
# Values counted per facet when all are asked for (the sample has 223 brands).
FACET_ALL_LIMIT = 10_000
# What GetFacets counts by default, in this order.
FACET_FIELDS = ("brand", "article_type", "category", "colour", "gender", "usage", "season", "year")
KINDS = ("impression", "click", "like", "reject", "purchase")


@dataclass
class UpsertInput:
    item: dict[str, Any]
    image: bytes = b""
    image_vector: list[float] = field(default_factory=list)
    caption_vector: list[float] = field(default_factory=list)
    model_version: str = ""


@dataclass
class ReindexReport:
    source: str
    items_moved: int = 0
    users_moved: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


def resolve_image(uri: str, root: Path | None) -> Path | None:
    """The local file of an item's ``image_uri``, relative to ``root`` (IMAGE_ROOT); a
    path that leads out of ``root`` (``../``, an absolute path elsewhere, a link) is none."""
    if not uri or "://" in uri or root is None:
        return None
    path = root / uri
    return path if inside(path, root) and path.is_file() else None


def media_type(data: bytes) -> str:
    """A photo's media type from its first bytes (what HTTP clients need to show it)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


@dataclass
class Page:
    items: list[tuple[dict[str, Any], float]]
    next_token: str
    # Per item, the query's cosine similarity to it (see ``ScoredItem.similarity``);
    # empty where a page has no single query vector.
    similarity: list[float] = field(default_factory=list)
    # How the page was ranked, where there is a choice (CompleteOutfit), and why the
    # preferred way was not used.
    method: str = ""
    fallback_reason: str = ""


def collection_name(prefix: str, model: EncoderModel) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", model.model_id.lower()).strip("-")
    return f"{prefix}-{slug}-{model.model_version}"


def content_hash(item: dict[str, Any], image_digest: str) -> str:
    body = json.dumps({k: item.get(k) for k in ITEM_FIELDS}, sort_keys=True, default=str)
    return hashlib.sha256((body + image_digest).encode()).hexdigest()


class Paging:
    """Page sizes and opaque page tokens. Ranked lists page by offset; ``ListItems`` pages
    by the store's own cursor, so no page re-reads the ones before it. A token names its
    kind, so one RPC's token is refused by another."""

    def __init__(self, default: int, maximum: int) -> None:
        self.default, self.maximum = default, maximum

    def size(self, page_size: int) -> int:
        if page_size < 0:
            raise InvalidArgument(
                f"page_size must not be negative (got {page_size})", reason="BAD_PAGE_SIZE"
            )
        if page_size > self.maximum:
            raise InvalidArgument(
                f"page_size {page_size} is over the maximum {self.maximum}", reason="BAD_PAGE_SIZE"
            )
        return page_size or self.default

    @staticmethod
    def _decode(token: str, kind: str) -> str:
        try:
            found, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            found, value = "", ""
        if found != kind or not value:
            raise InvalidArgument(
                "page_token is not one this service issued for this call",
                reason="BAD_PAGE_TOKEN",
            )
        return value

    @staticmethod
    def _encode(kind: str, value: object) -> str:
        return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode()

    def parse(self, page_size: int, token: str) -> tuple[int, int]:
        """(limit, offset) of a ranked list."""
        limit = self.size(page_size)
        if not token:
            return limit, 0
        raw = self._decode(token, "o")
        if not raw.isdigit():
            raise InvalidArgument(
                "page_token is not one this service issued for this call", reason="BAD_PAGE_TOKEN"
            )
        return limit, int(raw)

    def parse_cursor(self, page_size: int, token: str) -> tuple[int, str | None]:
        """(limit, cursor) of a catalog listing."""
        return self.size(page_size), self._decode(token, "c") if token else None

    def token(self, offset: int) -> str:
        return self._encode("o", offset)

    def cursor_token(self, cursor: str | None) -> str:
        return self._encode("c", cursor) if cursor else ""


def check_filters(filters: Filters) -> Filters:
    for bound in (filters.min_price, filters.max_price):
        if bound is not None and (bound < 0 or not np.isfinite(bound)):
            raise InvalidArgument(
                f"price bounds must be finite and not negative (got {bound})", reason="BAD_FILTER"
            )
    if (
        filters.min_price is not None
        and filters.max_price is not None
        and filters.min_price > filters.max_price
    ):
        raise InvalidArgument(
            f"min_price {filters.min_price} is above max_price {filters.max_price}",
            reason="BAD_FILTER",
        )
    return filters


def _unit_rows(vectors: Sequence[Sequence[float]], dimension: int) -> np.ndarray:
    rows = np.asarray(vectors, np.float32).reshape(len(vectors), dimension)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0, 1.0, norms)


@dataclass
class Personal:
    """What personalises one query: the filters with the shopper's exclusions, and the
    image vectors of their rejections and likes."""

    filters: Filters
    rejected: list[Sequence[float]]
    liked: list[Sequence[float]]


def not_near_duplicates(
    candidates: list[Stored], negatives: Sequence[Sequence[float]], threshold: float
) -> list[Stored]:
    """The candidates whose image vector has cosine below ``threshold`` with every
    negative: one matrix product, not a Python loop over candidates x negatives."""
    if not negatives or not candidates:
        return candidates
    dimension = len(negatives[0])
    has = [len(c.vectors.get("image", ())) == dimension for c in candidates]
    with_vectors = [c.vectors["image"] for c, h in zip(candidates, has, strict=True) if h]
    if not with_vectors:
        return candidates
    similarity = _unit_rows(with_vectors, dimension) @ _unit_rows(negatives, dimension).T
    close = iter(similarity.max(axis=1) >= threshold)
    return [c for c, h in zip(candidates, has, strict=True) if not (h and next(close))]


def newest(times: dict[str, float], count: int) -> list[str]:
    """The ``count`` ids with the latest times, newest first."""
    return [i for i, _ in heapq.nlargest(count, times.items(), key=lambda kv: kv[1])]


class Recommender:
    def __init__(
        self,
        settings: RecommenderSettings,
        encoder: EncoderClient,
        model: EncoderModel,
        items: VectorStore,
        users: VectorStore,
    ) -> None:
        self.settings = settings
        self.encoder = encoder
        self.model = model
        self.items = items
        self.users = users
        self.paging = Paging(settings.default_page_size, settings.max_page_size)
        self._closed = False
        COLLECTION_SIZE.set(items.count())
        self.outfit_scorer, self.outfit_scorer_missing = load_scorer(
            settings.outfit_scorer_dir, model.model_version
        )
        self.outfit_tower: Any = None  # styleloop.outfit_tower.TowerEmbedder
        self.outfit_tower_lambda = 0.0
        self._tower_vectors: dict[str, np.ndarray] = {}
        if self.outfit_scorer is not None:
            self._load_outfit_tower(settings.outfit_scorer_dir)
            log.info(
                "outfits ranked by the trained scorer",
                extra={
                    "scorer": self.outfit_scorer.scorer_id,
                    "tower_lambda": self.outfit_tower_lambda if self.outfit_tower else None,
                },
            )
        else:
            log.warning(
                "outfits ranked by summed image-vector similarity (fallback)",
                extra={"reason": self.outfit_scorer_missing},
            )

    def _load_outfit_tower(self, folder: Path | None) -> None:
        """The scorer's fine-tuned text tower (``styleloop train outfits``), summed with it
        by its ``lambda``; without one (or unreadable: logged) the scorer ranks alone."""
        assert self.outfit_scorer is not None
        lam = (self.outfit_scorer.meta.get("tower") or {}).get("lambda")
        if folder is None or lam is None:
            return
        from services.recommender.outfits import TowerEmbedder

        try:
            self.outfit_tower = TowerEmbedder(folder / "tower")
        except Exception as exc:  # noqa: BLE001 - a missing or broken tower: the scorer alone
            log.warning(
                "outfit tower not loaded; the scorer ranks alone", extra={"reason": str(exc)}
            )
            return
        self.outfit_tower_lambda = float(lam)

    def _tower(self, titles: list[str]) -> np.ndarray:
        """The outfit tower's vectors of ``titles`` (cached by title)."""
        assert self.outfit_tower is not None
        missing = sorted({t for t in titles if t not in self._tower_vectors})
        if missing:
            for title, vector in zip(missing, self.outfit_tower(missing), strict=True):
                self._tower_vectors[title] = vector
        return np.stack([self._tower_vectors[t] for t in titles])

    async def close(self) -> None:
        """Flush and release the stores and the encoder channel; safe to call again."""
        if self._closed:
            return
        self._closed = True
        self.items.close()
        self.users.close()
        await self.encoder.close()

    async def reindex_from(
        self, source: str, old_items: VectorStore, old_users: VectorStore
    ) -> ReindexReport:
        """Move a catalog embedded by an earlier model into this model's collection: every
        item is re-embedded from its image (``image_uri``) and caption; user state (item ids)
        is carried over as it is. Items whose image cannot be read are reported; the old
        collection is left untouched."""
        report = ReindexReport(source)
        for page in scan_all(old_items, self.settings.max_upsert_items):
            inputs = []
            for row in page:
                item = {k: v for k, v in row.payload.items() if k in ITEM_FIELDS}
                path = resolve_image(str(item.get("image_uri") or ""), self.settings.image_root)
                if path is None:
                    report.failures.append((row.key, "IMAGE_NOT_FOUND"))
                    continue
                if path.stat().st_size > DEFAULT_MAX_IMAGE_BYTES:  # never read whole
                    report.failures.append((row.key, "IMAGE_TOO_LARGE"))
                    continue
                inputs.append(UpsertInput(item=item, image=path.read_bytes()))
            if inputs:
                for item_id, _outcome, failure in await self.upsert(inputs):
                    if failure is not None:
                        report.failures.append((item_id, failure.reason))
                    else:
                        report.items_moved += 1
        for page in scan_all(old_users, 256):
            self.users.upsert(page)
            report.users_moved += len(page)
        return report

    # ------------------------------------------------------------------ helpers

    def _timed(self, operation: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        with STORE_LATENCY.labels(operation).time():
            return fn(*args, **kwargs)  # type: ignore[no-any-return]

    def _page(
        self,
        rpc: str,
        results: list[Stored],
        limit: int,
        offset: int,
        query: tuple[Sequence[float], Sequence[str]] | None = None,
    ) -> Page:
        """``results`` holds up to limit + 1 rows: one more says another page exists.
        With ``query`` (a vector and the item vectors it is compared with), each row's
        cosine similarity to it, the largest over those vectors."""
        more = len(results) > limit
        rows = results[:limit]
        RESULTS.labels(rpc).observe(len(rows))
        token = self.paging.token(offset + limit) if more else ""
        page = Page([(self._item(r.payload), r.score) for r in rows], token)
        if query is not None and rows:
            page.similarity = self._similarity(rows, *query)
        return page

    def _similarity(
        self, rows: list[Stored], vector: Sequence[float], names: Sequence[str]
    ) -> list[float]:
        known = self._timed("retrieve", self.items.get, [r.key for r in rows], True)
        vectors = {s.key: s.vectors for s in known}
        unit = _unit_rows([vector], len(vector))[0]
        out = []
        for row in rows:
            mine = [vectors.get(row.key, {}).get(n) for n in names]
            present = [v for v in mine if v and len(v) == len(unit)]
            out.append(float((_unit_rows(present, len(unit)) @ unit).max()) if present else 0.0)
        return out

    @staticmethod
    def _item(payload: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in payload.items() if k != "key"}

    def _check_vector(self, vector: Sequence[float], want: int, what: str, item_id: str) -> None:
        if len(vector) != want:
            raise InvalidArgument(
                f"item {item_id!r}: {what} has {len(vector)} dimensions; the encoder model "
                f"{self.model.model_id} v{self.model.model_version} gives {want}",
                reason="VECTOR_DIMENSION_MISMATCH",
            )
        # Cosine of a NaN, infinite or all-zero vector is NaN, which would poison rankings.
        values = np.asarray(vector, dtype=np.float64)
        if not np.isfinite(values).all() or not values.any():
            raise InvalidArgument(
                f"item {item_id!r}: {what} must be finite and not all zero",
                reason="BAD_VECTOR",
            )

    def _vectors_of(self, item_ids: Sequence[str], what: str) -> list[Stored]:
        found: list[Stored] = self._timed("retrieve", self.items.get, list(item_ids), True)
        missing = sorted(set(item_ids) - {s.key for s in found})
        if missing:
            raise NotFound(
                f"no {what} with id {', '.join(map(repr, missing))}",
                reason="ITEM_NOT_FOUND",
                metadata={"item_id": missing[0]},
            )
        return found

    # ------------------------------------------------------------------ catalog

    async def upsert(self, inputs: list[UpsertInput]) -> list[tuple[str, str, ItemFailure | None]]:
        """Returns (item_id, outcome, failure) per input: created, updated, unchanged, failed."""
        check_item_count(len(inputs), self.settings.max_upsert_items, "items")
        seen: set[str] = set()
        for entry in inputs:  # validate everything before writing anything
            item_id = str(entry.item.get("item_id", "")).strip()
            if not item_id:
                raise InvalidArgument("every item needs an item_id", reason="MISSING_ITEM_ID")
            if item_id in seen:
                raise InvalidArgument(f"item {item_id!r} appears twice", reason="DUPLICATE_ITEM_ID")
            seen.add(item_id)
            price = float(entry.item.get("price") or 0.0)
            if price < 0 or not np.isfinite(price):
                raise InvalidArgument(f"item {item_id!r}: bad price {price}", reason="BAD_PRICE")
            if entry.image_vector or entry.caption_vector:
                if entry.model_version != self.model.model_version:
                    raise InvalidArgument(
                        f"item {item_id!r}: vectors of model version "
                        f"{entry.model_version or '(none)'} cannot join the collection of "
                        f"{self.model.model_version}",
                        reason="MODEL_VERSION_MISMATCH",
                    )
                self._check_vector(
                    entry.image_vector, self.model.image_dimension, "image_embedding", item_id
                )
                if entry.caption_vector:
                    self._check_vector(
                        entry.caption_vector,
                        self.model.text_dimension,
                        "caption_embedding",
                        item_id,
                    )
            elif not entry.image:
                raise InvalidArgument(
                    f"item {item_id!r} has neither an image nor an image_embedding",
                    reason="MISSING_IMAGE",
                )

        need_image = [i for i, e in enumerate(inputs) if not e.image_vector]
        image_vectors: dict[int, list[float] | ItemFailure] = {}
        if need_image:
            embedded = await self.encoder.embed_images([inputs[i].image for i in need_image])
            image_vectors = dict(zip(need_image, embedded, strict=True))
        need_caption = [i for i, e in enumerate(inputs) if not e.caption_vector]
        caption_vectors: dict[int, list[float] | ItemFailure] = {}
        if need_caption:
            texts = [
                str(
                    inputs[i].item.get("caption")
                    or inputs[i].item.get("title")
                    or inputs[i].item["item_id"]
                )
                for i in need_caption
            ]
            caption_vectors = dict(
                zip(need_caption, await self.encoder.embed_texts(texts), strict=True)
            )

        existing = {
            s.key: s
            for s in self._timed(
                "retrieve", self.items.get, [str(e.item["item_id"]) for e in inputs]
            )
        }
        now = time.time()
        writes: list[Stored] = []
        results: list[tuple[str, str, ItemFailure | None]] = []
        for i, entry in enumerate(inputs):
            item_id = str(entry.item["item_id"]).strip()
            image_vector = entry.image_vector or image_vectors[i]
            caption_vector = entry.caption_vector or caption_vectors.get(i, [])
            failure = next(
                (v for v in (image_vector, caption_vector) if isinstance(v, ItemFailure)), None
            )
            if failure is not None:
                results.append((item_id, "failed", failure))
                continue
            assert not isinstance(image_vector, ItemFailure)
            assert not isinstance(caption_vector, ItemFailure)
            digest = hashlib.sha256(
                entry.image or np.asarray(image_vector, np.float32).tobytes()
            ).hexdigest()
            item = {k: entry.item.get(k) for k in ITEM_FIELDS if k in entry.item}
            item["item_id"] = item_id
            item_hash = content_hash(item, digest)
            old = existing.get(item_id)
            if old is not None and old.payload.get("content_hash") == item_hash:
                results.append((item_id, "unchanged", None))
                continue
            payload = {
                **item,
                "content_hash": item_hash,
                "create_time": old.payload.get("create_time", now) if old else now,
                "update_time": now,
            }
            writes.append(
                Stored(item_id, payload, {"image": image_vector, "caption": caption_vector})
            )
            results.append((item_id, "updated" if old else "created", None))
        if writes:
            self._timed("upsert", self.items.upsert, writes)
            COLLECTION_SIZE.set(self.items.count())
        return results

    def delete(self, item_ids: list[str]) -> tuple[list[str], list[str]]:
        if not item_ids:
            raise InvalidArgument("no item ids given", reason="NO_ITEMS")
        present = {s.key for s in self._timed("retrieve", self.items.get, item_ids)}
        deleted = [i for i in item_ids if i in present]
        if deleted:
            self._timed("delete", self.items.delete, deleted)
            COLLECTION_SIZE.set(self.items.count())
        return deleted, [i for i in item_ids if i not in present]

    def get(self, item_id: str) -> dict[str, Any]:
        return self._item(self._vectors_of([item_id], "item")[0].payload)

    def item_image(self, item_id: str) -> tuple[bytes, str, str]:
        """The item's photo file under IMAGE_ROOT: (bytes, media type, etag)."""
        item = self.get(item_id)
        path = resolve_image(str(item.get("image_uri") or ""), self.settings.image_root)
        if path is None or path.stat().st_size > DEFAULT_MAX_IMAGE_BYTES:
            raise NotFound(f"item {item_id!r} has no photo to serve", reason="IMAGE_NOT_FOUND")
        data = path.read_bytes()
        return data, media_type(data), hashlib.sha256(data).hexdigest()[:32]

    def list_items(self, filters: Filters, page_size: int, token: str) -> Page:
        limit, cursor = self.paging.parse_cursor(page_size, token)
        rows, following = self._timed(
            "scroll", self.items.page, check_filters(filters), limit, cursor
        )
        RESULTS.labels("ListItems").observe(len(rows))
        return Page(
            [(self._item(r.payload), r.score) for r in rows], self.paging.cursor_token(following)
        )

    # ------------------------------------------------------------------ search

    async def _embed_one(self, kind: str, value: Any) -> list[float]:
        call = self.encoder.embed_images if kind == "image" else self.encoder.embed_texts
        result = (await call([value]))[0]
        if isinstance(result, ItemFailure):
            raise InvalidArgument(result.message, reason=result.reason)
        return result

    def _personal(self, user_id: str, filters: Filters) -> Personal:
        """A shopper's exclusions (rejected and bought items) added to ``filters``, with the
        vectors of their newest rejections (near-duplicates are dropped) and likes."""
        if not user_id or not self.settings.personalise:
            return Personal(filters, [], [])
        state = self._user(user_id)
        most = self.settings.max_query_examples
        filters.excluded_ids = list(
            dict.fromkeys([*filters.excluded_ids, *state["reject"], *state["purchase"]])
        )
        rejected, liked = list(state["reject"]), newest(state["like"], most)
        known = self._timed("retrieve", self.items.get, list({*rejected, *liked}), True)
        vectors = {s.key: s.vectors["image"] for s in known}
        return Personal(
            filters,
            [vectors[i] for i in rejected if i in vectors],
            [vectors[i] for i in liked if i in vectors],
        )

    def _ranked(
        self,
        personal: Personal,
        query: Callable[[int, int], list[Stored]],
        limit: int,
        offset: int,
    ) -> list[Stored]:
        """``query(limit, offset)``'s rows for this page, near-duplicates of the shopper's
        rejections removed (a deeper head is ranked, then the page cut from it)."""
        if not personal.rejected:
            return query(limit + 1, offset)
        head = query((offset + limit + 1) * 2 + 10, 0)
        known = self._timed("retrieve", self.items.get, [r.key for r in head], True)
        vectors = {s.key: s.vectors for s in known}
        with_vectors = [Stored(r.key, r.payload, vectors.get(r.key, {}), r.score) for r in head]
        kept = not_near_duplicates(
            with_vectors, personal.rejected, self.settings.near_duplicate_threshold
        )
        return kept[offset : offset + limit + 1]

    async def search_by_image(
        self, image: bytes, filters: Filters, size: int, token: str, user_id: str = ""
    ) -> Page:
        limit, offset = self.paging.parse(size, token)
        if not image:
            raise InvalidArgument("the image is empty", reason="IMAGE_EMPTY")
        vector = await self._embed_one("image", image)
        personal = self._personal(user_id, check_filters(filters))
        rows = self._nearest(personal, "image", vector, filters, limit, offset)
        return self._page("SearchByImage", rows, limit, offset, (vector, ("image",)))

    async def search_by_text(
        self, query: str, filters: Filters, size: int, token: str, user_id: str = ""
    ) -> Page:
        limit, offset = self.paging.parse(size, token)
        if not query.strip():
            raise InvalidArgument("the query is empty", reason="TEXT_EMPTY")
        vector = await self._embed_one("text", query)
        personal = self._personal(user_id, check_filters(filters))
        if self.model.shared_space:
            # Text against image vectors and against caption vectors, fused by RRF (with a
            # third ranking, closeness to the shopper's likes, when they have any). RRF
            # scores tie often (3rd + 5th = 5th + 3rd), and the engine orders ties as it
            # likes, so every page ranks the whole head itself, ties broken by id: pages
            # then never repeat or skip an item.
            rankings: list[tuple[str, Sequence[float]]] = [("image", vector), ("caption", vector)]
            if personal.liked:
                liked = np.mean(_unit_rows(personal.liked, len(personal.liked[0])), axis=0)
                rankings.append(("image", liked.tolist()))

            def fused(n: int, o: int) -> list[Stored]:
                head = self._timed(
                    "query",
                    self.items.fused,
                    rankings,
                    filters,
                    o + n,
                    0,
                    max(self.settings.fusion_depth, o + n),
                )
                return sorted(head, key=lambda r: (-r.score, r.key))[o : o + n]

            rows = self._ranked(personal, fused, limit, offset)
        else:
            rows = self._nearest(personal, "caption", vector, filters, limit, offset)
        compared = ("image", "caption") if self.model.shared_space else ("caption",)
        return self._page("SearchByText", rows, limit, offset, (vector, compared))

    def similar(
        self, item_id: str, filters: Filters, size: int, token: str, user_id: str = ""
    ) -> Page:
        limit, offset = self.paging.parse(size, token)
        source = self._vectors_of([item_id], "item")[0]
        filters = check_filters(filters)
        filters.excluded_ids = [*filters.excluded_ids, item_id]
        personal = self._personal(user_id, filters)
        vector = source.vectors["image"]
        rows = self._nearest(personal, "image", vector, filters, limit, offset)
        return self._page("GetSimilarItems", rows, limit, offset, (vector, ("image",)))

    def complete_outfit(
        self,
        item_ids: list[str],
        wanted: str,
        filters: Filters,
        size: int,
        token: str,
        user_id: str = "",
    ) -> Page:
        """Candidates of ``wanted`` that go with the whole outfit, best first: ranked by the
        trained compatibility scorer when one serves this model (every item of the category
        scored by one nearest-vector query for its query vector, see
        :mod:`services.recommender.outfits`), else by the sum of their image-vector
        similarity to every piece (Qdrant's sum-scores recommend); the page says which."""
        limit, offset = self.paging.parse(size, token)
        if not item_ids:
            raise InvalidArgument("an outfit needs at least one item", reason="NO_ITEMS")
        if not wanted.strip():
            raise InvalidArgument("wanted_category is empty", reason="BAD_FILTER")
        outfit = self._vectors_of(item_ids, "outfit item")
        filters = check_filters(filters)
        filters.keywords = {**filters.keywords, "category": [wanted]}
        filters.excluded_ids = [*filters.excluded_ids, *item_ids]
        personal = self._personal(user_id, filters)
        query, why_not = self._outfit_query(outfit, wanted)
        if query is not None:
            assert self.outfit_scorer is not None
            method = self.outfit_scorer.method
            tower_query = self._outfit_tower_query(outfit)
            rows = self._ranked(
                personal,
                lambda n, o: self._outfit_top(query, filters, n, o, tower_query),
                limit,
                offset,
            )
        else:
            method = VECTOR_SUM
            outfit_vectors = [s.vectors["image"] for s in outfit]
            rows = self._ranked(
                personal,
                lambda n, o: self._timed(
                    "query",
                    self.items.recommend,
                    "image",
                    outfit_vectors,
                    [],
                    filters,
                    n,
                    o,
                    "sum_scores",
                ),
                limit,
                offset,
            )
        OUTFITS.labels("trained" if query is not None else VECTOR_SUM).inc()
        page = self._page("CompleteOutfit", rows, limit, offset)
        page.method, page.fallback_reason = method, why_not
        return page

    def _nearest(
        self,
        personal: Personal,
        using: str,
        vector: list[float],
        filters: Filters,
        limit: int,
        offset: int,
    ) -> list[Stored]:
        """A page of the items nearest ``vector`` in the ``using`` vectors, personalised."""
        return self._ranked(
            personal,
            lambda n, o: self._timed("query", self.items.nearest, using, vector, filters, n, o),
            limit,
            offset,
        )

    def _outfit_tower_query(self, outfit: list[Stored]) -> np.ndarray | None:
        """``lambda`` times the mean of the outfit's tower vectors (by title): a candidate's
        tower term is its tower vector's dot product with it; None without a tower."""
        if self.outfit_tower is None:
            return None
        titles = [str(s.payload.get("title") or "") for s in outfit]
        titles = [t for t in titles if t]
        if not titles:
            return None
        mean: np.ndarray = self._tower(titles).mean(axis=0) * self.outfit_tower_lambda
        return mean

    def _outfit_top(
        self,
        q: np.ndarray,
        filters: Filters,
        limit: int,
        offset: int,
        tower_query: np.ndarray | None = None,
    ) -> list[Stored]:
        """Rows ``offset`` to ``offset + limit`` of the category by the trained scorer's
        score under query ``q``, read from the store's caption-vector order (exact: see
        :func:`services.recommender.outfits.exact_top`)."""
        scorer = self.outfit_scorer
        assert scorer is not None

        def head(vector: list[float], n: int) -> list[tuple[str, float, str, Stored]]:
            rows = self._timed("query", self.items.nearest, "caption", vector, filters, n, 0)
            return [(r.key, r.score, str(r.payload.get("title") or ""), r) for r in rows]

        def total() -> int:
            count: int = self._timed("count", self.items.count_matching, filters)
            return count

        extra = None
        if tower_query is not None:

            def extra(titles: list[str]) -> np.ndarray:
                out: np.ndarray = self._tower(titles) @ tower_query
                return out

        bound = float(np.linalg.norm(tower_query)) if tower_query is not None else 0.0
        ranked = exact_top(scorer, q, head, offset + limit, total, extra, bound)[offset:]
        return [Stored(r.row.key, r.row.payload, r.row.vectors, r.score) for r in ranked]

    def _outfit_query(self, outfit: list[Stored], wanted: str) -> tuple[np.ndarray | None, str]:
        """The trained scorer's query vector for ``wanted`` given the outfit, or None and why
        the scorer cannot rank this request."""
        scorer = self.outfit_scorer
        if scorer is None:
            return None, self.outfit_scorer_missing
        target = slot_of(wanted)
        if target is None:
            return None, f"the category {wanted!r} is no outfit slot"
        pieces = []
        for stored in outfit:
            slot = slot_of(str(stored.payload.get("category") or ""))
            vector = stored.vectors.get("caption") or []
            if slot is not None and len(vector) == scorer.dimension:
                title = str(stored.payload.get("title") or "")
                pieces.append((slot, scorer.features(vector, title)))
        if not pieces:
            return (
                None,
                "no item of the outfit is in an outfit slot (upper, bottom, shoe, bag, accessory)",
            )
        return scorer.query(pieces, target), ""

    def facets(
        self, fields: Sequence[str], filters: Filters, max_values: int
    ) -> tuple[list[tuple[str, list[tuple[str, int]]]], int]:
        """Exact counts of each field's values among the items ``filters`` allows, most
        frequent first (ties by value); empty values are not counted."""
        wanted = list(dict.fromkeys(fields)) or list(FACET_FIELDS)
        unknown = [f for f in wanted if f not in FACET_FIELDS]
        if unknown:
            raise InvalidArgument(
                f"no facet {unknown[0]!r}; facets are {', '.join(FACET_FIELDS)}",
                reason="BAD_FACET",
            )
        if max_values < 0:
            raise InvalidArgument("max_values must not be negative", reason="BAD_FACET")
        filters = check_filters(filters)
        # Qdrant returns the most frequent first; "all" is bounded by the catalog's size.
        limit = (max_values or FACET_ALL_LIMIT) + 1  # one more: the empty value may be there
        facets = []
        for name in wanted:
            hits = self._timed("facet", self.items.facet, name, filters, limit)
            values = sorted(((v, c) for v, c in hits if v), key=lambda vc: (-vc[1], vc[0]))
            facets.append((name, values[: max_values or None]))
        return facets, self._timed("count", self.items.count_matching, filters)

    # ------------------------------------------------------------------ users

    def _user(self, user_id: str) -> dict[str, Any]:
        if not user_id.strip():
            raise InvalidArgument("user_id is empty", reason="MISSING_USER_ID")
        found = self._timed("retrieve", self.users.get, [user_id])
        state = found[0].payload if found else {}
        return {
            "user_id": user_id,
            **{kind: dict(state.get(kind, {})) for kind in ("like", "reject", "purchase")},
            "events": list(state.get("events", [])),
        }

    def record(
        self, user_id: str, item_id: str, kind: str, when: float | None, event_id: str
    ) -> bool:
        """Apply one interaction at once; an event id seen before changes nothing."""
        if kind not in KINDS:
            raise InvalidArgument(f"unknown interaction kind {kind!r}", reason="BAD_KIND")
        self._vectors_of([item_id], "item")
        state = self._user(user_id)
        if event_id and event_id in state["events"]:
            return False
        when = when or time.time()
        if kind in ("like", "reject", "purchase"):
            state[kind][item_id] = max(when, state[kind].get(item_id, 0.0))
            if kind == "like":
                state["reject"].pop(item_id, None)
            if kind == "reject":
                state["like"].pop(item_id, None)
            # A user's lists are bounded: the newest ones are kept.
            kept = self.settings.max_user_items
            state[kind] = {i: state[kind][i] for i in newest(state[kind], kept)}
        if event_id:
            state["events"] = [*state["events"], event_id][-1000:]
        self._timed("upsert", self.users.upsert, [Stored(user_id, state, {})])
        return True

    def user_state(self, user_id: str) -> dict[str, list[tuple[str, float]]]:
        state = self._user(user_id)
        return {
            kind: sorted(state[kind].items(), key=lambda kv: -kv[1])
            for kind in ("like", "reject", "purchase")
        }

    def recommendations(
        self,
        user_id: str,
        positive_ids: list[str],
        negative_ids: list[str],
        filters: Filters,
        size: int,
        token: str,
    ) -> Page:
        """Qdrant recommend (best score): the user's likes (and explicit positives) pull, their
        rejections (and explicit negatives) push away; rejected and bought items never come
        back, and neither do near-duplicates of rejected ones."""
        limit, offset = self.paging.parse(size, token)
        state = self._user(user_id)
        filters = check_filters(filters)
        # The query's examples are bounded: the newest likes and rejections (explicit ones
        # first); every stored rejection is still excluded by id below.
        most = self.settings.max_query_examples
        positives = list(dict.fromkeys([*positive_ids, *newest(state["like"], most)]))[:most]
        negatives = list(dict.fromkeys([*negative_ids, *newest(state["reject"], most)]))[:most]
        rejected = list(dict.fromkeys([*negatives, *state["reject"]]))  # all, bounded
        known = self._timed(
            "retrieve", self.items.get, list(dict.fromkeys(positives + rejected)), True
        )
        vectors = {s.key: s.vectors["image"] for s in known}
        missing = sorted(set(positive_ids + negative_ids) - set(vectors))
        if missing:
            raise NotFound(f"no item with id {missing[0]!r}", reason="ITEM_NOT_FOUND")
        pos = [vectors[i] for i in positives if i in vectors]
        neg = [vectors[i] for i in negatives if i in vectors]
        filters.excluded_ids = list(
            dict.fromkeys(
                [
                    *filters.excluded_ids,
                    *state["reject"],
                    *state["purchase"],
                    *negative_ids,
                    *positives,
                ]
            )
        )
        wanted = offset + limit + 1
        depth = wanted * 3 + len(neg) * 5
        if pos or neg:
            candidates = self._timed(
                "query",
                self.items.recommend,
                "image",
                pos or [],
                neg,
                filters,
                depth,
                0,
                "best_score",
                True,
            )
        else:
            candidates = self._timed("scroll", self.items.page, filters, depth, None)[0]
        kept = not_near_duplicates(
            candidates,
            [vectors[i] for i in rejected if i in vectors],
            self.settings.near_duplicate_threshold,
        )
        rows = kept[offset : offset + limit + 1]
        return self._page("GetRecommendations", rows, limit, offset)


async def build_recommender(settings: RecommenderSettings) -> Recommender:
    """Connect to the encoder, then open (or create) the collections of its model."""
    encoder = EncoderClient(
        settings.encoder_addr,
        settings.encoder_timeout_s,
        token=settings.service_token.get_secret_value(),
    )
    model = await encoder.connect(settings.encoder_wait_s)
    if model.image_dimension <= 0:
        raise FailedPrecondition(f"the encoder model {model.model_id} has no image tower")
    vectors = {"image": model.image_dimension, "caption": model.text_dimension}
    items_name, users_name = collection_name("items", model), collection_name("users", model)
    items: VectorStore
    users: VectorStore
    previous: tuple[str, VectorStore, VectorStore] | None = None
    if settings.store_backend == "edge":
        items = EdgeStore(
            settings.data_dir / items_name,
            vectors,
            hnsw_ef=settings.hnsw_ef,
            quantize=settings.quantize,
            full_scan_threshold_kb=settings.full_scan_threshold_kb,
        )
        users = EdgeStore(
            settings.data_dir / users_name, {"preference": model.image_dimension}, indexed=False
        )
        older = sorted(
            (p for p in settings.data_dir.glob("items-*") if p.name != items_name and p.is_dir()),
            key=lambda p: p.stat().st_mtime,
        )
        if older and settings.reindex_on_model_change and items.count() == 0:
            old_users_dir = settings.data_dir / older[-1].name.replace("items-", "users-", 1)
            previous = (
                older[-1].name,
                EdgeStore(older[-1], {}),
                EdgeStore(old_users_dir, {"preference": model.image_dimension}, indexed=False),
            )
    else:
        from qdrant_client import QdrantClient

        url = settings.qdrant_url
        client = (
            QdrantClient(url=url)
            if url.startswith(("http://", "https://"))
            else QdrantClient(location=url)
            if url == ":memory:"
            else QdrantClient(path=url)
        )
        existing = [c.name for c in client.get_collections().collections]
        items = ClientStore(
            client,
            items_name,
            vectors,
            hnsw_ef=settings.hnsw_ef,
            quantize=settings.quantize,
            full_scan_threshold_kb=settings.full_scan_threshold_kb,
        )
        users = ClientStore(
            client, users_name, {"preference": model.image_dimension}, indexed=False
        )
        older_names = [n for n in existing if n.startswith("items-") and n != items_name]
        if older_names and settings.reindex_on_model_change and items.count() == 0:
            name = older_names[-1]
            previous = (
                name,
                ClientStore(client, name, vectors, indexed=False),
                ClientStore(
                    client,
                    name.replace("items-", "users-", 1),
                    {"preference": model.image_dimension},
                    indexed=False,
                ),
            )
    recommender = Recommender(settings, encoder, model, items, users)
    if previous is not None:
        source, old_items, old_users = previous
        log.info(
            "re-indexing the catalog for a new model", extra={"from": source, "to": items_name}
        )
        report = await recommender.reindex_from(source, old_items, old_users)
        log.info(
            "re-index finished",
            extra={
                "from": source,
                "items": report.items_moved,
                "users": report.users_moved,
                "failed": len(report.failures),
                "failures": report.failures[:20],
            },
        )
        if settings.store_backend == "edge":  # qdrant-client stores share one client
            old_items.close()
            old_users.close()
    # Build the HNSW index before the service reports SERVING. Qdrant Edge's optimize()
    # holds the GIL for its whole run (measured: a 30k-item build froze every other thread
    # of the process for 5.6 s), so it must not run while serving; items written later sit
    # in an appendable segment that is searched exactly until the next start. A Qdrant
    # server (STORE_BACKEND=qdrant) indexes in its own process instead.
    started = time.perf_counter()
    await asyncio.to_thread(items.optimize)
    log.info(
        "catalog indexed",
        extra={"items": items.count(), "seconds": round(time.perf_counter() - started, 2)},
    )
    return recommender
