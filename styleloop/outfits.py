"""`styleloop train outfits` and `styleloop eval outfits`: outfit compatibility, learned and
measured in the Polyvore format (fill-in-the-blank and compatibility AUC).

Outfits file: the layout of fashion_compatibility_mcn's ``*_outfits.json`` (the sample's
``polyvore-t/valid_outfits.json``): outfit id → slot (upper, bottom, shoe, bag,
accessory) → ``{"name": ...}``. Text only: each item is its name through the prepared
encoder's text tower, the same vectors the recommender stores as caption vectors.

The questions, with a fixed seed:

* FITB: for every outfit and every slot, the true item against 3 items of the same slot
  from other outfits of the same file (chance 25%);
* compatibility AUC: every real outfit against a fake one in which each item is replaced
  by a random item of the same slot from another outfit.

Methods, measured side by side: ``random``; ``zero_shot_text`` (mean cosine of a candidate
to the rest of the outfit; an outfit's score is its mean pairwise cosine); ``trained`` (the
scorer ``train outfits`` wrote, exactly as the recommender serves it; an outfit's score is
the mean over its items of that item's score given the others).

Training splits the file by a hash of the outfit id into train (65%), tune (10%, early
stopping) and test (25%, reported); the split needs no state, and ``eval outfits`` on the
training file measures the test part unless ``--part`` says otherwise (on any other file,
the whole file).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.recommender.outfits import (
    SCORER_META,
    SLOTS,
    OutfitScorer,
    item_features,
    load_scorer,
    save_scorer,
    scorer_from_weights,
)
from styleloop.commands import add_command

PARTS = ("train", "tune", "test")
PART_SHARES = {"train": 0.65, "tune": 0.10, "test": 0.25}
FITB_CANDIDATES = 4
DEFAULT_OUTFITS = Path("polyvore-t") / "valid_outfits.json"


class OutfitsError(ValueError):
    """An outfits file or a scorer that cannot be used; the message says why."""


@dataclass(frozen=True)
class Outfit:
    outfit_id: str
    items: tuple[tuple[str, str], ...]  # (slot, name), in slot order


@dataclass(frozen=True)
class Outfits:
    path: Path
    digest: str
    outfits: list[Outfit]
    skipped: list[str]  # "outfit id: why", for outfits that were left out


def read_outfits(path: Path) -> Outfits:
    """The outfits of ``path``, each with its named items in known slots (an item without a
    name is left out); outfits with fewer than two are left out. ``skipped`` lists every
    outfit something was left out of, and why. :class:`OutfitsError` when the file is
    unusable."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise OutfitsError(f"{path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OutfitsError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise OutfitsError(f"{path}: expected an object of outfit id → slot → {{name}}")
    outfits, skipped = [], []
    for outfit_id, slots in data.items():
        if not isinstance(slots, dict):
            skipped.append(f"{outfit_id}: not an object of slots")
            continue
        items, problems = [], []
        for slot, entry in slots.items():
            name = entry.get("name") if isinstance(entry, dict) else None
            if slot not in SLOTS:
                problems.append(f"unknown slot {slot!r} (left out)")
            elif not isinstance(name, str) or not name.strip():
                problems.append(f"slot {slot!r} has no name (left out)")
            else:
                items.append((slot, " ".join(name.split())))
        if problems:
            skipped.append(f"{outfit_id}: {'; '.join(problems)}")
        if len(items) < 2:
            skipped.append(f"{outfit_id}: fewer than 2 items (left out)")
        else:
            items.sort(key=lambda item: SLOTS.index(item[0]))
            outfits.append(Outfit(str(outfit_id), tuple(items)))
    if not outfits:
        raise OutfitsError(f"{path}: no outfit with two or more named items in {', '.join(SLOTS)}")
    return Outfits(path, _digest(raw), outfits, skipped)


def _digest(raw: bytes) -> str:
    """An outfits file's identity in a scorer's metadata (``outfits_digest``)."""
    return hashlib.sha256(raw).hexdigest()[:16]


def configured_outfits(value: Path | None) -> Path | None:
    """``value``, else ``$STYLELOOP_OUTFITS``, else the sample's Polyvore file under
    ``$STYLELOOP_DATA_DIR`` when it is there."""
    if value is not None:
        return value
    if os.environ.get("STYLELOOP_OUTFITS"):
        return Path(os.environ["STYLELOOP_OUTFITS"])
    data = os.environ.get("STYLELOOP_DATA_DIR")
    found = Path(data) / DEFAULT_OUTFITS if data else None
    return found if found is not None and found.is_file() else None


def part_of(outfit_id: str) -> str:
    """train, tune or test: a pure function of the outfit id (stable, never leaks)."""
    bucket = int(hashlib.sha1(f"outfit:{outfit_id}".encode()).hexdigest(), 16) % 10_000 / 10_000
    if bucket < PART_SHARES["test"]:
        return "test"
    if bucket < PART_SHARES["test"] + PART_SHARES["tune"]:
        return "tune"
    return "train"


def select(outfits: Sequence[Outfit], part: str) -> list[Outfit]:
    return list(outfits) if part == "all" else [o for o in outfits if part_of(o.outfit_id) == part]


# ---------------------------------------------------------------------- questions


@dataclass(frozen=True)
class Fitb:
    context: tuple[tuple[str, str], ...]  # the rest of the outfit
    slot: str
    candidates: tuple[str, ...]  # the true item first


def _pools(outfits: Sequence[Outfit]) -> dict[str, list[tuple[str, str]]]:
    """Per slot, (outfit id, name) of every item, in file order."""
    pools: dict[str, list[tuple[str, str]]] = {s: [] for s in SLOTS}
    for outfit in outfits:
        for slot, name in outfit.items:
            pools[slot].append((outfit.outfit_id, name))
    return pools


def _draw(
    pool: Sequence[tuple[str, str]], outfit_id: str, avoid: set[str], rng: random.Random, k: int
) -> list[str]:
    """``k`` names from other outfits, none in ``avoid`` (bounded tries; may return fewer)."""
    out: list[str] = []
    for _ in range(50 * k):
        if len(out) == k:
            break
        other, name = pool[rng.randrange(len(pool))]
        if other != outfit_id and name not in avoid:
            out.append(name)
            avoid.add(name)
    return out


def fitb_questions(outfits: Sequence[Outfit], seed: int) -> list[Fitb]:
    rng = random.Random(seed)
    pools = _pools(outfits)
    questions = []
    for outfit in outfits:
        for slot, name in outfit.items:
            wrong = _draw(pools[slot], outfit.outfit_id, {name}, rng, FITB_CANDIDATES - 1)
            if len(wrong) < FITB_CANDIDATES - 1:
                continue  # a slot with too few other items in this file
            context = tuple(item for item in outfit.items if item != (slot, name))
            questions.append(Fitb(context, slot, (name, *wrong)))
    return questions


def fake_outfits(outfits: Sequence[Outfit], seed: int) -> list[tuple[tuple[str, str], ...]]:
    """Each outfit with every item replaced by a random item of the same slot."""
    rng = random.Random(seed + 1)
    pools = _pools(outfits)
    fakes = []
    for outfit in outfits:
        items = []
        for slot, name in outfit.items:
            drawn = _draw(pools[slot], outfit.outfit_id, {name}, rng, 1)
            items.append((slot, drawn[0] if drawn else name))
        fakes.append(tuple(items))
    return fakes


# ---------------------------------------------------------------------- features


class TextVectors:
    """Item names → the prepared encoder's text vectors (unit length), embedded in-process
    by the encoder's own code, cached per encoder version under ``cache``."""

    def __init__(self, models_dir: Path, cache: Path | None, progress: bool) -> None:
        from services.encoder.config import EncoderSettings
        from services.encoder.core import build_encoder
        from styleloop.runtime.errors import FailedPrecondition

        settings = EncoderSettings(models_dir=models_dir, encoder_backend="onnxruntime")
        try:
            self.encoder = build_encoder(settings)
        except FailedPrecondition as exc:
            raise OutfitsError(str(exc)) from exc
        # An encoder does not start again once stopped: each embed() after the first builds
        # a fresh one.
        self._settings = settings
        self._started = False
        self.model_version = self.encoder.spec.model_version
        self.cache = cache
        self.progress = progress
        self.vectors: dict[str, np.ndarray] = {}

    def _cache_file(self) -> Path | None:
        if self.cache is None:
            return None
        return self.cache / f"text-{self.model_version}.npz"

    def embed(self, names: Iterable[str]) -> None:
        from tqdm import tqdm

        from styleloop.runtime.errors import ItemFailure

        wanted = sorted(set(names) - set(self.vectors))
        cache = self._cache_file()
        if wanted and cache is not None and cache.is_file():
            with np.load(cache) as stored:
                known = dict(zip(stored["names"].tolist(), stored["vectors"], strict=True))
            self.vectors.update({n: known[n] for n in wanted if n in known})
            wanted = [n for n in wanted if n not in self.vectors]
        if not wanted:
            return

        if self._started:
            from services.encoder.core import build_encoder

            self.encoder = build_encoder(self._settings)
        self._started = True

        async def run() -> None:
            await self.encoder.start()
            try:
                size = self.encoder.settings.max_items_per_request
                bar = tqdm(
                    total=len(wanted), desc="embed names", unit="name", disable=not self.progress
                )
                for start in range(0, len(wanted), size):
                    batch = wanted[start : start + size]
                    for name, out in zip(batch, await self.encoder.embed_texts(batch), strict=True):
                        if isinstance(out, ItemFailure):
                            raise OutfitsError(f"the encoder refused {name!r}: {out.message}")
                        vector = np.asarray(out, np.float32)
                        self.vectors[name] = vector / max(float(np.linalg.norm(vector)), 1e-12)
                    bar.update(len(batch))
                bar.close()
            finally:
                await self.encoder.stop()

        asyncio.run(run())
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            names = sorted(self.vectors)
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, names=np.array(names), vectors=np.stack([self.vectors[n] for n in names]))
            tmp.replace(cache)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.vectors[name]


# ---------------------------------------------------------------------- methods

# A method scores FITB candidates given the rest of the outfit, and whole outfits.
FitbScorer = Callable[[Sequence[tuple[str, np.ndarray]], str, np.ndarray], np.ndarray]


def zero_shot(
    context: Sequence[tuple[str, np.ndarray]],
    slot: str,  # noqa: ARG001
    rows: np.ndarray,
) -> np.ndarray:
    """Mean cosine of each candidate to the rest of the outfit."""
    rest = np.stack([v for _, v in context])
    scores: np.ndarray = (rows @ rest.T).mean(axis=1)
    return scores


def random_scores(seed: int) -> FitbScorer:
    rng = np.random.default_rng(seed)

    def score(
        context: Sequence[tuple[str, np.ndarray]],  # noqa: ARG001
        slot: str,  # noqa: ARG001
        rows: np.ndarray,
    ) -> np.ndarray:
        scores: np.ndarray = rng.random(len(rows))
        return scores

    return score


@dataclass(frozen=True)
class Method:
    """A way to score FITB candidates and outfits, and the item features it reads (by item
    name; None: the name's text vector)."""

    score: FitbScorer
    features: Callable[[str], np.ndarray] | None = None


def served(scorer: OutfitScorer, vectors: TextVectors) -> Method:
    """The scorer as the recommender serves it: its features are the name's text vector and
    the name's words (the catalog's title)."""
    return Method(scorer.score, lambda name: scorer.features(vectors[name], name))


def outfit_score(method: FitbScorer, items: Sequence[tuple[str, np.ndarray]]) -> float:
    """An outfit's compatibility: the mean over its items of that item's score given the
    others (for the zero-shot method, the mean pairwise cosine)."""
    total = 0.0
    for i, (slot, vector) in enumerate(items):
        rest = [item for j, item in enumerate(items) if j != i]
        total += float(method(rest, slot, vector[None, :])[0])
    return total / len(items)


def auc(real: Sequence[float], fake: Sequence[float]) -> float:
    from sklearn.metrics import roc_auc_score

    labels = [1] * len(real) + [0] * len(fake)
    return float(roc_auc_score(labels, [*real, *fake]))


def evaluate(
    methods: Mapping[str, FitbScorer | Method],
    outfits: Sequence[Outfit],
    vectors: TextVectors,
    seed: int,
) -> dict[str, dict[str, float]]:
    """FITB accuracy (ties count as wrong) and compatibility AUC of every method."""
    questions = fitb_questions(outfits, seed)
    fakes = fake_outfits(outfits, seed)
    # Candidates and fake outfits are drawn from these outfits' items: one embed covers all.
    names = sorted({n for o in outfits for _, n in o.items})
    vectors.embed(names)

    results = {}
    for name, entry in methods.items():
        method = entry.score if isinstance(entry, Method) else entry
        get = entry.features if isinstance(entry, Method) else None
        table = {n: get(n) if get is not None else vectors[n] for n in names}

        def vec(
            items: Iterable[tuple[str, str]], table: Mapping[str, np.ndarray] = table
        ) -> list[tuple[str, np.ndarray]]:
            return [(s, table[n]) for s, n in items]

        right = 0
        for q in questions:
            scores = method(vec(q.context), q.slot, np.stack([table[c] for c in q.candidates]))
            right += int(scores[0] > max(scores[1:]))
        real = [outfit_score(method, vec(o.items)) for o in outfits]
        fake = [outfit_score(method, vec(f)) for f in fakes]
        results[name] = {
            "fitb_accuracy": right / len(questions) if questions else math.nan,
            "compatibility_auc": auc(real, fake),
            "fitb_questions": len(questions),
            "auc_outfits": len(outfits),
        }
    return results


# ---------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainConfig:
    rank: int = 16
    hidden: int = 128
    epochs: int = 200
    patience: int = 15
    lr: float = 2e-3
    weight_decay: float = 0.1
    keep: float = 0.75  # each context item is kept with this probability while training
    batch: int = 128
    seed: int = 0
    # Each item's words hashed into this many buckets beside its text vector (0: none).
    word_buckets: int = 1024
    word_weight: float = 1.5
    # Epochs (at most) of fine-tuning the backbone's text tower on the train part, summed
    # with the scorer (styleloop.outfit_tower; 0: the scorer alone, the default until `up`'s
    # extra ~15 min on 2 cores is settled; 12 was measured, README).
    tower_epochs: int = 0


def train_scorer(
    train: Sequence[Outfit],
    tune: Sequence[Outfit],
    vectors: TextVectors,
    config: TrainConfig,
    progress: bool,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Trains the scorer on ``train`` (softmax over every training item of the wanted slot),
    early-stopped on ``tune`` FITB accuracy; returns its weights and a training report."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True)
    vectors.embed(n for o in [*train, *tune] for _, n in o.items)
    names = sorted({n for o in train for _, n in o.items})
    index = {n: i for i, n in enumerate(names)}
    features = torch.tensor(
        np.stack(
            [item_features(vectors[n], n, config.word_buckets, config.word_weight) for n in names]
        )
    )
    d = features.shape[1]
    # Per slot: the training items of that slot (the softmax's candidates).
    by_slot = {s: sorted({index[n] for o in train for t, n in o.items if t == s}) for s in SLOTS}
    examples = [
        (
            SLOTS.index(slot),
            index[name],
            [(SLOTS.index(s), index[n]) for s, n in o.items if n != name],
        )
        for o in train
        for slot, name in o.items
    ]

    r, hdim, k = config.rank, config.hidden, len(SLOTS)
    g = torch.Generator().manual_seed(config.seed)
    params = {
        "candidate": torch.randn(k, r, d, generator=g) * 0.01,
        "context": torch.randn(k, k, r, d, generator=g) * 0.01,
        "w1": torch.randn(hdim, r, generator=g) * (1 / math.sqrt(r)),
        "b1": torch.zeros(hdim),
        "w2": torch.zeros(r, hdim),
        "alpha": torch.ones(1),
    }
    for p in params.values():
        p.requires_grad_(True)
    log_temperature = torch.tensor(math.log(0.05), requires_grad=True)
    optimiser = torch.optim.AdamW(
        [*params.values(), log_temperature], lr=config.lr, weight_decay=config.weight_decay
    )
    rng = random.Random(config.seed)
    width = max(len(c) for _, _, c in examples)
    # Which training items may answer a question of each slot (the softmax's candidates).
    allowed = torch.zeros(k, len(names), dtype=torch.bool)
    for s, members in by_slot.items():
        allowed[SLOTS.index(s), members] = True

    def queries(batch: Sequence[tuple[int, int, list[tuple[int, int]]]]) -> Any:
        """The scorer's query vectors for a batch, each context item kept with probability
        ``keep`` (at least one): the same formula as OutfitScorer.query, batched."""
        slots = torch.zeros(len(batch), width, dtype=torch.long)
        items = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width)
        for row, (_, _, context) in enumerate(batch):
            kept = [c for c in context if rng.random() < config.keep] or [rng.choice(context)]
            for col, (s, i) in enumerate(kept):
                slots[row, col], items[row, col], mask[row, col] = s, i, 1.0
        target = torch.tensor([t for t, _, _ in batch])
        f = features[items]  # (B, W, d)
        z = torch.einsum("bwrd,bwd->bwr", params["context"][slots, target[:, None]], f)
        count = mask.sum(1, keepdim=True)
        h = (z * mask[..., None]).sum(1) / count
        h = h + torch.relu(h @ params["w1"].T + params["b1"]) @ params["w2"].T
        mean_f = (f * mask[..., None]).sum(1) / count
        q = torch.einsum("brd,br->bd", params["candidate"][target], h)
        return q + params["alpha"][0] * mean_f, target

    def snapshot() -> dict[str, np.ndarray]:
        weights = {k_: v.detach().numpy().copy() for k_, v in params.items()}
        weights["word_weight"] = np.array([config.word_weight if config.word_buckets else 0.0])
        return weights

    def tune_accuracy(weights: dict[str, np.ndarray]) -> float:
        scorer = _scorer_from(weights, "tuning", vectors.model_version, config.word_buckets)
        return evaluate({"trained": served(scorer, vectors)}, tune, vectors, config.seed)[
            "trained"
        ]["fitb_accuracy"]

    best = tune_accuracy(snapshot())
    best_weights, best_epoch, stale, history = snapshot(), 0, 0, [best]
    started = time.monotonic()
    bar = tqdm(
        range(1, config.epochs + 1), desc="train outfits", unit="epoch", disable=not progress
    )
    for epoch in bar:
        rng.shuffle(examples)
        total = 0.0
        for start in range(0, len(examples), config.batch):
            batch = examples[start : start + config.batch]
            q, target = queries(batch)
            logits = (q @ features.T) / log_temperature.exp()
            logits = logits.masked_fill(~allowed[target], float("-inf"))
            answers = torch.tensor([i for _, i, _ in batch])
            loss = torch.nn.functional.cross_entropy(logits, answers)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        accuracy = tune_accuracy(snapshot())
        history.append(accuracy)
        if accuracy > best:
            best, best_weights, best_epoch, stale = accuracy, snapshot(), epoch, 0
        else:
            stale += 1
        bar.set_postfix(loss=f"{total / len(examples):.3f}", tune_fitb=f"{accuracy:.3f}")
        if stale >= config.patience:
            break
    bar.close()
    report = {
        "epochs_run": len(history) - 1,
        "best_epoch": best_epoch,
        "tune_fitb_start": history[0],
        "tune_fitb_best": best,
        "train_seconds": round(time.monotonic() - started, 1),
        "train_items": len(names),
        "train_questions": len(examples),
    }
    return best_weights, report


def _scorer_from(
    weights: Mapping[str, np.ndarray], scorer_id: str, model_version: str, word_buckets: int
) -> OutfitScorer:
    meta = {"scorer_id": scorer_id, "model_version": model_version, "word_buckets": word_buckets}
    return scorer_from_weights(weights, meta, "training")


def run_training(
    outfits_path: Path,
    models_dir: Path,
    out: Path | None = None,
    config: TrainConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains on the file's train part, reports on its test part, writes the scorer to
    ``out`` (default ``MODELS_DIR/outfits``); returns the scorer's metadata."""
    config = config or TrainConfig()
    data = read_outfits(outfits_path)
    parts = {p: select(data.outfits, p) for p in PARTS}
    for p in ("train", "tune"):
        if len(parts[p]) < 5:
            raise OutfitsError(
                f"{outfits_path}: only {len(parts[p])} outfits fall in the {p} part; "
                "training needs a file of at least ~50 outfits"
            )
    out = out or models_dir / "outfits"
    vectors = TextVectors(models_dir, out / "cache", progress)
    vectors.embed(n for o in data.outfits for _, n in o.items)  # one encoder start for all
    weights, report = train_scorer(parts["train"], parts["tune"], vectors, config, progress)
    scorer_id = f"outfits-{time.strftime('%Y%m%d-%H%M%S')}-{data.digest[:6]}"
    scorer = _scorer_from(weights, scorer_id, vectors.model_version, config.word_buckets)
    methods: dict[str, FitbScorer | Method] = {
        "zero_shot_text": zero_shot,
        "trained": served(scorer, vectors),
    }
    tower_meta: dict[str, Any] = {}
    if config.tower_epochs > 0:
        from styleloop.outfit_tower import (
            TowerConfig,
            export_tower,
            fine_tune_tower,
            load_backbone,
            pick_lambda,
            tower_methods,
            tower_vectors,
        )

        loaded = load_backbone(models_dir)
        tower_config = TowerConfig(epochs=config.tower_epochs, seed=config.seed)
        module, _, tower_report = fine_tune_tower(
            loaded, parts["train"], parts["tune"], tower_config, progress
        )
        export_tower(loaded, module, out / "tower", tower_config.max_length)
        tower = tower_vectors(out / "tower", data.outfits)
        lam, by_lambda = pick_lambda(scorer, vectors, tower, parts["tune"], config.seed)
        methods.update(tower_methods(scorer, vectors, tower, lam))
        tower_meta = {"lambda": lam, "tune_fitb_by_lambda": by_lambda, "training": tower_report}
    test = evaluate(methods, parts["test"], vectors, config.seed)
    meta = {
        "scorer_id": scorer_id,
        "model_version": vectors.model_version,
        "method": "type-aware bilinear + residual outfit layer"
        + (
            f" over text vectors + hashed words ({config.word_buckets})"
            if scorer.word_buckets
            else ""
        ),
        "word_buckets": scorer.word_buckets,
        "outfits_file": str(outfits_path),
        "outfits_digest": data.digest,
        "parts": {p: len(v) for p, v in parts.items()},
        "config": config.__dict__,
        "training": report,
        "tower": tower_meta,
        "test": test,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    save_scorer(out, weights, meta)
    return meta


def current_scorer(
    outfits_path: Path, scorer_dir: Path, model_version: str
) -> dict[str, Any] | None:
    """The metadata of the scorer in ``scorer_dir`` if it was trained on exactly this
    outfits file for ``model_version`` (and knows item words), else None (``up`` trains one
    only then)."""
    try:
        meta: dict[str, Any] = json.loads((scorer_dir / SCORER_META).read_text(encoding="utf-8"))
        raw = outfits_path.read_bytes()
    except (OSError, ValueError):
        return None
    current = (
        meta.get("model_version") == model_version
        and meta.get("outfits_digest") == _digest(raw)
        # Scorers from before item words existed are trained again once.
        and "word_buckets" in meta
    )
    return meta if current else None


def run_evaluation(
    outfits_path: Path,
    models_dir: Path,
    scorer_dir: Path | None,
    part: str,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    """Every method's FITB accuracy and AUC on ``part`` of the file ("auto": the test part
    of the file the scorer was trained on, else the whole file)."""
    data = read_outfits(outfits_path)
    scorer_dir = scorer_dir or models_dir / "outfits"
    vectors = TextVectors(models_dir, scorer_dir / "cache", progress)
    methods: dict[str, FitbScorer | Method] = {
        "random": random_scores(seed),
        "zero_shot_text": zero_shot,
    }
    scorer, why_not = load_scorer(scorer_dir, vectors.model_version)
    best = "trained" if scorer is not None else "zero_shot_text"
    if scorer is not None:
        methods["trained"] = served(scorer, vectors)
        lam = scorer.meta.get("tower", {}).get("lambda")
        if lam is not None:
            from styleloop.outfit_tower import tower_methods, tower_vectors

            tower = tower_vectors(scorer_dir / "tower", data.outfits)
            methods.update(tower_methods(scorer, vectors, tower, float(lam)))
            best = "trained_with_tower"
    trained_on_this = scorer is not None and scorer.meta.get("outfits_digest") == data.digest
    if part == "auto":
        part = "test" if trained_on_this else "all"
    chosen = select(data.outfits, part)
    if len(chosen) < 2:
        raise OutfitsError(f"{outfits_path}: {len(chosen)} outfits in the {part} part")
    results = evaluate(methods, chosen, vectors, seed)
    return {
        "outfits_file": str(outfits_path),
        "part": part,
        "outfits": len(chosen),
        "outfits_with_items_left_out": len(data.skipped),
        "seed": seed,
        "model_version": vectors.model_version,
        "served_method": scorer.method if scorer is not None else "zero_shot_text",
        "served_note": "" if scorer is not None else f"no trained scorer: {why_not}",
        "trained_on_this_file": trained_on_this,
        "fitb_accuracy": results[best]["fitb_accuracy"],
        "compatibility_auc": results[best]["compatibility_auc"],
        "methods": results,
    }


# ---------------------------------------------------------------------- commands


def _table(methods: Mapping[str, Mapping[str, float]]) -> list[str]:
    lines = [f"{'method':<20}{'FITB':>8}{'AUC':>8}{'questions':>11}"]
    for name, row in methods.items():
        lines.append(
            f"{name:<20}{row['fitb_accuracy']:>8.3f}{row['compatibility_auc']:>8.3f}"
            f"{row['fitb_questions']:>11}"
        )
    return lines


def _models_dir(value: Path | None) -> Path:
    return value or Path(os.environ.get("STYLELOOP_MODELS_DIR", ".models")) / "offline"


def _outfits_or_exit(value: Path | None, command: str) -> Path | None:
    path = configured_outfits(value)
    if path is None:
        sys.stderr.write(
            f"styleloop {command}: give --outfits FILE (or set STYLELOOP_OUTFITS, or "
            "STYLELOOP_DATA_DIR with polyvore-t/valid_outfits.json)\n"
        )
    return path


def _file_arguments(parser: argparse.ArgumentParser, scorer_flag: str) -> None:
    """The outfits file, prepared models and scorer folder both commands take."""
    parser.add_argument("--outfits", type=Path, help="outfits file (default: the sample's)")
    parser.add_argument("--models-dir", type=Path, help="prepared models (default .models/offline)")
    parser.add_argument(scorer_flag, type=Path, help="scorer folder (default MODELS_DIR/outfits)")


def register_train(commands: Any) -> None:
    """``styleloop train outfits``: added to the train group by :mod:`styleloop.cli`."""
    parser = add_command(
        commands, "outfits", __doc__, help="train the outfit compatibility scorer (Polyvore)"
    )
    _file_arguments(parser, "--out")
    defaults = TrainConfig()
    parser.add_argument(
        "--rank", type=int, default=defaults.rank, help=f"context size r ({defaults.rank})"
    )
    parser.add_argument("--hidden", type=int, default=defaults.hidden, help="0: no outfit layer")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="at most")
    parser.add_argument(
        "--patience",
        type=int,
        default=defaults.patience,
        help=f"epochs without a better tune FITB before stopping ({defaults.patience})",
    )
    parser.add_argument(
        "--lr", type=float, default=defaults.lr, help=f"AdamW learning rate ({defaults.lr})"
    )
    parser.add_argument(
        "--keep",
        type=float,
        default=defaults.keep,
        help=f"chance each context item is kept while training ({defaults.keep})",
    )
    parser.add_argument(
        "--word-buckets",
        type=int,
        default=defaults.word_buckets,
        help="buckets the item's words are hashed into beside its text vector "
        f"({defaults.word_buckets}; 0: the text vector alone)",
    )
    parser.add_argument(
        "--word-weight",
        type=float,
        default=defaults.word_weight,
        help=f"weight of the words part against the text vector ({defaults.word_weight})",
    )
    parser.add_argument(
        "--tower-epochs",
        type=int,
        default=defaults.tower_epochs,
        help="at most this many epochs fine-tuning the encoder's text tower on the outfits, "
        f"summed with the scorer ({defaults.tower_epochs}: the scorer alone; 12 measured, "
        "~80 s an epoch with the offline preset on 2 cores)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--no-progress", action="store_true")

    def run(args: argparse.Namespace) -> int:
        path = _outfits_or_exit(args.outfits, "train outfits")
        if args.word_buckets < 0 or args.word_weight <= 0:
            sys.stderr.write(
                "styleloop train outfits: --word-buckets must be 0 or more and "
                "--word-weight above 0\n"
            )
            return 2
        if path is None:
            return 2
        config = TrainConfig(
            rank=args.rank,
            hidden=args.hidden,
            epochs=args.epochs,
            patience=args.patience,
            lr=args.lr,
            keep=args.keep,
            seed=args.seed,
            word_buckets=args.word_buckets,
            word_weight=args.word_weight,
            tower_epochs=max(args.tower_epochs, 0),
        )
        try:
            meta = run_training(
                path, _models_dir(args.models_dir), args.out, config, not args.no_progress
            )
        except OutfitsError as exc:
            sys.stderr.write(f"styleloop train outfits: {exc}\n")
            return 2
        t = meta["training"]
        print(  # noqa: T201 - the command's output
            f"scorer {meta['scorer_id']} for encoder {meta['model_version']}: "
            f"{meta['parts']['train']} train / {meta['parts']['tune']} tune / "
            f"{meta['parts']['test']} test outfits; best epoch {t['best_epoch']} of "
            f"{t['epochs_run']}, tune FITB {t['tune_fitb_start']:.3f} -> "
            f"{t['tune_fitb_best']:.3f}, "
            f"{t['train_seconds']} s"
        )
        print("test part:")  # noqa: T201
        for line in _table(meta["test"]):
            print("  " + line)  # noqa: T201
        return 0

    parser.set_defaults(func=run)


def register_eval(commands: Any) -> None:
    """``styleloop eval outfits``: added to the eval group by :mod:`styleloop.cli`."""
    parser = add_command(
        commands, "outfits", __doc__, help="FITB accuracy and compatibility AUC, with baselines"
    )
    _file_arguments(parser, "--scorer")
    parser.add_argument(
        "--part",
        choices=("auto", "all", *PARTS),
        default="auto",
        help="auto: the test part of the file the scorer was trained on, else the whole file",
    )
    parser.add_argument("--seed", type=int, default=0, help="draws the FITB candidates and fakes")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--no-progress", action="store_true")

    def run(args: argparse.Namespace) -> int:
        path = _outfits_or_exit(args.outfits, "eval outfits")
        if path is None:
            return 2
        try:
            result = run_evaluation(
                path,
                _models_dir(args.models_dir),
                args.scorer,
                args.part,
                args.seed,
                not args.no_progress,
            )
        except OutfitsError as exc:
            sys.stderr.write(f"styleloop eval outfits: {exc}\n")
            return 2
        print(  # noqa: T201 - the command's output
            f"{result['outfits_file']} ({result['part']}: {result['outfits']} outfits, "
            f"seed {result['seed']}, encoder {result['model_version']}); served: "
            f"{result['served_method']}"
        )
        if result["served_note"]:
            print(f"  {result['served_note']}")  # noqa: T201
        for line in _table(result["methods"]):
            print("  " + line)  # noqa: T201
        if args.json is not None:
            args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        return 0

    parser.set_defaults(func=run)
