"""Request understanding: phrasings → retrieval plans, with the catalog's own vocabulary
(the sample catalog's facets when configured, else a fixed excerpt of them)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from services.llm.planner import Missing, Turn, Vocabulary, plan_conversation, plan_turn
from tests.conftest import data_dir

EXCERPT = {
    "brand": ["Puma", "ADIDAS", "ADIDAS Black", "ADIDAS Originals", "Nike", "AND", "Basics",
              "Levi's", "Levis", "Timberland", "Red Tape", "United Colors of Benetton", "Casio",
              "CASIO"],
    "article_type": ["Tshirts", "Shirts", "Casual Shoes", "Sports Shoes", "Jeans", "Watches",
                     "Dresses", "Innerwear Vests", "Jackets", "Trousers", "Handbags", "Kurtas"],
    "category": ["Topwear", "Bottomwear", "Shoes", "Bags", "Watches"],
    "colour": ["Black", "White", "Blue", "Navy Blue", "Red", "Grey", "Green"],
    "gender": ["Men", "Women", "Boys", "Girls", "Unisex"],
    "usage": ["Casual", "Formal", "Sports", "Ethnic"],
    "season": ["Fall", "Winter", "Summer", "Spring"],
    "year": ["2011", "2012", "2015", "2016"],
}  # fmt: skip


@pytest.fixture(scope="module")
def vocabulary() -> Vocabulary:
    root = data_dir()
    if root is None:
        return Vocabulary({name: dict.fromkeys(values, 1) for name, values in EXCERPT.items()})
    rows = [
        json.loads(line)
        for line in (root / "fashion-product-images" / "products.jsonl").open(encoding="utf-8")
    ]
    fields = {"brand": "brand", "article_type": "article_type", "colour": "base_colour",
              "category": "sub_category",
              "gender": "gender", "usage": "usage", "season": "season", "year": "year"}  # fmt: skip
    return Vocabulary(
        {
            name: dict(Counter(str(r[key]) for r in rows if r.get(key)))
            for name, key in fields.items()
        }
    )


def filters(plan) -> dict[str, set[str]]:
    return {k: set(v) for k, v in plan.filters.items()}


CASES = [
    # The FROMAGe-style request, in many phrasings.
    ("Can you recommend clothes based on Puma fall 2011?",
     {"brand": {"Puma"}, "season": {"Fall"}, "year": {"2011"}}),
    ("puma fw11", {"brand": {"Puma"}, "season": {"Fall", "Winter"}, "year": {"2011"}}),
    ("Puma AW11 collection", {"brand": {"Puma"}, "season": {"Fall", "Winter"}, "year": {"2011"}}),
    ("puma autumn-winter 2011",
     {"brand": {"Puma"}, "season": {"Fall", "Winter"}, "year": {"2011"}}),
    ("Puma's autumn 2011 line", {"brand": {"Puma"}, "season": {"Fall"}, "year": {"2011"}}),
    ("something from puma, fall '11", {"brand": {"Puma"}, "season": {"Fall"}, "year": {"2011"}}),
    ("Nike ss12", {"brand": {"Nike"}, "season": {"Spring", "Summer"}, "year": {"2012"}}),
    ("spring/summer 2012 by nike",
     {"brand": {"Nike"}, "season": {"Spring", "Summer"}, "year": {"2012"}}),
    # Article types, synonyms and forms; gender.
    ("puma running shoes for men", {"brand": {"Puma"}, "article_type": {"Sports Shoes"},
                                    "gender": {"Men"}}),
    ("white sneakers", {"colour": {"White"}, "article_type": {"Casual Shoes", "Sports Shoes"}}),
    ("a black tee", {"colour": {"Black"}, "article_type": {"Tshirts"}}),
    ("men's t-shirts", {"gender": {"Men"}, "article_type": {"Tshirts"}}),
    ("tshirt for women", {"gender": {"Women"}, "article_type": {"Tshirts"}}),
    ("navy blue shirt", {"colour": {"Navy Blue"}, "article_type": {"Shirts"}}),
    ("grey jeans for boys", {"colour": {"Grey"}, "article_type": {"Jeans"}, "gender": {"Boys"}}),
    ("formal trousers", {"usage": {"Formal"}, "article_type": {"Trousers"}}),
    ("black leather shoes", {"colour": {"Black"}, "category": {"Shoes"}}),
    ("a nike bag", {"brand": {"Nike"}, "category": {"Bags"}}),
    # A brand with lines and colours in its catalog names: the whole family, colour kept.
    ("adidas black t-shirt", {"brand": {"ADIDAS", "ADIDAS Black", "ADIDAS Originals"},
                              "colour": {"Black"}, "article_type": {"Tshirts"}}),
    ("levis jeans", {"brand": {"Levis"}, "article_type": {"Jeans"}}),
    ("Levi's jeans", {"brand": {"Levi's"}, "article_type": {"Jeans"}}),
    ("united colors of benetton", {"brand": {"United Colors of Benetton"}}),
    # Everyday words that are also catalog brand names are not brands unless capitalised.
    ("shirts and jeans", {"article_type": {"Shirts", "Jeans"}}),
    ("basics for the office", {"usage": {"Formal"}}),
    ("a dress from Basics", {"brand": {"Basics"}, "article_type": {"Dresses"}}),
]  # fmt: skip


@pytest.mark.parametrize(("message", "expected"), CASES, ids=[c[0] for c in CASES])
def test_phrasings_become_the_right_filters(vocabulary: Vocabulary, message: str, expected):
    plan = plan_turn(message, vocabulary)
    got = filters(plan)
    for name, values in expected.items():
        assert values <= got.get(name, set()), (name, got)
    assert set(got) == set(expected), got
    assert plan.missing == () and plan.intent == "search"


MISSING = [
    ("Can you recommend clothes based on Prada fw23?",
     {Missing("brand", "Prada"), Missing("year", "fw23")}),
    ("anything by Gucci", {Missing("brand", "Gucci")}),
    ("swimwear", {Missing("article_type", "swimwear")}),
    ("a bikini for the beach", {Missing("article_type", "bikini")}),
    ("Puma 2031 collection", {Missing("year", "2031")}),
]  # fmt: skip


@pytest.mark.parametrize(("message", "expected"), MISSING, ids=[c[0] for c in MISSING])
def test_what_the_catalog_lacks_is_known_before_generation(vocabulary, message, expected):
    plan = plan_turn(message, vocabulary)
    assert set(plan.missing) == expected
    assert plan.knows_nothing_fits


INTENTS = [
    ("what goes with this jacket?", "complete_outfit"),
    ("shoes to match my jeans", "complete_outfit"),
    ("complete the look", "complete_outfit"),
    ("something similar to this", "similar"),
    ("more like that one", "similar"),
    ("red dress", "search"),
]


@pytest.mark.parametrize(("message", "intent"), INTENTS)
def test_intent(vocabulary, message, intent):
    assert plan_turn(message, vocabulary, photo_item_id="").intent == intent


def test_a_photo_question_is_about_the_photo_and_outfits_name_the_wanted_category(vocabulary):
    photo = plan_turn("find me this", vocabulary, photo_item_id="photo-1")
    assert photo.intent == "photo"
    outfit = plan_turn("what shoes go with this?", vocabulary, photo_item_id="item-9")
    assert outfit.intent == "complete_outfit" and outfit.item_ids == ("item-9",)
    assert outfit.wanted_category == "Shoes"


def test_an_outfit_question_separates_what_is_wanted_from_what_is_had(vocabulary):
    plan = plan_turn("what shoes go with my white shirt?", vocabulary)
    assert plan.intent == "complete_outfit"
    assert filters(plan) == {"category": {"Shoes"}} and plan.wanted_category == "Shoes"
    assert {k: set(v) for k, v in plan.anchor_filters.items()} == {
        "article_type": {"Shirts"},
        "colour": {"White"},
    }
    assert plan.anchor_query
    jeans = plan_turn("sneakers to match my blue jeans", vocabulary)
    assert jeans.wanted_category == "Shoes"
    assert filters(jeans)["article_type"] == {"Casual Shoes", "Sports Shoes"}
    assert {k: set(v) for k, v in jeans.anchor_filters.items()} == {
        "article_type": {"Jeans"},
        "colour": {"Blue"},
    }


def test_follow_ups_inherit_and_change_only_what_they_name(vocabulary):
    shown = Turn("assistant", "here are some", item_ids=("a", "b"), prices=(40.0, 25.0))
    turns = [Turn("user", "puma t-shirts for men"), shown, Turn("user", "in black instead")]
    plan = plan_conversation(turns, vocabulary)
    assert filters(plan) == {
        "brand": {"Puma"},
        "article_type": {"Tshirts"},
        "gender": {"Men"},
        "colour": {"Black"},
    }
    more = plan_conversation([*turns, shown, Turn("user", "show me more")], vocabulary)
    assert more.page == 1 and filters(more) == filters(plan)
    cheaper = plan_conversation([*turns, shown, Turn("user", "cheaper")], vocabulary)
    assert cheaper.cheaper_than == 25.0 and filters(cheaper) == filters(plan)
    other = plan_conversation([*turns, shown, Turn("user", "nike watches")], vocabulary)
    assert filters(other) == {"brand": {"Nike"}, "article_type": {"Watches"}}  # a new request
    with pytest.raises(ValueError, match="end with the user"):
        plan_conversation([Turn("user", "hi"), shown], vocabulary)


def test_the_query_keeps_descriptive_words_and_drops_the_constraints(vocabulary):
    plan = plan_turn("Can you recommend a slim striped shirt from Puma for men?", vocabulary)
    assert plan.query == "slim striped"
    bare = plan_turn("Puma fall 2011", vocabulary)
    assert bare.query  # something to rank by, even when every word was a constraint


@pytest.mark.parametrize(
    "message",
    [
        "What do you have from Puma's fall 2011 collection?",
        "What do you have from Puma’s fall 2011 collection?",
        "Show me Nike's tshirts.",
    ],
)
def test_a_possessive_leaves_no_word_for_the_similarity_floor(vocabulary, message):
    # Found by `eval chat` on the held-out split: "Arrow's" left "s" as an open word, the
    # floor measured "s" and refused a question the catalog serves.
    assert plan_turn(message, vocabulary).open_words == ()
