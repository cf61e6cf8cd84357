"""The similarity floor under which a text search "finds nothing that fits".

A fashion catalog answers "do you have a lawn mower?" with its nearest items — shoes,
bags — unless something says they are too far from the question. What is too far depends
on the encoder model and the catalog, so the floor is drawn from both by `styleloop
calibrate` (:mod:`styleloop.calibrate`): the closest item's similarity
(``ScoredItem.similarity``) to the words of a question that no vocabulary explained
(:attr:`~services.llm.planner.Plan.floor_text`), for questions the catalog can serve
against questions about what it does not sell, and the floor that tells them apart best
while keeping a set share of the servable ones (:func:`choose_floor`). The llm reads the
file it writes (``CALIBRATION_FILE``) again whenever it changes
(:class:`SimilarityFloor`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge

if TYPE_CHECKING:
    from services.llm.clients.recommender import Catalog
    from services.llm.planner import Plan

log = logging.getLogger(__name__)

FLOOR = Gauge("llm_similarity_floor", "The similarity floor in force (0: none).")


@dataclass(frozen=True)
class Calibration:
    min_similarity: float
    recall_floor: float  # the share of servable questions the floor must keep
    positives: int  # servable questions measured
    positives_kept: float  # their share at or above the floor
    negatives: int  # questions about what the catalog does not sell
    negatives_refused: float  # their share under the floor
    key: str = ""  # what it was drawn from (models and catalog), to know when it is stale
    created: str = ""

    @property
    def balanced_accuracy(self) -> float:
        return (self.positives_kept + self.negatives_refused) / 2


def choose_floor(
    positives: Sequence[float], negatives: Sequence[float], recall_floor: float = 0.95
) -> tuple[float, float, float]:
    """(floor, share of ``positives`` kept, share of ``negatives`` refused): the floor with
    the best balanced accuracy among those keeping at least ``recall_floor`` of the
    positives (an item is kept at or above the floor); 0 (no floor) when there are no
    negatives or no floor beats none. Ties go to the lowest floor."""
    if not positives:
        raise ValueError("no servable questions to calibrate on")
    best = (0.0, 1.0, 0.0)
    if not negatives:
        return best
    for floor in sorted({*positives, *negatives}):
        kept = sum(p >= floor for p in positives) / len(positives)
        if kept < recall_floor:
            break  # a higher floor keeps fewer still
        refused = sum(n < floor for n in negatives) / len(negatives)
        if (kept + refused) / 2 > (best[1] + best[2]) / 2:
            best = (floor, kept, refused)
    return best


async def closest_similarity(catalog: Catalog, plan: Plan, **kw: Any) -> float | None:
    """How close the catalog's closest item (within the plan's filters) is to what the
    plan asks in words no vocabulary explained (:attr:`Plan.floor_text`); ``None`` when
    the floor does not apply (no such words) or no item meets the filters."""
    if not plan.floor_text:
        return None
    found = await catalog.search(plan.floor_text, plan.filters, 1, **kw)
    return found[0].similarity if found else None


def write(path: Path, calibration: Calibration) -> None:
    """Atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(asdict(calibration), indent=2) + "\n")
    os.replace(partial, path)


def read(path: Path) -> Calibration:
    """:class:`ValueError` for a file that is not a calibration."""
    try:
        data = json.loads(path.read_text())
        calibration = Calibration(**data)
        if not 0 <= float(calibration.min_similarity) <= 1:
            raise ValueError("min_similarity must be 0..1")
        return calibration
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{path} is not a calibration: {exc}") from exc


class SimilarityFloor:
    """``fixed`` when set (``MIN_SIMILARITY``), else the calibration file's floor, read
    again when the file changes; none (0) while there is no readable file. A file that
    turns unreadable leaves the last good floor in force (logged)."""

    def __init__(self, fixed: float = 0.0, path: Path | None = None) -> None:
        self.fixed = fixed
        self.path = path
        self._floor = fixed
        self._stamp: tuple[int, int] | None = None
        FLOOR.set(fixed)

    def value(self) -> float:
        if self.fixed > 0 or self.path is None:
            return self.fixed
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return self._floor
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                calibration = read(self.path)
            except (OSError, ValueError) as exc:
                log.warning("similarity floor unchanged: %s", exc)
                return self._floor
            self._floor = float(calibration.min_similarity)
            FLOOR.set(self._floor)
            log.info(
                "similarity floor %.4f from %s (keeps %.0f%% of %d servable questions, "
                "refuses %.0f%% of %d about what the catalog does not sell)",
                self._floor,
                self.path,
                100 * calibration.positives_kept,
                calibration.positives,
                100 * calibration.negatives_refused,
                calibration.negatives,
            )
        return self._floor
