"""The encoder benchmark's arithmetic: ratios pair the two modes of the same round, and the
table shows per-level medians over rounds."""

from __future__ import annotations

from styleloop.bench.encoder import Measurement, medians, speedups


def row(mode: str, rate: float, round_number: int, concurrency: int = 32) -> Measurement:
    return Measurement(
        "image", mode, concurrency, 128, rate, 10.0 * round_number, 0, 0, round_number
    )


def test_speedups_pair_modes_within_each_round() -> None:
    results = [
        row("unbatched", 100, 0), row("batched", 150, 0),
        row("unbatched", 50, 1), row("batched", 150, 1),
        row("unbatched", 200, 2),  # round 2 has no batched figure yet: no ratio
        row("unbatched", 10, 0, concurrency=8), row("batched", 90, 0, concurrency=8),
    ]  # fmt: skip
    assert speedups(results, "image", 32) == [1.5, 3.0]
    assert speedups(results, "image", 8) == [9.0]
    assert speedups(results, "text", 32) == []


def test_medians_take_each_figure_over_rounds() -> None:
    results = [row("batched", rate, n) for n, rate in enumerate([100, 300, 200])]
    (summary,) = medians(results)
    assert summary.items_per_s == 200
    assert summary.p50_ms == 10.0  # the median of 0, 10, 20
    assert summary.requests == 3 * 128
