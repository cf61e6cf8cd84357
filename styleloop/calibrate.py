"""`styleloop calibrate`: the similarity floor under which chat says "nothing fits".

Asks a running recommender two kinds of question, as chat does (the llm's own planner
turns each into a text search with filters): questions the catalog can serve — the train
split of :mod:`styleloop.chat_questions` (brand + season + year, brand + type + gender,
colour + type, usage + type + gender) and product titles as a shopper would ask for them
— and questions about what a fashion store does not sell ("do you have a lawn mower?",
"Puma dog food"). For each, the closest item's similarity (``ScoredItem.similarity``) to
the words the planner could not explain (with what its filters name) is recorded; the
floor chosen keeps at least ``--recall`` of the servable questions and refuses as many
of the others as it can (best balanced accuracy). Questions the planner settles by
itself — every word explained ("Puma fall 2011"), a brand the catalog lacks, filters no
item meets — are not counted: the floor is never consulted for them. The result is
written as JSON for the llm's ``CALIBRATION_FILE``, which reads it again when it
changes; `styleloop up` runs this after ingesting whenever the models or the catalog
changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.llm.calibration import Calibration, choose_floor, closest_similarity, write
from services.llm.clients.recommender import RecommenderCatalog
from services.llm.planner import Turn, Vocabulary, plan_conversation
from styleloop.chat_questions import (
    Question,
    Split,
    build_questions,
    not_sold_questions,
    not_sold_things,
)
from styleloop.commands import add_command

TITLE_TEMPLATES = ("do you have {title}?", "I want {title}", "looking for {title}")


@dataclass(frozen=True)
class Measured:
    question: str
    kind: str
    servable: bool
    similarity: float


def title_questions(
    rows: Sequence[Mapping[str, Any]], split: Split, count: int, seed: int = 0
) -> list[Question]:
    """Product titles without their brand, as a shopper would ask for them."""
    rng = random.Random(f"{seed}:{split}:titles")
    chosen = [
        r
        for r in rows
        if r.get("title")
        and (hashlib.sha256(str(r["item_id"]).encode()).digest()[0] < 64) == (split == "eval")
    ]
    rng.shuffle(chosen)
    out = []
    for row in chosen[:count]:
        title = str(row["title"])
        brand = str(row.get("brand") or "")
        if brand and title.lower().startswith(brand.lower()):
            title = title[len(brand) :].strip()
        text = rng.choice(TITLE_TEMPLATES).format(title=title.lower())
        out.append(Question(text, "title", {}, (str(row["item_id"]),)))
    return out


def branded_not_sold(
    rows: Sequence[Mapping[str, Any]], split: Split, per_kind: int, seed: int = 0
) -> list[Question]:
    """What the catalog does not sell, asked of one of its own brands ("Puma dog food"):
    the planner finds a brand filter, and only the floor can tell."""
    counts = Counter(str(r["brand"]) for r in rows if r.get("brand"))
    common = [b for b, _ in counts.most_common(20)]
    if not common:
        return []
    rng = random.Random(f"{seed}:{split}:branded")
    out = []
    for thing, _ in not_sold_things(rows, split, per_kind=per_kind, seed=seed):
        bare = thing.removeprefix("an ").removeprefix("a ")
        out.append(Question(f"{rng.choice(common)} {bare}", "not_sold_branded", {}, (), False))
    return out


def questions_for(rows: Sequence[Mapping[str, Any]], split: Split, per_kind: int) -> list[Question]:
    asked = [q for q in build_questions(rows, split, per_kind=per_kind) if q.answerable]
    asked += title_questions(rows, split, per_kind * 2)
    asked += not_sold_questions(rows, split, per_kind=per_kind * 3)
    asked += branded_not_sold(rows, split, per_kind * 3)
    return asked


async def measure(
    questions: Iterable[Question], catalog: RecommenderCatalog, progress: bool = True
) -> list[Measured]:
    """Each question's closest item as chat's own text search finds it; questions the
    planner settles without a search (or whose filters no item meets) are left out."""
    from tqdm import tqdm

    vocabulary = Vocabulary.from_facets(await catalog.facets())
    out = []
    for question in tqdm(list(questions), desc="calibrate", unit="q", disable=not progress):
        plan = plan_conversation([Turn("user", question.text)], vocabulary)
        if plan.knows_nothing_fits or plan.intent != "search":
            continue
        closest = await closest_similarity(catalog, plan)
        if closest is not None:
            out.append(Measured(question.text, question.kind, question.answerable, closest))
    return out


def calibrate(
    rows: Sequence[Mapping[str, Any]],
    recommender: str,
    *,
    token: str = "",
    recall: float = 0.95,
    per_kind: int = 20,
    key: str = "",
    progress: bool = True,
) -> tuple[Calibration, list[Measured]]:
    async def run() -> list[Measured]:
        catalog = RecommenderCatalog(recommender, timeout_s=30.0, token=token)
        try:
            await catalog.wait_ready(30.0)
            return await measure(questions_for(rows, "train", per_kind), catalog, progress)
        finally:
            await catalog.close()

    measured = asyncio.run(run())
    positives = [m.similarity for m in measured if m.servable]
    negatives = [m.similarity for m in measured if not m.servable]
    floor, kept, refused = choose_floor(positives, negatives, recall)
    calibration = Calibration(
        min_similarity=round(floor, 6),
        recall_floor=recall,
        positives=len(positives),
        positives_kept=kept,
        negatives=len(negatives),
        negatives_refused=refused,
        key=key,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    return calibration, measured


def calibrate_into(
    path: Path, rows: Sequence[Mapping[str, Any]], recommender: str, **kw: Any
) -> list[str]:
    """:func:`calibrate`, written to ``path`` for the llm; the report's lines."""
    calibration, measured = calibrate(rows, recommender, **kw)
    write(path, calibration)
    return report(calibration, measured)


def report(calibration: Calibration, measured: Sequence[Measured]) -> list[str]:
    def spread(values: Sequence[float]) -> str:
        if not values:
            return "none"
        q = statistics.quantiles(values, n=10) if len(values) > 1 else [values[0]] * 9
        return f"min {min(values):.3f}, p10 {q[0]:.3f}, median {q[4]:.3f}, max {max(values):.3f}"

    positives = [m.similarity for m in measured if m.servable]
    negatives = [m.similarity for m in measured if not m.servable]
    return [
        f"servable questions ({len(positives)}): closest item {spread(positives)}",
        f"not sold here ({len(negatives)}): closest item {spread(negatives)}",
        f"floor {calibration.min_similarity:.4f}: keeps {100 * calibration.positives_kept:.1f}% "
        f"of servable questions (at least {100 * calibration.recall_floor:.0f}% asked), "
        f"refuses {100 * calibration.negatives_refused:.1f}% of the others "
        f"(balanced accuracy {calibration.balanced_accuracy:.3f})",
    ]


def catalog_key(models_dir: Path, rows: Sequence[Mapping[str, Any]]) -> str:
    """What a calibration depends on: the models' manifest and the catalog's items."""
    digest = hashlib.sha256()
    manifest = models_dir / "manifest.json"
    digest.update(manifest.read_bytes() if manifest.is_file() else str(models_dir).encode())
    for row in sorted(rows, key=lambda r: str(r["item_id"])):
        digest.update(f"{row['item_id']}\x00{row.get('title', '')}\x00".encode())
    return digest.hexdigest()


def register(commands: Any) -> None:
    """``styleloop calibrate``: added by :mod:`styleloop.cli`."""
    import argparse
    import os

    parser = add_command(
        commands,
        "calibrate",
        __doc__,
        help="draw chat's 'nothing fits' similarity floor from the catalog",
    )
    parser.add_argument("--catalog", type=Path, help="catalog (default $STYLELOOP_DATA_DIR)")
    parser.add_argument(
        "--recommender",
        default=os.environ.get("RECOMMENDER_ADDR", "127.0.0.1:50052"),
        help="a running recommender with the catalog ingested ($RECOMMENDER_ADDR)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(".styleloop/stack/calibration.json"),
        help="where to write it (the llm's CALIBRATION_FILE; default %(default)s)",
    )
    parser.add_argument(
        "--recall",
        type=float,
        default=0.95,
        help="share of servable questions the floor must keep (default %(default)s)",
    )
    parser.add_argument("--per-kind", type=int, default=20, help="questions per kind (20)")
    parser.add_argument("--no-progress", action="store_true")

    def run(args: argparse.Namespace) -> int:
        from styleloop.catalog import CatalogError, configured_catalog, read_catalog
        from styleloop.runtime.errors import Unavailable

        if not 0 < args.recall <= 1:
            sys.stderr.write("styleloop calibrate: --recall must be in (0, 1]\n")
            return 2
        path = configured_catalog(args.catalog)
        if path is None:
            sys.stderr.write("styleloop calibrate: give --catalog or set STYLELOOP_DATA_DIR\n")
            return 2
        try:
            rows = [r.item for r in read_catalog(path).rows]
            lines = calibrate_into(
                args.out,
                rows,
                args.recommender,
                token=os.environ.get("SERVICE_TOKEN", ""),
                recall=args.recall,
                per_kind=args.per_kind,
                progress=not args.no_progress,
            )
        except CatalogError as exc:
            sys.stderr.write(f"styleloop calibrate: {exc}\n")
            return 2
        except Unavailable:
            sys.stderr.write(
                f"styleloop calibrate: no recommender at {args.recommender}; run make up\n"
            )
            return 1
        except ValueError as exc:
            sys.stderr.write(f"styleloop calibrate: {exc}\n")
            return 1
        for line in [*lines, f"written to {args.out}"]:
            sys.stdout.write(line + "\n")
        return 0

    parser.set_defaults(func=run)
