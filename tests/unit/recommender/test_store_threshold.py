"""Collection and search settings reach Qdrant: on Edge, FULL_SCAN_THRESHOLD_KB (filtered
queries still return exactly the filtered nearest items) and pinned payload indexes; on
the server adapter, the same HNSW, quantization and search parameters in its requests.
(How they change speed and recall at 100k is the benchmark's job.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.recommender.store import EdgeStore, Filters, Stored


def test_store_with_a_full_scan_threshold_filters_exactly(tmp_path: Path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(600, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    kinds = ["a", "b", "c"]
    store = EdgeStore(tmp_path / "s", {"image": 32}, full_scan_threshold_kb=1)
    store.upsert(
        [
            Stored(f"i{n}", {"item_id": f"i{n}", "category": kinds[n % 3], "price": float(n)},
                   {"image": vectors[n].tolist()})
            for n in range(600)
        ]
    )  # fmt: skip
    store.optimize()
    query = vectors[7]
    found = store.nearest("image", query, Filters(keywords={"category": ["b"]}), 10, 0)
    in_b = [n for n in range(600) if n % 3 == 1]
    exact = sorted(in_b, key=lambda n: -float(vectors[n] @ query))[:10]
    assert [p.key for p in found] == [f"i{n}" for n in exact]
    assert all(p.payload["category"] == "b" for p in found)
    store.close()


def test_payload_indexes_are_pinned_and_stay_so_after_reload(tmp_path: Path):
    import qdrant_edge as q

    EdgeStore(tmp_path / "s", {"image": 8}).close()
    store = EdgeStore(tmp_path / "s", {"image": 8})  # loads the shard written above
    schema = store.shard.info().payload_schema
    assert {"category", "item_id", "price", "in_stock"} <= set(schema)
    for name in ("category", "item_id", "price", "in_stock"):
        assert schema[name].params.memory == q.Memory.Pinned, name
    store.close()


class Recording:
    """A real qdrant-client (local mode) that remembers the keyword arguments of the calls
    that carry collection and search settings to a server."""

    def __init__(self) -> None:
        from qdrant_client import QdrantClient

        self.client = QdrantClient(location=":memory:")
        self.calls: dict[str, list[dict[str, object]]] = {}

    def __getattr__(self, name: str) -> object:
        method = getattr(self.client, name)

        def call(*args: object, **kwargs: object) -> object:
            self.calls.setdefault(name, []).append(kwargs)
            return method(*args, **kwargs)

        return call


def test_the_server_adapter_asks_for_the_same_index_and_search_settings():
    from qdrant_client import models as m

    from services.recommender.store import ClientStore

    client = Recording()
    store = ClientStore(client, "items", {"image": 4}, hnsw_ef=99, full_scan_threshold_kb=123)
    (created,) = client.calls["create_collection"]
    hnsw = created["hnsw_config"]
    assert isinstance(hnsw, m.HnswConfigDiff)
    assert (hnsw.m, hnsw.ef_construct, hnsw.full_scan_threshold) == (16, 100, 123)
    quantization = created["quantization_config"]
    assert isinstance(quantization, m.ScalarQuantization)
    assert quantization.scalar.type == m.ScalarType.INT8

    store.upsert([Stored("a", {"item_id": "a"}, {"image": [1.0, 0.0, 0.0, 0.0]})])
    found = store.nearest("image", [1.0, 0.1, 0.0, 0.0], Filters(), 5, 0)
    assert [p.key for p in found] == ["a"]
    params = client.calls["query_points"][-1]["search_params"]
    assert isinstance(params, m.SearchParams)
    assert params.hnsw_ef == 99
    assert params.quantization is not None and params.quantization.rescore

    plain = Recording()
    ClientStore(plain, "items", {"image": 4}, quantize=False)
    assert plain.calls["create_collection"][0]["quantization_config"] is None
