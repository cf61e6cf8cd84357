"""Outfit compatibility: the trained scorer ``CompleteOutfit`` ranks candidates with, and the
slots (Polyvore's ``upper``, ``bottom``, ``shoe``, ``bag``, ``accessory``) catalog
categories belong to. numpy only: the recommender serves it without torch.

The scorer (``styleloop train outfits``) is a type-aware bilinear model over the encoder's
text vectors (an item's caption vector in the store, a Polyvore item's name through the
same encoder): for a wanted slot ``t`` and the outfit's items ``(s_i, f_i)``::

    h = mean_i B[s_i, t] f_i                       (rank-r context, one matrix per slot pair)
    h = h + W2 relu(W1 h + b1)                      (a residual layer over the whole outfit)
    q = C[t]^T h + alpha * mean_i f_i               (back into the vector space)
    score(candidate) = f_candidate . q

It is linear in the candidate's vector, so ranking a whole category is one nearest-vector
query for ``q`` against the stored caption vectors (the store's cosine distance divides by
``|q|``, which is the same for every candidate and leaves the order as the scorer's): every
item of the category is scored, not a re-ranked head.

A scorer is tied to one encoder model version: vectors of another model mean nothing to it,
and the recommender then falls back to summed vector similarity and says why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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

    @property
    def method(self) -> str:
        return f"trained:{self.scorer_id}"

    def query(self, outfit: Sequence[tuple[str, np.ndarray]], wanted: str) -> np.ndarray:
        """The vector ``q`` whose dot product with a candidate's vector of slot ``wanted`` is
        its compatibility with ``outfit`` (``(slot, vector)`` pairs, at least one)."""
        if not outfit:
            raise ValueError("an outfit needs at least one item")
        t = SLOTS.index(wanted)
        slots = np.array([SLOTS.index(s) for s, _ in outfit])
        f = _unit(np.stack([np.asarray(v, np.float32) for _, v in outfit]))
        z = np.einsum("nrd,nd->nr", self.context[slots, t], f)
        h = z.mean(axis=0)
        h = h + self.w2 @ np.maximum(self.w1 @ h + self.b1, 0.0)
        q: np.ndarray = self.candidate[t].T @ h + self.alpha * f.mean(axis=0)
        return q.astype(np.float32)

    def score(
        self, outfit: Sequence[tuple[str, np.ndarray]], wanted: str, candidates: np.ndarray
    ) -> np.ndarray:
        """Compatibility of each candidate (rows of vectors) of slot ``wanted``."""
        scores: np.ndarray = _unit(np.asarray(candidates, np.float32)) @ self.query(outfit, wanted)
        return scores


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
            weights = {k: w[k] for k in ("candidate", "context", "w1", "b1", "w2", "alpha")}
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, ScorerError):
            raise
        raise ScorerError(f"{folder}: the outfit scorer cannot be read ({exc})") from exc
    dimension = int(weights["candidate"].shape[-1])
    if weights["context"].shape[:2] != (len(SLOTS), len(SLOTS)):
        raise ScorerError(f"{folder}: the outfit scorer's context weights have the wrong shape")
    return OutfitScorer(
        scorer_id=str(meta["scorer_id"]),
        model_version=str(meta["model_version"]),
        dimension=dimension,
        candidate=weights["candidate"],
        context=weights["context"],
        w1=weights["w1"],
        b1=weights["b1"],
        w2=weights["w2"],
        alpha=float(weights["alpha"].reshape(-1)[0]),
        meta=meta,
    )


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
