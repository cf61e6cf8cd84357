"""The similarity floor: how it is chosen and how the llm reads it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.llm.calibration import Calibration, SimilarityFloor, choose_floor, read, write


def test_the_floor_keeps_the_asked_share_and_refuses_the_most() -> None:
    positives = [0.5, 0.6, 0.7, 0.8, 0.9, 0.55, 0.65, 0.75, 0.85, 0.95]
    negatives = [0.1, 0.2, 0.3, 0.4, 0.52, 0.7]
    floor, kept, refused = choose_floor(positives, negatives, recall_floor=0.9)
    assert floor == 0.55  # 0.5 may go (90% kept); 0.7 would cost too many servable ones
    assert kept == 0.9 and refused == pytest.approx(5 / 6)


def test_no_negatives_or_no_gain_means_no_floor() -> None:
    assert choose_floor([0.2, 0.3], [])[0] == 0.0
    assert choose_floor([0.2, 0.3], [0.9], recall_floor=1.0)[0] == 0.0
    with pytest.raises(ValueError):
        choose_floor([], [0.1])


def test_the_llm_reads_the_file_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    floor = SimilarityFloor(0.0, path)
    assert floor.value() == 0.0  # no file yet: no floor
    write(path, Calibration(0.42, 0.95, 10, 1.0, 10, 0.9))
    assert floor.value() == 0.42
    write(path, Calibration(0.5, 0.95, 10, 1.0, 10, 0.9, key="k2"))
    os.utime(path, ns=(1, 1))  # a new stamp even within the clock's resolution
    assert floor.value() == 0.5
    path.write_text("{not json")
    assert floor.value() == 0.5  # an unreadable file leaves the last good floor
    with pytest.raises(ValueError):
        read(path)
    assert SimilarityFloor(0.3, path).value() == 0.3  # MIN_SIMILARITY wins
