"""Qdrant Edge collection settings reach the engine: FULL_SCAN_THRESHOLD_KB (filtered
queries still return exactly the filtered nearest items) and pinned payload indexes.
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
