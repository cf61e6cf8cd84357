"""The soak's verdicts: a process whose memory keeps growing, or an error rate that grows,
breaks a promise; a flat one does not. The RSS chart is a line per process."""

from __future__ import annotations

import os
from pathlib import Path

from styleloop.bench import report
from styleloop.drill import Soak, Window, error_rates, rss_mib


def soak_of(**series: list[float | None]) -> Soak:
    soak = Soak()
    soak.seconds = [float(i) for i in range(len(next(iter(series.values()))))]
    soak.rss = dict(series)
    return soak


def test_memory_that_keeps_growing_is_unbounded_and_flat_memory_is_not() -> None:
    soak = soak_of(
        flat=[300, 310, 305, 309, 302, 308],
        leaking=[100, 130, 160, 190, 220, 250],
        warming=[100, 400, 400, 410, 405, 400],  # grew early, then held
        gone=[50, 50, 50, None, None, None],  # exited half-way: nothing to compare
    )
    assert soak.unbounded() == {"leaking": (160, 250)}  # the peaks of the two halves


def test_the_error_rate_is_split_at_half_time() -> None:
    window = Window("soak")
    window.answers = [(1.0, False), (2.0, True), (6.0, True), (7.0, True), (8.0, False)]
    first, second = error_rates(window, 10.0)
    assert first == 0.5 and second == 2 / 3


def test_rss_is_read_from_proc_and_none_once_a_process_is_gone() -> None:
    mine = rss_mib(os.getpid())
    assert mine is not None and mine > 10
    assert rss_mib(2**22 + 1) is None  # above Linux's pid_max limit: no such process


def test_a_line_chart_draws_one_line_per_series(tmp_path: Path) -> None:
    chart = report.Chart("rss", "MiB", ["0 s", "5 s", "10 s"], {"a": [1, 2, None]}, lines=True)
    report.draw(chart, tmp_path / "soak.png")
    assert (tmp_path / "soak.png").read_bytes()[:4] == b"\x89PNG"
