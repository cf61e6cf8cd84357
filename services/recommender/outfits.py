"""Outfit compatibility: the trained scorer ``CompleteOutfit`` ranks candidates with, and the
slots (Polyvore's ``upper``, ``bottom``, ``shoe``, ``bag``, ``accessory``) catalog
categories belong to. numpy only: the recommender serves it without torch.

The scorer (``styleloop train outfits``) is a type-aware bilinear model over item features:
an item's text vector from the encoder (its caption vector in the store, a Polyvore item's
name through the same encoder), unit length, followed by ``word_weight`` times the item's
words (its title or name) hashed into ``word_buckets`` signed buckets, unit length (no
words part when ``word_buckets`` is 0). For a wanted slot ``t`` and the outfit's items
``(s_i, f_i)``::

    h = mean_i B[s_i, t] f_i                       (rank-r context, one matrix per slot pair)
    h = h + W2 relu(W1 h + b1)                      (a residual layer over the whole outfit)
    q = C[t]^T h + alpha * mean_i f_i               (back into the feature space)
    score(candidate) = f_candidate . q

It is linear in the candidate's features. Without words, ranking a whole category is one
nearest-vector query for ``q`` against the stored caption vectors (the store's cosine
distance divides by ``|q|``, the same for every candidate). With words, the caption part of
the score comes from the store in order and the words part is bounded by
``word_weight * |q_words|``, so :func:`exact_top` reads deeper heads until no item below
them could still enter the page: every item of the category is scored either way, exactly.
(Measured, the bound rarely stops the read early, so after a first head the whole category
is read: ~25 ms for 1,500 shoes and ~80 ms for 4,000 tops of the sample catalog.)

A scorer is tied to one encoder model version: vectors of another model mean nothing to it,
and the recommender then falls back to summed vector similarity and says why.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SLOTS = ("upper", "bottom", "shoe", "bag", "accessory")
SCORER_FORMAT = 1
SCORER_META = "scorer.json"
SCORER_WEIGHTS = "scorer.npz"

# A catalog category (the Myntra sub-category, or a Polyvore semantic category) → its slot.
# Lower-cased on lookup. Categories that are no part of an outfit (innerwear, fragrance …)
# have no slot.
CATEGORY_SLOTS: Mapping[str, str] = {
    # Myntra (the sample catalog's sub_category)
    "topwear": "upper",
    "apparel set": "upper",
    "bottomwear": "bottom",
    "dress": "bottom",
    "saree": "bottom",
    "shoes": "shoe",
    "sandal": "shoe",
    "flip flops": "shoe",
    "bags": "bag",
    "wallets": "bag",
    "accessories": "accessory",
    "belts": "accessory",
    "cufflinks": "accessory",
    "eyewear": "accessory",
    "gloves": "accessory",
    "headwear": "accessory",
    "jewellery": "accessory",
    "mufflers": "accessory",
    "scarves": "accessory",
    "stoles": "accessory",
    "ties": "accessory",
    "watches": "accessory",
    "umbrellas": "accessory",
    "socks": "accessory",
    # Myntra article types, for catalogs whose category is one
    **{
        t: "upper"
        for t in (
            "tshirts",
            "shirts",
            "tops",
            "sweaters",
            "sweatshirts",
            "jackets",
            "blazers",
            "kurtas",
            "kurtis",
            "tunics",
            "waistcoat",
        )
    },
    **{
        t: "bottom"
        for t in (
            "jeans",
            "trousers",
            "shorts",
            "skirts",
            "track pants",
            "leggings",
            "capris",
            "dresses",
            "jumpsuit",
        )
    },
    **{
        t: "shoe"
        for t in (
            "casual shoes",
            "sports shoes",
            "formal shoes",
            "heels",
            "flats",
            "sandals",
            "sports sandals",
            "boots",
            "sneakers",
        )
    },
    **{
        t: "bag"
        for t in (
            "handbags",
            "backpacks",
            "clutches",
            "laptop bag",
            "messenger bag",
            "duffel bag",
            "rucksacks",
        )
    },
    **{
        t: "accessory"
        for t in (
            "sunglasses",
            "caps",
            "hats",
            "earrings",
            "necklace and chains",
            "bracelet",
            "ring",
            "pendant",
            "scarves",
        )
    },
    # Polyvore Outfits' semantic categories
    "tops": "upper",
    "outerwear": "upper",
    "bottoms": "bottom",
    "all-body": "bottom",
    "bag": "bag",
    "jewelry": "accessory",
    "sunglasses": "accessory",
    "hats": "accessory",
    # the slots themselves
    **{slot: slot for slot in SLOTS},
}


def slot_of(category: str) -> str | None:
    """The outfit slot of a catalog category, or None when it is no part of an outfit."""
    return CATEGORY_SLOTS.get(category.strip().lower())


class ScorerError(ValueError):
    """A scorer folder that cannot be loaded; the message says why."""


@dataclass(frozen=True)
class OutfitScorer:
    """The trained compatibility scorer (see the module docstring for the formula)."""

    scorer_id: str
    model_version: str
    dimension: int
    candidate: np.ndarray  # C: (slots, r, d)
    context: np.ndarray  # B: (slots, slots, r, d), indexed [source, target]
    w1: np.ndarray  # (hidden, r)
    b1: np.ndarray  # (hidden,)
    w2: np.ndarray  # (r, hidden)
    alpha: float
    meta: Mapping[str, Any]
    word_buckets: int = 0  # 0: the text vector alone
    word_weight: float = 0.0

    @property
    def method(self) -> str:
        return f"trained:{self.scorer_id}"

    def features(self, vector: Sequence[float] | np.ndarray, text: str) -> np.ndarray:
        """An item's features: its text vector (``dimension``-d) and title or name."""
        return item_features(vector, text, self.word_buckets, self.word_weight)

    def query(self, outfit: Sequence[tuple[str, np.ndarray]], wanted: str) -> np.ndarray:
        """The vector ``q`` whose dot product with a candidate's features (of slot
        ``wanted``) is its compatibility with ``outfit``: ``(slot, features)`` pairs, at
        least one, each from :meth:`features`."""
        if not outfit:
            raise ValueError("an outfit needs at least one item")
        t = SLOTS.index(wanted)
        slots = np.array([SLOTS.index(s) for s, _ in outfit])
        f = np.stack([np.asarray(v, np.float32) for _, v in outfit])
        z = np.einsum("nrd,nd->nr", self.context[slots, t], f)
        h = z.mean(axis=0)
        h = h + self.w2 @ np.maximum(self.w1 @ h + self.b1, 0.0)
        q: np.ndarray = self.candidate[t].T @ h + self.alpha * f.mean(axis=0)
        return q.astype(np.float32)

    def score(
        self, outfit: Sequence[tuple[str, np.ndarray]], wanted: str, candidates: np.ndarray
    ) -> np.ndarray:
        """Compatibility of each candidate (rows of features) of slot ``wanted``."""
        scores: np.ndarray = np.asarray(candidates, np.float32) @ self.query(outfit, wanted)
        return scores


_WORD = re.compile(r"[a-z0-9]+")


@functools.lru_cache(maxsize=65_536)
def word_vector(text: str, buckets: int) -> np.ndarray:
    """The text's distinct words (lower-cased runs of letters and digits) hashed into
    ``buckets`` signed buckets (blake2b: the same in every process), unit length; zeros when
    it has none. Cached (a catalog's titles repeat from query to query), so read-only."""
    out = np.zeros(buckets, np.float32)
    for word in set(_WORD.findall(text.lower())):
        digest = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
        out[digest % buckets] += 1.0 if (digest >> 32) & 1 else -1.0
    norm = float(np.linalg.norm(out))
    if norm > 0:
        out /= norm
    out.setflags(write=False)
    return out


def item_features(
    vector: Sequence[float] | np.ndarray, text: str, buckets: int, weight: float
) -> np.ndarray:
    """``[unit(vector), weight * word_vector(text)] / sqrt(1 + weight²)`` (unit length when
    the text has words), or ``unit(vector)`` alone when ``buckets`` is 0: what the scorer
    reads for an item."""
    unit = _unit(np.asarray(vector, np.float32))
    if buckets <= 0:
        return unit
    both = np.concatenate([unit, weight * word_vector(text, buckets)]) / word_scale(weight)
    return both.astype(np.float32)


def word_scale(weight: float) -> float:
    """The norm of an item's features with words, before :func:`item_features` divides it."""
    return float(np.sqrt(1.0 + weight * weight))


@dataclass(frozen=True)
class Ranked:
    """A candidate as :func:`exact_top` returns it: its features score and what the store
    gave for it."""

    key: str
    score: float
    row: Any


def exact_top(
    scorer: OutfitScorer,
    q: np.ndarray,
    head: Callable[[list[float], int], list[tuple[str, float, str, Any]]],
    count: int,
    total: Callable[[], int],
    extra: Callable[[list[str]], np.ndarray] | None = None,
    extra_bound: float = 0.0,
) -> list[Ranked]:
    """The ``count`` best candidates under ``q``, exactly, ties by key.

    ``head(vector, n)`` returns the store's ``n`` items nearest ``vector`` by cosine over
    their text vectors, best first, as ``(key, cosine, title, row)``; ``total()`` how many
    items there are. Without words that order is the scorer's. With words, a candidate's
    score is ``(|q_text| * cosine`` plus its words part``) / word_scale``, and the words part
    is at most ``word_weight * |q_words|``: the first head (twice the page, at least 64) is
    enough when the ``count``-th best score read is at least the best any unread item could
    reach; otherwise every item is read (measured: a middle depth almost never suffices,
    and each read costs about as much as its size).

    ``extra(titles)``, when given, adds a term per candidate (the outfit tower's weighted
    cosine, :mod:`styleloop.outfit_tower`) whose absolute value is at most ``extra_bound``
    (0 without it): the head then also reads on while an unread item could still enter by
    it."""
    d = scorer.dimension
    dense, words = q[:d], q[d:]
    scale = float(np.linalg.norm(dense))
    bound = scorer.word_weight * float(np.linalg.norm(words)) if scorer.word_buckets else 0.0
    c = 1.0 / word_scale(scorer.word_weight) if scorer.word_buckets else 1.0
    exact_order = not scorer.word_buckets and extra is None  # the store's order is the score's
    size = count if exact_order else max(2 * count, 64)
    everything = False
    while True:
        rows = head(dense.tolist(), size)
        added = extra([title for _, _, title, _ in rows]) if extra is not None and rows else None
        ranked = []
        for n, (key, cosine, title, row) in enumerate(rows):
            score = scale * cosine
            if scorer.word_buckets:
                score += scorer.word_weight * float(word_vector(title, scorer.word_buckets) @ words)
            score *= c
            if added is not None:
                score += float(added[n])
            ranked.append(Ranked(key, score, row))
        ranked.sort(key=lambda r: (-r.score, r.key))
        if len(rows) < size or exact_order or everything:
            return ranked[:count]
        reachable = c * (scale * rows[-1][1] + bound) + extra_bound
        if len(ranked) >= count and ranked[count - 1].score >= reachable:
            return ranked[:count]
        # Every item next (and no more reads after it, even if items arrive meanwhile).
        everything, size = True, max(total(), size + 1)


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    out: np.ndarray = rows / np.maximum(norms, 1e-12)
    return out


def save_scorer(folder: Path, weights: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """Writes weights then metadata (the metadata's presence marks a complete scorer)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SCORER_META).unlink(missing_ok=True)
    tmp = folder / "scorer.tmp.npz"
    arrays: dict[str, Any] = {k: np.asarray(v, np.float32) for k, v in weights.items()}
    np.savez(tmp, **arrays)
    tmp.replace(folder / SCORER_WEIGHTS)
    body = {"format": SCORER_FORMAT, "slots": list(SLOTS), **meta}
    (folder / "scorer.json.tmp").write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    (folder / "scorer.json.tmp").replace(folder / SCORER_META)


def read_scorer(folder: Path) -> OutfitScorer:
    """The scorer in ``folder``; :class:`ScorerError` when it is missing or unreadable."""
    meta_path = folder / SCORER_META
    if not meta_path.is_file():
        raise ScorerError(f"no trained outfit scorer in {folder} (styleloop train outfits)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != SCORER_FORMAT or list(meta.get("slots", [])) != list(SLOTS):
            raise ScorerError(f"{meta_path}: an outfit scorer of another format; train it again")
        with np.load(folder / SCORER_WEIGHTS) as w:
            weights = {k: w[k] for k in w.files}
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, ScorerError):
            raise
        raise ScorerError(f"{folder}: the outfit scorer cannot be read ({exc})") from exc
    return scorer_from_weights(weights, meta, str(folder))


def scorer_from_weights(
    weights: Mapping[str, np.ndarray], meta: Mapping[str, Any], where: str
) -> OutfitScorer:
    """The scorer these weights and metadata (``scorer_id``, ``model_version``,
    ``word_buckets``) make, as :func:`read_scorer` reads it and training evaluates it;
    :class:`ScorerError` naming ``where`` when they do not fit together."""
    try:
        matrices = {k: weights[k] for k in ("candidate", "context", "w1", "b1", "w2", "alpha")}
    except KeyError as exc:
        raise ScorerError(f"{where}: the outfit scorer cannot be read ({exc})") from exc
    # Scorers without words (written before they existed) have no word_weight.
    word_weight = (
        float(np.asarray(weights["word_weight"]).reshape(-1)[0])
        if "word_weight" in weights
        else 0.0
    )
    word_buckets = int(meta.get("word_buckets", 0)) if word_weight else 0
    if word_weight and word_buckets < 1:
        raise ScorerError(f"{where}: a scorer with item words needs word_buckets above 0")
    dimension = int(matrices["candidate"].shape[-1]) - word_buckets
    if matrices["context"].shape[:2] != (len(SLOTS), len(SLOTS)) or dimension < 1:
        raise ScorerError(f"{where}: the outfit scorer's weights have the wrong shape")
    return OutfitScorer(
        scorer_id=str(meta["scorer_id"]),
        model_version=str(meta["model_version"]),
        dimension=dimension,
        candidate=np.asarray(matrices["candidate"], np.float32),
        context=np.asarray(matrices["context"], np.float32),
        w1=np.asarray(matrices["w1"], np.float32),
        b1=np.asarray(matrices["b1"], np.float32),
        w2=np.asarray(matrices["w2"], np.float32),
        alpha=float(np.asarray(matrices["alpha"]).reshape(-1)[0]),
        meta=meta,
        word_buckets=word_buckets,
        word_weight=word_weight,
    )


TOWER_ONNX = "tower.onnx"
TOWER_TOKENIZER = "tower-tokenizer.json"
TOWER_META = "tower.json"


class TowerEmbedder:
    """Names or titles → the exported tower's vectors (onnxruntime; no torch)."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        if not (folder / TOWER_ONNX).is_file():
            raise ScorerError(f"no fine-tuned outfit tower in {folder}")
        self.session = onnxruntime.InferenceSession(
            str(folder / TOWER_ONNX), providers=["CPUExecutionProvider"]
        )
        meta = json.loads((folder / TOWER_META).read_text(encoding="utf-8"))
        self.tokenizer = Tokenizer.from_file(str(folder / TOWER_TOKENIZER))
        self.tokenizer.enable_truncation(int(meta["max_length"]))
        self.tokenizer.enable_padding(pad_id=int(meta["pad_id"]))

    def __call__(self, texts: Sequence[str], batch: int = 256) -> np.ndarray:
        rows = []
        for start in range(0, len(texts), batch):
            encodings = self.tokenizer.encode_batch(list(texts[start : start + batch]))
            feeds = {
                "input_ids": np.asarray([e.ids for e in encodings], np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in encodings], np.int64),
            }
            rows.append(np.asarray(self.session.run(None, feeds)[0], np.float32))
        return np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)


def load_scorer(folder: Path | None, model_version: str) -> tuple[OutfitScorer | None, str]:
    """The scorer to serve for ``model_version``, or None and why not (for the log and the
    response's fallback reason)."""
    if folder is None:
        return None, "no outfit scorer configured (OUTFIT_SCORER_DIR)"
    try:
        scorer = read_scorer(folder)
    except ScorerError as exc:
        return None, str(exc)
    if scorer.model_version != model_version:
        return None, (
            f"the outfit scorer in {folder} was trained on encoder {scorer.model_version}, "
            f"not on {model_version} (the encoder in use)"
        )
    return scorer, ""
