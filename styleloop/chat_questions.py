"""Shopper questions built from a catalog's real attribute combinations, with the truth
of each: which constraints it asks for, which items meet all of them, and whether the
catalog can answer it at all. `styleloop eval chat` asks them; `styleloop train stylist`
learns from the other split.

Kinds: ``brand_season`` ("Can you recommend clothes based on Puma fall 2011?"),
``brand_type_gender`` ("Nike sports shoes for men"), ``colour_type`` ("any black
jeans?"), ``usage_type_gender`` ("formal shirts for men"); and what the catalog cannot
serve: ``lacks_brand`` ("… Prada fw23?"), ``lacks_garment`` ("do you have swimwear?"),
``lacks_year`` ("Puma fall 2031"), ``no_match`` (each part exists, no item is all of
them), ``not_sold`` ("do you have a lawn mower?": what a fashion store does not sell, in
no vocabulary — only a calibrated similarity threshold can tell). The split is by
combination (a hash of it), so no evaluated combination was seen in training, whatever
the phrasing; `styleloop calibrate` draws its threshold from the train split.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from styleloop.vocabulary import article_noun

Split = Literal["train", "eval"]
EVAL_SHARE = 0.25
GENDER_WORDS = {"Men": "men", "Women": "women", "Boys": "boys", "Girls": "girls"}
SEASON_WORDS = {"Fall": "fall", "Winter": "winter", "Spring": "spring", "Summer": "summer"}
ABSENT_BRANDS = ("Prada", "Gucci", "Zara", "Chanel", "Versace", "Balenciaga", "Uniqlo")
# Garments a fashion catalog may lack; the eval counts them only when no item is one.
ABSENT_GARMENTS = (
    ("swimwear", ("swimwear", "swimsuit", "bikini")),
    ("a bikini", ("bikini", "swimwear")),
    ("a raincoat", ("raincoat",)),
    ("a tuxedo", ("tuxedo", "suit")),
    ("a jumpsuit", ("jumpsuit",)),
    ("an umbrella", ("umbrella",)),
)

# Things a fashion catalog does not sell; each counts only when none of its words is in
# the catalog's titles or types ("a football" is out where football shoes are in).
NOT_SOLD = (
    "a laptop", "a garden hose", "dog food", "a coffee machine", "car tyres", "a sofa",
    "a smartphone charger", "a tennis racket", "a microwave oven", "wall paint", "a bicycle",
    "printer ink", "a power drill", "a mattress", "an acoustic guitar", "a lawn mower",
    "a fridge", "a toaster", "a vacuum cleaner", "kitchen knives", "a desk lamp",
    "a fishing rod", "a camping tent", "potting soil", "a car battery", "a board game",
    "cat litter", "a baby stroller", "an office chair", "a frying pan", "a bookshelf",
    "a television", "golf clubs", "a skateboard", "a water heater", "light bulbs",
    "a blender", "an air conditioner", "a dishwasher", "a hammer", "screws and nails",
    "a printer", "house plants", "a kettle", "a barbecue grill", "a chess set",
)  # fmt: skip
NOT_SOLD_TEMPLATES = (
    "do you have {thing}?",
    "I need {thing}",
    "I'm looking for {thing}",
    "show me {thing} please",
)

BRAND_SEASON = (
    "Can you recommend clothes based on {brand} {season} {year}?",
    "What do you have from {owner} {season} {year} collection?",
    "Show me {brand} {season} {year}",
    "I like {brand}. Anything from {season} {year}?",
)
BRAND_TYPE_GENDER = (
    "{brand} {noun} for {gender}",
    "I'm looking for {noun} by {brand} for {gender}",
    "Do you have {brand} {noun} for {gender}?",
)
COLOUR_TYPE = ("any {colour} {noun}?", "I want {colour} {noun}", "show me {colour} {noun} please")
USAGE_TYPE_GENDER = ("{usage} {noun} for {gender}", "I need {usage} {noun} for {gender}")
LACKS_BRAND = (
    "Can you recommend clothes based on {brand} fw23?",
    "Do you have anything by {brand}?",
    "{brand} {noun} for {gender}",
)
LACKS_GARMENT = ("do you have {garment}?", "I need {garment} for the beach")
LACKS_YEAR = ("Can you recommend clothes based on {brand} {season} 2031?",)


@dataclass(frozen=True)
class Question:
    text: str
    kind: str
    constraints: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    matching: tuple[str, ...] = ()  # ids of the items that meet every constraint
    answerable: bool = True

    def meets(self, item: Mapping[str, Any]) -> bool:
        """Whether an item meets every constraint the question asks for. A brand is met by
        the brand's family too ("Arrow" by "Arrow Sport", "ADIDAS" by "ADIDAS Originals"),
        as a shopper means it."""
        return all(
            _meets(f, str(item.get(f, "")), values) for f, values in self.constraints.items()
        )


def _meets(field_name: str, value: str, allowed: Sequence[str]) -> bool:
    if field_name == "brand":
        low = value.lower()
        return any(low == a.lower() or low.startswith(a.lower() + " ") for a in allowed)
    return value in allowed


def _bucket(kind: str, key: Sequence[str]) -> Split:
    digest = hashlib.sha256("|".join([kind, *key]).encode()).digest()
    return "eval" if digest[0] < 256 * EVAL_SHARE else "train"


def _possessive(name: str) -> str:
    if name.endswith("'s"):
        return name
    return name + ("'" if name.endswith("s") else "'s")


def _plural(article_type: str) -> str:
    noun, plural = article_noun(article_type)
    if plural or noun.endswith("s"):
        return noun
    return noun + ("es" if noun.endswith(("sh", "ch", "x")) else "s")


def _combos(
    rows: Sequence[Mapping[str, Any]], fields: Sequence[str]
) -> dict[tuple[str, ...], list[str]]:
    found: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for item in rows:
        key = tuple(str(item.get(f, "")) for f in fields)
        if all(key):
            found[key].append(str(item["item_id"]))
    return found


def build_questions(
    rows: Iterable[Mapping[str, Any]],
    split: Split,
    *,
    per_kind: int = 10,
    seed: int = 0,
    min_items: int = 3,
) -> list[Question]:
    """Up to ``per_kind`` questions of each kind from ``split``, reproducibly."""
    items = [dict(r) for r in rows]
    rng = random.Random(f"{seed}:{split}")
    brands = Counter(str(i.get("brand", "")) for i in items if i.get("brand"))
    carried = {b.lower() for b in brands}
    out: list[Question] = []

    def pick(
        kind: str,
        fields: Sequence[str],
        templates: Sequence[str],
        render: Any,
        constraints: Any,
    ) -> None:
        combos = [
            (k, v)
            for k, v in sorted(_combos(items, fields).items())
            if len(v) >= min_items and _bucket(kind, k) == split
        ]
        rng.shuffle(combos)
        for key, ids in combos[:per_kind]:
            text = rng.choice(templates).format(**render(key))
            out.append(Question(text, kind, constraints(key), tuple(ids)))

    pick(
        "brand_season",
        ("brand", "season", "year"),
        BRAND_SEASON,
        lambda k: {
            "brand": k[0],
            "owner": _possessive(k[0]),
            "season": SEASON_WORDS.get(k[1], k[1].lower()),
            "year": k[2],
        },
        lambda k: {"brand": (k[0],), "season": (k[1],), "year": (k[2],)},
    )
    pick(
        "brand_type_gender",
        ("brand", "article_type", "gender"),
        BRAND_TYPE_GENDER,
        lambda k: {"brand": k[0], "noun": _plural(k[1]), "gender": GENDER_WORDS.get(k[2], "")},
        lambda k: {"brand": (k[0],), "article_type": (k[1],), "gender": (k[2],)},
    )
    pick(
        "colour_type",
        ("colour", "article_type"),
        COLOUR_TYPE,
        lambda k: {"colour": k[0].lower(), "noun": _plural(k[1])},
        lambda k: {"colour": (k[0],), "article_type": (k[1],)},
    )
    pick(
        "usage_type_gender",
        ("usage", "article_type", "gender"),
        USAGE_TYPE_GENDER,
        lambda k: {
            "usage": k[0].lower(),
            "noun": _plural(k[1]),
            "gender": GENDER_WORDS.get(k[2], ""),
        },
        lambda k: {"usage": (k[0],), "article_type": (k[1],), "gender": (k[2],)},
    )
    # No "casual casual shoes", no question about a gender without a word for it.
    out = [
        q
        for q in out
        if "for  " not in q.text
        and not q.text.endswith("for ")
        and not any(w + " " + w in q.text for w in q.text.lower().split())
    ]

    # What the catalog cannot serve.
    absent = [b for b in ABSENT_BRANDS if b.lower() not in carried]
    types = sorted({str(i["article_type"]) for i in items if i.get("article_type")})
    for n, brand in enumerate(absent[:per_kind]):
        if _bucket("lacks_brand", (brand,)) != split and len(absent) > 2:
            continue
        text = LACKS_BRAND[n % len(LACKS_BRAND)].format(
            brand=brand, noun=_plural(rng.choice(types)) if types else "shoes", gender="women"
        )
        out.append(Question(text, "lacks_brand", {"brand": (brand,)}, (), False))
    names = " ".join(
        f"{i.get('article_type', '')} {i.get('title', '')}".lower() for i in items
    ).split()
    for garment, words in ABSENT_GARMENTS[:per_kind]:
        if any(w in names for w in words):
            continue  # the catalog has some
        text = rng.choice(LACKS_GARMENT).format(garment=garment)
        out.append(Question(text, "lacks_garment", {}, (), False))
    seasons = _combos(items, ("brand", "season"))
    for (brand, season), _ in sorted(seasons.items())[: per_kind * 3 : 3]:
        if _bucket("lacks_year", (brand, season)) != split:
            continue
        text = LACKS_YEAR[0].format(brand=brand, season=SEASON_WORDS.get(season, season))
        out.append(Question(text, "lacks_year", {"year": ("2031",)}, (), False))

    out += not_sold_questions(items, split, per_kind=per_kind, seed=seed)

    # Each part exists, no item is all of them at once.
    have = set(_combos(items, ("brand", "article_type", "gender")))
    top_brands = [b for b, _ in brands.most_common(8)]
    common_types = [t for t, _ in Counter(str(i["article_type"]) for i in items).most_common(12)]
    misses = [
        (b, t, g)
        for b in top_brands
        for t in common_types
        for g in ("Men", "Women")
        if (b, t, g) not in have and _bucket("no_match", (b, t, g)) == split
    ]
    rng.shuffle(misses)
    for brand, article, gender in misses[:per_kind]:
        text = BRAND_TYPE_GENDER[0].format(
            brand=brand, noun=_plural(article), gender=GENDER_WORDS[gender]
        )
        constraints = {"brand": (brand,), "article_type": (article,), "gender": (gender,)}
        out.append(Question(text, "no_match", constraints, (), False))
    return out


def not_sold_questions(
    rows: Iterable[Mapping[str, Any]], split: Split, *, per_kind: int = 10, seed: int = 0
) -> list[Question]:
    """Up to ``per_kind`` questions of kind ``not_sold`` from ``split``: things none of
    whose words the catalog's titles or types use, each in one phrasing."""
    return [
        Question(text, "not_sold", {}, (), False)
        for _, text in not_sold_things(rows, split, per_kind=per_kind, seed=seed)
    ]


def not_sold_things(
    rows: Iterable[Mapping[str, Any]], split: Split, *, per_kind: int = 10, seed: int = 0
) -> list[tuple[str, str]]:
    """(thing, question) for up to ``per_kind`` of :data:`NOT_SOLD` in ``split`` that
    the catalog's titles and types never name."""
    rng = random.Random(f"{seed}:{split}:not_sold")
    words = set(
        " ".join(f"{r.get('article_type', '')} {r.get('title', '')}" for r in rows).lower().split()
    )
    out = []
    for thing in NOT_SOLD:
        content = [w for w in thing.lower().split() if w not in ("a", "an", "and")]
        if any(w in words or w.rstrip("s") in words for w in content):
            continue
        if _bucket("not_sold", (thing,)) != split:
            continue
        out.append((thing, rng.choice(NOT_SOLD_TEMPLATES).format(thing=thing)))
    rng.shuffle(out)
    return out[:per_kind]
