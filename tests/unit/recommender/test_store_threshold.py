"""A Qdrant Edge collection created with FULL_SCAN_THRESHOLD_KB set: the setting reaches
the engine and filtered queries still return exactly the filtered nearest items. (How
it changes speed and recall at 100k is the benchmark's job.)"""

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
