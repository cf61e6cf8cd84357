"""Vector storage behind one small interface, with two adapters.

* :class:`EdgeStore` — Qdrant Edge (``qdrant-edge-py``): the real Qdrant engine embedded
  in-process, on disk (HNSW, payload indexes, recommend queries). The local default.
* :class:`ClientStore` — ``qdrant-client``: a Qdrant server over gRPC in production (its
  local mode speaks the same API and serves the tests).

Items are points with two named vectors, ``image`` and ``caption``; item ids are strings,
stored in the payload and mapped to UUIDv5 point ids. Nothing here knows gRPC.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

ID_NAMESPACE = uuid.UUID("6f1c2d4e-8a3b-5c7d-9e0f-1a2b3c4d5e6f")
KEYWORD_FIELDS = (
    "category",
    "article_type",
    "brand",
    "season",
    "colour",
    "usage",
    "gender",
    "year",
)
FLOAT_FIELDS = ("price",)
BOOL_FIELDS = ("in_stock",)
# Index and search settings both adapters give Qdrant (Edge in-process, a server in
# production), so the local stack and production rank alike.
DEFAULT_FULL_SCAN_THRESHOLD_KB = 10_000  # Qdrant's own default
HNSW_M = 16
HNSW_EF_CONSTRUCT = 100
INT8_QUANTILE = 0.99
OVERSAMPLING = 2.0  # int8 candidates fetched per result, then rescored on float vectors


def floats(vector: Sequence[float]) -> list[float]:
    """A plain list of Python floats (a NumPy row through ``list()`` would hand the engine
    NumPy scalars, which costs about a millisecond per 512-d query)."""
    if isinstance(vector, np.ndarray):
        return vector.astype(np.float32).tolist()  # type: ignore[no-any-return]
    return [float(x) for x in vector]


def point_id(item_id: str) -> str:
    """The stable Qdrant point id of an item (or user) id."""
    return str(uuid.uuid5(ID_NAMESPACE, item_id))


@dataclass
class Filters:
    """What a query may return; values within a field are alternatives, fields all hold."""

    keywords: dict[str, list[str]] = field(default_factory=dict)
    min_price: float | None = None
    max_price: float | None = None
    in_stock_only: bool = False
    excluded_ids: list[str] = field(default_factory=list)


@dataclass
class Stored:
    """A point as the store returns it."""

    key: str
    payload: dict[str, Any]
    vectors: dict[str, list[float]] = field(default_factory=dict)
    score: float = 0.0


class VectorStore(Protocol):
    """One collection of points with named vectors and a payload."""

    def upsert(self, points: Sequence[Stored]) -> None: ...

    def delete(self, keys: Sequence[str]) -> None: ...

    def get(self, keys: Sequence[str], with_vectors: bool = False) -> list[Stored]: ...

    def nearest(
        self, using: str, vector: Sequence[float], filters: Filters, limit: int, offset: int
    ) -> list[Stored]: ...

    def fused(
        self,
        queries: Sequence[tuple[str, Sequence[float]]],
        filters: Filters,
        limit: int,
        offset: int,
        depth: int,
    ) -> list[Stored]: ...

    def recommend(
        self,
        using: str,
        positives: Sequence[Sequence[float]],
        negatives: Sequence[Sequence[float]],
        filters: Filters,
        limit: int,
        offset: int,
        strategy: str,
        with_vectors: bool = False,
    ) -> list[Stored]: ...

    def page(
        self, filters: Filters, limit: int, cursor: str | None
    ) -> tuple[list[Stored], str | None]:
        """Up to ``limit`` points in point-id order from ``cursor`` (the engine's own scroll
        cursor), and the cursor of the next page (None after the last)."""
        ...

    def count(self) -> int: ...

    def count_matching(self, filters: Filters) -> int:
        """Exactly how many points ``filters`` allows."""
        ...

    def facet(self, field: str, filters: Filters, limit: int) -> list[tuple[str, int]]:
        """The ``limit`` most frequent values of a keyword field among the points
        ``filters`` allows, with exact counts."""
        ...

    def optimize(self) -> None:
        """Build indexes (HNSW) and merge segments; blocking, run off the event loop."""
        ...

    def close(self) -> None: ...


def to_stored(point: Any) -> Stored:
    """A record or scored point of either client library as a :class:`Stored`."""
    payload = dict(point.payload or {})
    vectors = point.vector if isinstance(point.vector, dict) else {}
    return Stored(
        key=str(payload.get("key", "")),
        payload=payload,
        vectors={k: list(v) for k, v in vectors.items()},
        score=float(getattr(point, "score", 0.0) or 0.0),
    )


def scan_all(store: VectorStore, batch: int) -> Iterator[list[Stored]]:
    """Every point of ``store``, a page at a time."""
    cursor: str | None = None
    while True:
        rows, cursor = store.page(Filters(), batch, cursor)
        if rows:
            yield rows
        if cursor is None or not rows:
            return


# ----------------------------------------------------------------------------- Qdrant Edge


class EdgeStore:
    """A collection as a Qdrant Edge shard in ``path`` (created on first use)."""

    def __init__(
        self,
        path: Path,
        vectors: dict[str, int],
        indexed: bool = True,
        hnsw_ef: int = 64,
        quantize: bool = True,
        full_scan_threshold_kb: int | None = None,
    ) -> None:
        import qdrant_edge as q

        self.q = q
        # Search-time HNSW breadth: higher is more exact and slower. With int8 scalar
        # quantization, candidates are found on int8 copies (2x oversampled) and rescored
        # on the float vectors (see the benchmark: same recall, ~3-4x faster at 100k).
        self.params = q.SearchParams(
            hnsw_ef=hnsw_ef,
            quantization=q.QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING)
            if quantize
            else None,
        )
        if path.is_dir() and any(path.iterdir()):
            self.shard = q.EdgeShard.load(str(path))
            if indexed:  # a field added since the collection was made (e.g. year)
                have = set(self.shard.info().payload_schema)
                for name in (f for f in KEYWORD_FIELDS if f not in have):
                    self.shard.update(
                        q.UpdateOperation.create_field_index(
                            name, q.KeywordIndexParams(memory=q.Memory.Pinned)
                        )
                    )
        else:
            # What every query walks — the HNSW graph, the int8 copies, the payload indexes
            # and the id map — is pinned on the heap; float vectors (read only to rescore a
            # handful of candidates) and payloads stay memory-mapped. Page-cache eviction
            # otherwise puts page faults into query latency (measured at 100k: plain p50
            # 0.4-0.5 ms pinned against 0.8-1.0 ms memory-mapped on this VM).
            pinned = q.Memory.Pinned
            config = q.EdgeConfig(
                vectors={
                    name: q.EdgeVectorParams(
                        size=size, distance=q.Distance.Cosine, memory=q.Memory.Cached
                    )
                    for name, size in vectors.items()
                },
                quantization_config=q.ScalarQuantizationConfig(
                    type=q.ScalarType.Int8, quantile=INT8_QUANTILE, memory=pinned
                )
                if quantize
                else None,
                # Below this many KB of matching vectors a filtered query scans them
                # instead of walking the HNSW graph (Qdrant's default: 10 MB).
                hnsw_config=q.HnswIndexConfig(
                    m=HNSW_M,
                    ef_construct=HNSW_EF_CONSTRUCT,
                    full_scan_threshold=full_scan_threshold_kb or DEFAULT_FULL_SCAN_THRESHOLD_KB,
                    memory=pinned,
                ),
                id_tracker_memory=pinned,
                payload_memory=q.Memory.Cached,
            )
            self.shard = q.EdgeShard.create(str(path), config)
            if indexed:
                schemas: dict[str, Any] = {
                    **dict.fromkeys(
                        (*KEYWORD_FIELDS, "item_id"), q.KeywordIndexParams(memory=pinned)
                    ),
                    **dict.fromkeys(FLOAT_FIELDS, q.FloatIndexParams(memory=pinned)),
                    **dict.fromkeys(BOOL_FIELDS, q.BoolIndexParams(memory=pinned)),
                }
                for name, schema in schemas.items():
                    self.shard.update(q.UpdateOperation.create_field_index(name, schema))

    def _filter(self, filters: Filters) -> Any:
        q = self.q
        # One wanted value is a MatchValue: about twice as fast in the engine as a
        # one-element MatchAny (100k items, category + price: 0.69 vs 1.32 ms p50).
        must: list[Any] = [
            q.FieldCondition(
                key=name,
                match=q.MatchValue(value=values[0]) if len(values) == 1 else q.MatchAny(any=values),
            )
            for name, values in ((n, list(v)) for n, v in filters.keywords.items())
            if values
        ]
        if filters.min_price is not None or filters.max_price is not None:
            must.append(
                q.FieldCondition(
                    key="price", range=q.RangeFloat(gte=filters.min_price, lte=filters.max_price)
                )
            )
        if filters.in_stock_only:
            must.append(q.FieldCondition(key="in_stock", match=q.MatchValue(value=True)))
        must_not = (
            [q.HasIdCondition(point_ids={point_id(k) for k in filters.excluded_ids})]
            if filters.excluded_ids
            else None
        )
        if not must and not must_not:
            return None
        return q.Filter(must=must or None, must_not=must_not)

    def upsert(self, points: Sequence[Stored]) -> None:
        q = self.q
        self.shard.update(
            q.UpdateOperation.upsert_points(
                [
                    q.Point(
                        id=point_id(p.key),
                        vector={k: floats(v) for k, v in p.vectors.items()},
                        payload={**p.payload, "key": p.key},
                    )
                    for p in points
                ]
            )
        )
        self.shard.flush()

    def delete(self, keys: Sequence[str]) -> None:
        self.shard.update(self.q.UpdateOperation.delete_points([point_id(k) for k in keys]))
        self.shard.flush()

    def get(self, keys: Sequence[str], with_vectors: bool = False) -> list[Stored]:
        records = self.shard.retrieve(
            [point_id(k) for k in keys], with_payload=True, with_vector=with_vectors
        )
        found = {r.key: r for r in map(to_stored, records)}
        return [found[k] for k in keys if k in found]

    def _query(
        self,
        limit: int,
        offset: int,
        query: Any,
        filters: Filters,
        with_vector: bool = False,
        **extra: Any,
    ) -> list[Stored]:
        request = self.q.QueryRequest(
            limit=limit,
            offset=offset,
            query=query,
            filter=self._filter(filters),
            with_payload=False,
            params=self.params,
            **extra,
        )
        scored = self.shard.query(request)
        # Ranking and fetching are two steps: a filtered query that also reads payloads
        # costs more than the query plus one retrieve of the page (measured at 100k).
        records = {
            r.id: r
            for r in self.shard.retrieve(
                [p.id for p in scored], with_payload=True, with_vector=with_vector
            )
        }
        out = []
        for p in scored:
            if p.id in records:  # deleted between the two steps: simply not returned
                stored = to_stored(records[p.id])
                stored.score = float(p.score)
                out.append(stored)
        return out

    def nearest(
        self, using: str, vector: Sequence[float], filters: Filters, limit: int, offset: int
    ) -> list[Stored]:
        return self._query(
            limit, offset, self.q.Query.Nearest(floats(vector), using=using), filters
        )

    def fused(
        self,
        queries: Sequence[tuple[str, Sequence[float]]],
        filters: Filters,
        limit: int,
        offset: int,
        depth: int,
    ) -> list[Stored]:
        q = self.q
        flt = self._filter(filters)
        prefetches = [
            q.Prefetch(
                query=q.Query.Nearest(floats(v), using=using),
                limit=depth,
                filter=flt,
                params=self.params,
            )
            for using, v in queries
        ]
        return self._query(limit, offset, q.Fusion.Rrf(k=60), filters, prefetches=prefetches)

    def recommend(
        self,
        using: str,
        positives: Sequence[Sequence[float]],
        negatives: Sequence[Sequence[float]],
        filters: Filters,
        limit: int,
        offset: int,
        strategy: str,
        with_vectors: bool = False,
    ) -> list[Stored]:
        q = self.q
        rq = q.RecommendQuery(
            positives=[floats(v) for v in positives], negatives=[floats(v) for v in negatives]
        )
        query = (
            q.Query.RecommendSumScores(rq, using=using)
            if strategy == "sum_scores"
            else q.Query.RecommendBestScore(rq, using=using)
        )
        return self._query(limit, offset, query, filters, with_vector=with_vectors)

    def page(
        self, filters: Filters, limit: int, cursor: str | None
    ) -> tuple[list[Stored], str | None]:
        records, following = self.shard.scroll(
            self.q.ScrollRequest(
                offset=cursor, limit=limit, filter=self._filter(filters), with_payload=True
            )
        )
        return [to_stored(r) for r in records], None if following is None else str(following)

    def count(self) -> int:
        return int(self.shard.count(self.q.CountRequest(exact=True)))

    def count_matching(self, filters: Filters) -> int:
        return int(self.shard.count(self.q.CountRequest(exact=True, filter=self._filter(filters))))

    def facet(self, field: str, filters: Filters, limit: int) -> list[tuple[str, int]]:
        response = self.shard.facet(
            self.q.FacetRequest(key=field, limit=limit, exact=True, filter=self._filter(filters))
        )
        return [(str(hit.value), int(hit.count)) for hit in response.hits]

    def optimize(self) -> None:
        # Qdrant Edge runs its optimizers (HNSW indexing above the indexing threshold,
        # segment merging) only when asked to.
        self.shard.optimize()

    def close(self) -> None:
        self.shard.flush()
        self.shard.close()


# ----------------------------------------------------------------------------- qdrant-client


class ClientStore:
    """A collection on a Qdrant server through ``qdrant-client`` (gRPC), or in its local
    mode (``location=":memory:"`` or a path) for tests."""

    def __init__(
        self,
        client: Any,
        collection: str,
        vectors: dict[str, int],
        indexed: bool = True,
        hnsw_ef: int = 64,
        quantize: bool = True,
        full_scan_threshold_kb: int | None = None,
    ) -> None:
        from qdrant_client import models as m

        self.m = m
        self.client = client
        self.collection = collection
        # The same index and search settings as EdgeStore (the client's local mode accepts
        # and ignores them; a server applies them).
        self.params = m.SearchParams(
            hnsw_ef=hnsw_ef,
            quantization=m.QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING)
            if quantize
            else None,
        )
        if not client.collection_exists(collection):
            client.create_collection(
                collection,
                vectors_config={
                    name: m.VectorParams(size=size, distance=m.Distance.COSINE)
                    for name, size in vectors.items()
                },
                hnsw_config=m.HnswConfigDiff(
                    m=HNSW_M,
                    ef_construct=HNSW_EF_CONSTRUCT,
                    full_scan_threshold=full_scan_threshold_kb or DEFAULT_FULL_SCAN_THRESHOLD_KB,
                ),
                quantization_config=m.ScalarQuantization(
                    scalar=m.ScalarQuantizationConfig(
                        type=m.ScalarType.INT8, quantile=INT8_QUANTILE, always_ram=True
                    )
                )
                if quantize
                else None,
            )
            if indexed:
                schema = {
                    **dict.fromkeys((*KEYWORD_FIELDS, "item_id"), m.PayloadSchemaType.KEYWORD),
                    **dict.fromkeys(FLOAT_FIELDS, m.PayloadSchemaType.FLOAT),
                    **dict.fromkeys(BOOL_FIELDS, m.PayloadSchemaType.BOOL),
                }
                for name, kind in schema.items():
                    client.create_payload_index(collection, name, kind)

    def _filter(self, filters: Filters) -> Any:
        m = self.m
        must: list[Any] = [
            m.FieldCondition(key=name, match=m.MatchAny(any=list(values)))
            for name, values in filters.keywords.items()
            if values
        ]
        if filters.min_price is not None or filters.max_price is not None:
            must.append(
                m.FieldCondition(
                    key="price", range=m.Range(gte=filters.min_price, lte=filters.max_price)
                )
            )
        if filters.in_stock_only:
            must.append(m.FieldCondition(key="in_stock", match=m.MatchValue(value=True)))
        must_not = (
            [m.HasIdCondition(has_id=[point_id(k) for k in filters.excluded_ids])]
            if filters.excluded_ids
            else None
        )
        if not must and not must_not:
            return None
        return m.Filter(must=must or None, must_not=must_not)

    def upsert(self, points: Sequence[Stored]) -> None:
        m = self.m
        self.client.upsert(
            self.collection,
            points=[
                m.PointStruct(
                    id=point_id(p.key),
                    vector={k: floats(v) for k, v in p.vectors.items()},
                    payload={**p.payload, "key": p.key},
                )
                for p in points
            ],
            wait=True,
        )

    def delete(self, keys: Sequence[str]) -> None:
        self.client.delete(
            self.collection,
            points_selector=self.m.PointIdsList(points=[point_id(k) for k in keys]),
            wait=True,
        )

    def get(self, keys: Sequence[str], with_vectors: bool = False) -> list[Stored]:
        records = self.client.retrieve(
            self.collection,
            [point_id(k) for k in keys],
            with_payload=True,
            with_vectors=with_vectors,
        )
        found = {r.key: r for r in map(to_stored, records)}
        return [found[k] for k in keys if k in found]

    def _query(self, limit: int, offset: int, filters: Filters, **kwargs: Any) -> list[Stored]:
        response = self.client.query_points(
            self.collection,
            query_filter=self._filter(filters),
            limit=limit,
            offset=offset,
            with_payload=True,
            search_params=self.params,
            **kwargs,
        )
        return [to_stored(p) for p in response.points]

    def nearest(
        self, using: str, vector: Sequence[float], filters: Filters, limit: int, offset: int
    ) -> list[Stored]:
        return self._query(limit, offset, filters, query=floats(vector), using=using)

    def fused(
        self,
        queries: Sequence[tuple[str, Sequence[float]]],
        filters: Filters,
        limit: int,
        offset: int,
        depth: int,
    ) -> list[Stored]:
        m = self.m
        flt = self._filter(filters)
        prefetch = [
            m.Prefetch(query=floats(v), using=using, limit=depth, filter=flt, params=self.params)
            for using, v in queries
        ]
        return self._query(
            limit, offset, filters, prefetch=prefetch, query=m.FusionQuery(fusion=m.Fusion.RRF)
        )

    def recommend(
        self,
        using: str,
        positives: Sequence[Sequence[float]],
        negatives: Sequence[Sequence[float]],
        filters: Filters,
        limit: int,
        offset: int,
        strategy: str,
        with_vectors: bool = False,
    ) -> list[Stored]:
        m = self.m
        query = m.RecommendQuery(
            recommend=m.RecommendInput(
                positive=[floats(v) for v in positives],
                negative=[floats(v) for v in negatives],
                strategy=(
                    m.RecommendStrategy.SUM_SCORES
                    if strategy == "sum_scores"
                    else m.RecommendStrategy.BEST_SCORE
                ),
            )
        )
        return self._query(
            limit, offset, filters, query=query, using=using, with_vectors=with_vectors
        )

    def page(
        self, filters: Filters, limit: int, cursor: str | None
    ) -> tuple[list[Stored], str | None]:
        records, following = self.client.scroll(
            self.collection,
            scroll_filter=self._filter(filters),
            limit=limit,
            offset=cursor,
            with_payload=True,
        )
        return [to_stored(r) for r in records], None if following is None else str(following)

    def count(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def count_matching(self, filters: Filters) -> int:
        return int(
            self.client.count(self.collection, count_filter=self._filter(filters), exact=True).count
        )

    def facet(self, field: str, filters: Filters, limit: int) -> list[tuple[str, int]]:
        response = self.client.facet(
            self.collection, key=field, facet_filter=self._filter(filters), limit=limit, exact=True
        )
        return [(str(hit.value), int(hit.count)) for hit in response.hits]

    def optimize(self) -> None:
        # A Qdrant server optimizes by itself.
        return None

    def close(self) -> None:
        # Releases the local-mode storage lock, or the server connection.
        self.client.close()
