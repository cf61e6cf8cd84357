"""Questions for chat evaluation and training, from a catalog's real combinations."""

from __future__ import annotations

from styleloop.chat_questions import Question, build_questions

ROWS = [
    {
        "item_id": f"i{n}",
        "title": f"item {n}",
        "brand": ("Puma", "Nike", "Arrow Sport", "Arrow")[n % 4],
        "article_type": ("Tshirts", "Casual Shoes", "Jeans")[n % 3],
        "colour": ("Black", "White")[n % 2],
        "gender": ("Men", "Women")[(n // 2) % 2],
        "season": ("Fall", "Summer")[(n // 3) % 2],
        "year": ("2011", "2012")[(n // 5) % 2],
        "usage": "Casual",
    }
    for n in range(240)
]


def test_the_splits_share_no_combination_and_truths_hold():
    train = build_questions(ROWS, "train", per_kind=50)
    held = build_questions(ROWS, "eval", per_kind=50)
    assert train and held
    key = lambda q: (q.kind, tuple(sorted(q.constraints.items())))  # noqa: E731
    answerable = lambda qs: {key(q) for q in qs if q.answerable}  # noqa: E731
    assert not answerable(train) & answerable(held)
    by_id = {r["item_id"]: r for r in ROWS}
    for q in train + held:
        if q.answerable:
            assert len(q.matching) >= 3 and all(q.meets(by_id[i]) for i in q.matching)
        else:
            assert not q.matching and not any(
                q.meets(r) for r in ROWS if q.kind in ("no_match", "lacks_year")
            )


def test_a_brand_is_met_by_its_family_but_not_by_a_lookalike():
    q = Question("arrow shirts", "brand_type_gender", {"brand": ("Arrow",)})
    assert q.meets({"brand": "Arrow"}) and q.meets({"brand": "Arrow Sport"})
    assert not q.meets({"brand": "Arrowhead"}) and not q.meets({"brand": "Puma"})
