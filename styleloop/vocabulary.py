"""A small fashion vocabulary: structured attributes from free text, and friendly names.

``extract_attributes("a navy blue slim fit striped cotton shirt")`` gives
``{"article_type": "Shirts", "category": "Topwear", "colour": "Navy Blue",
"fit": "slim", "material": "cotton", "pattern": "striped"}``, so items without metadata
(or captioned by a model) still get filterable category and colour. Matching is on whole
words, longest phrase first ("navy blue" before "blue", "t-shirt" before "shirt").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# Article type (the catalog's own names) → (category, phrases that name it).
ARTICLE_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "Tshirts": ("Topwear", ("t-shirt", "t-shirts", "tshirt", "tshirts", "tee", "tees")),
    "Shirts": ("Topwear", ("shirt", "shirts", "blouse", "blouses")),
    "Tops": ("Topwear", ("top", "tops", "crop top", "tank top", "camisole")),
    "Sweatshirts": ("Topwear", ("sweatshirt", "sweatshirts", "hoodie", "hoodies")),
    "Sweaters": ("Topwear", ("sweater", "sweaters", "jumper", "cardigan", "pullover")),
    "Jackets": ("Topwear", ("jacket", "jackets", "blazer", "blazers", "bomber")),
    "Coats": ("Topwear", ("coat", "coats", "trench coat", "parka", "overcoat")),
    "Kurtas": ("Topwear", ("kurta", "kurtas")),
    "Dresses": ("Dress", ("dress", "dresses", "gown", "sundress")),
    "Jeans": ("Bottomwear", ("jeans", "denims")),
    "Trousers": ("Bottomwear", ("trousers", "pants", "chinos", "slacks")),
    "Shorts": ("Bottomwear", ("shorts",)),
    "Skirts": ("Bottomwear", ("skirt", "skirts", "miniskirt")),
    "Leggings": ("Bottomwear", ("leggings", "tights", "jeggings")),
    "Track Pants": ("Bottomwear", ("track pants", "joggers", "sweatpants")),
    "Casual Shoes": ("Shoes", ("sneakers", "sneaker", "trainers", "casual shoes", "loafers")),
    "Sports Shoes": ("Shoes", ("sports shoes", "running shoes", "sport shoes")),
    "Formal Shoes": ("Shoes", ("formal shoes", "oxfords", "brogues", "derby shoes")),
    "Heels": ("Shoes", ("heels", "pumps", "stilettos", "heel")),
    "Flats": ("Shoes", ("flats", "ballet flats", "ballerinas")),
    "Boots": ("Shoes", ("boots", "boot", "ankle boots", "chelsea boots")),
    "Sandals": ("Sandal", ("sandals", "sandal")),
    "Flip Flops": ("Flip Flops", ("flip flops", "flip-flops", "slippers")),
    "Handbags": ("Bags", ("handbag", "handbags", "tote", "purse", "shoulder bag")),
    "Backpacks": ("Bags", ("backpack", "backpacks", "rucksack")),
    "Wallets": ("Wallets", ("wallet", "wallets")),
    "Watches": ("Watches", ("watch", "watches", "wristwatch")),
    "Belts": ("Belts", ("belt", "belts")),
    "Sunglasses": ("Eyewear", ("sunglasses", "shades")),
    "Caps": ("Headwear", ("cap", "caps", "hat", "hats", "beanie")),
    "Scarves": ("Scarves", ("scarf", "scarves", "stole")),
    "Socks": ("Socks", ("socks", "sock")),
    "Earrings": ("Jewellery", ("earrings", "earring")),
    "Necklace and Chains": ("Jewellery", ("necklace", "necklaces", "chain", "pendant")),
}

COLOURS: dict[str, tuple[str, ...]] = {
    "Black": ("black", "jet black"),
    "White": ("white",),
    "Off White": ("off white", "off-white", "ivory", "ecru"),
    "Cream": ("cream",),
    "Beige": ("beige", "camel", "sand", "nude"),
    "Grey": ("grey", "gray", "ash"),
    "Grey Melange": ("grey melange", "heather grey", "heather gray"),
    "Charcoal": ("charcoal",),
    "Silver": ("silver",),
    "Navy Blue": ("navy blue", "navy"),
    "Blue": ("blue", "cobalt", "royal blue", "denim blue"),
    "Turquoise Blue": ("turquoise", "teal", "aqua"),
    "Green": ("green", "emerald", "mint"),
    "Olive": ("olive", "khaki green", "army green"),
    "Khaki": ("khaki",),
    "Red": ("red", "scarlet", "crimson"),
    "Maroon": ("maroon", "burgundy", "wine", "oxblood"),
    "Pink": ("pink", "blush", "fuchsia", "rose"),
    "Purple": ("purple", "violet", "lavender", "lilac", "plum"),
    "Orange": ("orange", "rust", "coral"),
    "Yellow": ("yellow", "mustard", "lemon"),
    "Gold": ("gold", "golden"),
    "Brown": ("brown", "chocolate", "tan", "coffee", "cognac"),
    "Multi": ("multicolour", "multicolor", "multi-colour", "multi-color", "multicoloured"),
}

MATERIALS = (
    "cotton", "denim", "leather", "faux leather", "suede", "wool", "cashmere", "silk",
    "satin", "linen", "polyester", "nylon", "velvet", "corduroy", "chiffon", "lace",
    "jersey", "fleece", "knit", "tweed", "canvas", "rubber", "mesh", "sequin",
)  # fmt: skip

PATTERNS: dict[str, tuple[str, ...]] = {
    "solid": ("solid", "plain"),
    "striped": ("striped", "stripes", "stripe", "pinstripe"),
    "checked": ("checked", "check", "checks", "plaid", "tartan", "gingham"),
    "floral": ("floral", "flower", "flowers", "flowered"),
    "printed": ("printed", "print", "graphic"),
    "polka dot": ("polka dot", "polka dots", "polka-dot", "dotted"),
    "animal print": ("leopard", "zebra", "snake print", "animal print"),
    "camouflage": ("camouflage", "camo"),
    "embroidered": ("embroidered", "embroidery"),
    "colourblocked": ("colourblocked", "colorblock", "colour block", "color block"),
}

FITS: dict[str, tuple[str, ...]] = {
    "slim": ("slim fit", "slim-fit", "skinny", "fitted", "slim"),
    "regular": ("regular fit", "regular-fit", "classic fit"),
    "relaxed": ("relaxed fit", "loose", "oversized", "baggy", "relaxed"),
    "straight": ("straight fit", "straight leg", "straight-leg"),
    "tapered": ("tapered",),
    "cropped": ("cropped",),
}


def _index(table: Mapping[str, Iterable[str]]) -> list[tuple[re.Pattern[str], str]]:
    """Phrase patterns, longest first, each mapped to its canonical value."""
    phrases = [(phrase, value) for value, names in table.items() for phrase in names]
    phrases.sort(key=lambda pv: -len(pv[0]))
    return [
        (re.compile(r"(?<![\w-])" + re.escape(phrase) + r"(?![\w-])"), value)
        for phrase, value in phrases
    ]


_ARTICLES = _index({name: phrases for name, (_, phrases) in ARTICLE_TYPES.items()})
_COLOURS = _index(COLOURS)
_MATERIALS = _index({m: (m,) for m in MATERIALS})
_PATTERNS = _index(PATTERNS)
_FITS = _index(FITS)


def _first(index: list[tuple[re.Pattern[str], str]], text: str) -> tuple[str, int] | None:
    """The match that comes first in the text (longest phrase on a tie)."""
    best: tuple[str, int] | None = None
    for pattern, value in index:
        found = pattern.search(text)
        if found and (best is None or found.start() < best[1]):
            best = (value, found.start())
    return best


def extract_attributes(text: str) -> dict[str, str]:
    """Attributes named in ``text``: article_type and category, colour, material, pattern,
    fit. Only what the text says; nothing is guessed."""
    lowered = " ".join(text.lower().replace("_", " ").split())
    found: dict[str, str] = {}
    # The garment is usually the last noun phrase ("a red shirt dress" is a dress).
    articles = [
        (match.start(), value)
        for pattern, value in _ARTICLES
        for match in pattern.finditer(lowered)
    ]
    if articles:
        article = max(articles)[1]
        found["article_type"] = article
        found["category"] = ARTICLE_TYPES[article][0]
    for key, index in (
        ("colour", _COLOURS),
        ("material", _MATERIALS),
        ("pattern", _PATTERNS),
        ("fit", _FITS),
    ):
        hit = _first(index, lowered)
        if hit:
            found[key] = hit[0]
    return found


# Catalog article types → a noun for captions ("Tshirts" → "t-shirt"); plural nouns name
# things that come in pairs or are plural in English.
_NOUNS = {
    "Tshirts": "t-shirt",
    "Jeans": "jeans",
    "Trousers": "trousers",
    "Shorts": "shorts",
    "Leggings": "leggings",
    "Track Pants": "track pants",
    "Casual Shoes": "casual shoes",
    "Sports Shoes": "sports shoes",
    "Formal Shoes": "formal shoes",
    "Heels": "heels",
    "Flats": "flats",
    "Boots": "boots",
    "Sandals": "sandals",
    "Flip Flops": "flip flops",
    "Sunglasses": "sunglasses",
    "Socks": "socks",
    "Earrings": "earrings",
    "Necklace and Chains": "necklace",
    "Innerwear Vests": "vest",
    "Sports Sandals": "sports sandals",
    "Lounge Pants": "lounge pants",
    "Capris": "capris",
    "Briefs": "briefs",
    "Trunk": "trunks",
    "Boxers": "boxers",
}
_PLURAL_WORDS = ("shoes", "jeans", "trousers", "shorts", "pants", "leggings", "heels", "flats",
                 "boots", "sandals", "flops", "sunglasses", "socks", "earrings", "briefs",
                 "trunks", "boxers", "capris", "tights")  # fmt: skip


def article_noun(article_type: str) -> tuple[str, bool]:
    """A caption noun for a catalog article type, and whether it is plural."""
    noun = _NOUNS.get(article_type)
    if noun is None:
        noun = article_type.lower()
        if noun.endswith("es") and noun[:-2].endswith(("ss", "sh", "ch", "x")):
            noun = noun[:-2]
        elif noun.endswith("s") and not noun.endswith("ss"):
            noun = noun[:-1]
    return noun, noun.split()[-1] in _PLURAL_WORDS


def describe(colour: str = "", usage: str = "", article_type: str = "", extra: str = "") -> str:
    """A short fashion caption: "a black casual t-shirt", "brown formal shoes"."""
    noun, plural = article_noun(article_type) if article_type else ("garment", False)
    words = [
        w.lower()
        for w in (colour, usage)
        if w and w.lower() not in ("none", "na") and w.lower() not in noun.split()
    ]
    phrase = " ".join([*words, noun])
    if not plural:
        phrase = ("an " if phrase[0] in "aeiou" else "a ") + phrase
    return f"{phrase} {extra}".strip()
