"""The fashion vocabulary: attributes from captions, caption nouns (table-driven)."""

from __future__ import annotations

import pytest

from styleloop.vocabulary import article_noun, describe, extract_attributes


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (
            "a navy blue slim fit striped cotton shirt",
            {
                "article_type": "Shirts",
                "category": "Topwear",
                "colour": "Navy Blue",
                "fit": "slim",
                "material": "cotton",
                "pattern": "striped",
            },
        ),
        ("a black casual t-shirt", {"article_type": "Tshirts", "category": "Topwear",
                                    "colour": "Black"}),
        ("Red floral chiffon DRESS", {"article_type": "Dresses", "category": "Dress",
                                      "colour": "Red", "material": "chiffon",
                                      "pattern": "floral"}),
        ("a red shirt dress", {"article_type": "Dresses", "category": "Dress", "colour": "Red"}),
        ("grey melange hoodie", {"article_type": "Sweatshirts", "category": "Topwear",
                                 "colour": "Grey Melange"}),
        ("off-white linen trousers, relaxed fit", {"article_type": "Trousers",
                                                   "category": "Bottomwear",
                                                   "colour": "Off White", "material": "linen",
                                                   "fit": "relaxed"}),
        ("brown leather chelsea boots", {"article_type": "Boots", "category": "Shoes",
                                         "colour": "Brown", "material": "leather"}),
        ("a gray plaid wool coat", {"article_type": "Coats", "category": "Topwear",
                                    "colour": "Grey", "material": "wool",
                                    "pattern": "checked"}),
        ("white sneakers", {"article_type": "Casual Shoes", "category": "Shoes",
                            "colour": "White"}),
        ("multicolour printed tote", {"article_type": "Handbags", "category": "Bags",
                                      "colour": "Multi", "pattern": "printed"}),
        ("skinny jeans in blue denim", {"article_type": "Jeans", "category": "Bottomwear",
                                        "colour": "Blue", "material": "denim", "fit": "slim"}),
        ("a photo of something", {}),
        ("", {}),
        # Whole words only: "tee" is not in "teeth", "tan" not in "tangerine", "cap" not
        # in "capital"; "shirt" is not inside "t-shirt" or "sweatshirt".
        ("teeth tangerine capital", {}),
        ("sweatshirt", {"article_type": "Sweatshirts", "category": "Topwear"}),
    ],
)  # fmt: skip
def test_extract_attributes(text: str, want: dict[str, str]):
    assert extract_attributes(text) == want


@pytest.mark.parametrize(
    ("article_type", "noun", "plural"),
    [
        ("Tshirts", "t-shirt", False),
        ("Shirts", "shirt", False),
        ("Dresses", "dress", False),
        ("Watches", "watch", False),
        ("Casual Shoes", "casual shoes", True),
        ("Jeans", "jeans", True),
        ("Handbags", "handbag", False),
        ("Dress", "dress", False),
    ],
)
def test_article_noun(article_type: str, noun: str, plural: bool):
    assert article_noun(article_type) == (noun, plural)


@pytest.mark.parametrize(
    ("args", "caption"),
    [
        (("Black", "Casual", "Tshirts"), "a black casual t-shirt"),
        (("Brown", "Formal", "Formal Shoes"), "brown formal shoes"),
        (("White", "Sports", "Sports Shoes"), "white sports shoes"),
        (("Orange", "", "Dresses"), "an orange dress"),
        (("", "", "Watches"), "a watch"),
        (("", "", ""), "a garment"),
        (("None", "NA", "Jeans"), "jeans"),
    ],
)
def test_describe(args: tuple[str, str, str], caption: str):
    assert describe(*args) == caption
